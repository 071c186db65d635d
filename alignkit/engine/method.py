"""The base class methods build on (`CompletionMethod`, `PairMethod` for preference pairs) and the settings every
method shares (`MethodArgs`, `ReferenceArgs`, `SamplerArgs`).

The contract itself, every hook with when it runs and what it may not do, is `alignkit.engine.contract.AlignMethod`;
`CompletionMethod` implements it for methods that score completions of prompts: tokenisation (one rule,
`alignkit.data.tokenization`), padded, packed or shared-prompt batches, summed completion log-probs, and access to
the signals the engine computed (`self.signal_values`, `topk_rows`, `batch_with_reference`).
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

from alignkit.data.records import PreferencePair
from alignkit.data.tokenization import PromptCompletionTokenizer
from alignkit.engine.contract import AlignMethod, RolloutContext  # noqa: F401  (RolloutContext: part of the contract methods use)
from alignkit.engine.signals import Samples, SequenceLogps, TokenTopK
from alignkit.modeling.batching import rows_to_batch
from alignkit.modeling.logprobs import batch_token_logprobs, per_sequence_sum, scored_positions


def token_mean_shares(sums: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-example shares [B] of a batch's token-weighted mean: `sums` [B] are per-sequence sums over `tokens` [B]
    tokens each, and the shares' mean is sums.sum() / tokens.sum(), the reduction of transformers' and TRL's NLL
    (every token of the batch weighs the same, so a long sequence counts more than a short one)."""
    return sums * (sums.shape[0] / tokens.sum().clamp(min=1))


class MethodArgs(BaseModel):
    """Settings every method has; a method's `Args` subclasses this (or `ReferenceArgs`)."""

    model_config = ConfigDict(extra="forbid")
    logprob_chunk_size: int | None = Field(256, gt=0, description="sequence chunk over which the LM head runs when "
                                           "computing log-probs ([batch x chunk x vocab] logits at a time); None uses the "
                                           "model's full logits (needed for heads that soft-cap or scale logits)")


class SamplerArgs(BaseModel):
    """Settings of methods that generate through the generation interface (before or during training);
    mixed into a method's `Args`, which may redeclare a field to change its default or description."""

    model_config = ConfigDict(extra="forbid")
    sample_backend: Literal["auto", "hf", "vllm"] = Field("auto", description="generation backend: auto picks vLLM on "
                                                          "GPUs (and on CPU from 20M parameters), HF otherwise")
    sample_engine_args: dict[str, Any] = Field(default_factory=dict, description="extra vLLM engine arguments, e.g. "
                                               "gpu_memory_utilization to share a GPU with training, enforce_eager")
    sample_max_tokens: int = Field(256, ge=1, description="length limit of the sampled responses")
    sample_seed: int = Field(0, description="base seed of the sampler")

    def samples_signal(self, name: str, model: Any, params: Any, role: str = "sampler") -> Samples:
        """A `Samples` signal drawn with these settings' backend."""
        return Samples(name, model, params, self.sample_backend, tuple(sorted(self.sample_engine_args.items())), role=role)

    def policy_sampler(self, recipe: Any, tokenizer: Any) -> Any:
        """A `PolicySampler` for the policy being trained (its initial weights start a vLLM engine)."""
        from alignkit.engine.sampling import PolicySampler
        from alignkit.generation.backends import choose_backend

        backend = self.sample_backend if self.sample_backend != "auto" else choose_backend(recipe.model.path)
        return PolicySampler(recipe.model, tokenizer, recipe.data.template, backend, recipe.data.max_prompt_length,
                             self.sample_engine_args)


class ReferenceArgs(MethodArgs):
    """Settings of methods anchored to a frozen reference policy (DPO, D²O, ...)."""

    reference: Literal["precompute", "model", "adapter"] = Field(
        "precompute", description="how reference log-probs are obtained: precompute (once, cached on disk by content, "
        "reused across runs), model (a frozen copy runs live, sharded like the policy under ZeRO-3), adapter (the LoRA "
        "policy with its adapter disabled)")
    reference_model: str | None = Field(None, description="a separate reference model (default: the policy's initial "
                                        "weights), loaded with the recipe's load settings (dtype, quantization, attention)")

    def reference_signal(self, recipe: Any, keys: Sequence[str], model: str | None = None,
                         options: Sequence[tuple[str, Any]] = ()) -> SequenceLogps:
        """The `SequenceLogps` signal for `keys` under the reference (`model` overrides `reference_model`)."""
        from alignkit.modeling.loading import frozen_settings

        return SequenceLogps(tuple(keys), frozen_settings(recipe.model, model or self.reference_model), self.reference,
                             options=tuple(options))


class CompletionMethod(AlignMethod):
    """Tokenisation, batching, signal access and summed completion log-probs shared by the methods."""

    def __init__(self, args: Any, tokenizer: Any, data: Any) -> None:
        self.args = args
        self.tokens = PromptCompletionTokenizer(tokenizer, data.template, data.max_length, data.max_prompt_length)
        self.pad_id = tokenizer.pad_token_id
        self.packing = data.packing
        self.pack_width: int | None = None  # one packed row; the engine sets the row width for non-varlen attention
        self.share_prompts = getattr(data, "share_prompts", False)
        if self.share_prompts and not self.supports_shared_prompts:
            raise ValueError(f"method {type(self).__module__} reads per-position layouts; data.share_prompts is not supported")
        if self.share_prompts and self.packing:
            raise ValueError("data.share_prompts and data.packing are two layouts; choose one")
        self.signal_values: dict[str, Any] = {}  # filled by the engine: name -> samples, rewards or a TopKStore

    def batch(self, rows: Sequence[tuple[Sequence[int], Sequence[int]]]) -> dict[str, torch.Tensor]:
        """(prompt, completion) rows as a padded or packed batch."""
        return rows_to_batch(rows, self.pad_id, self.packing, self.share_prompts, self.pack_width)

    def batch_with_reference(self, rows: Sequence[tuple[Sequence[int], Sequence[int]]],
                             examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """`batch(rows)` plus every precomputed `ref_<key>` the examples carry (one value per example)."""
        batch = self.batch(rows)
        for key in examples[0]:
            if key.startswith("ref_"):
                batch[key] = torch.tensor([e[key] for e in examples], dtype=torch.float32)
        return batch

    def topk_rows(self, name: str, examples: list[dict[str, Any]], completions: Sequence[str]) -> dict[str, torch.Tensor]:
        """A `TokenTopK` signal for `completions` of each example (all of the first completion, then the next,
        ...: the row order of `collate`), padded in `completion_matrix` layout, keys prefixed `<name>_`."""
        store = self.signal_values[name]
        pairs = [(e["example_index"], c) for c in completions for e in examples]
        return {f"{name}_{k}": v for k, v in store.rows(pairs).items()}

    def teacher_topk(self, recipe: Any, name: str, model: str, completions: Sequence[str], k: int | None,
                     role: str = "teacher", gather_from: str | None = None) -> TokenTopK:
        """A `TokenTopK` signal of another model (a teacher), which must share the policy's tokenizer (checked:
        its per-token ids index the policy's vocabulary)."""
        from alignkit.modeling.loading import check_same_tokenizer, frozen_settings

        settings = frozen_settings(recipe.model, model)
        check_same_tokenizer(self.tokens.tokenizer, settings, role)
        return TokenTopK(name, settings, tuple(completions), k=k, role=role, gather_from=gather_from)

    @staticmethod
    def topk_positions(batch: dict[str, torch.Tensor], mask: torch.Tensor, name: str) -> tuple[torch.Tensor | None, ...]:
        """A `TokenTopK` signal of the batch (from `topk_rows`) laid out like the model's scored positions
        [R, T-1, K], zeros elsewhere: (ids or None in full-vocabulary mode, log-probs, gathered or None).
        The rows of `topk_rows` and of the batch must be the same sequences in the same order."""
        valid = batch[f"{name}_valid"]
        positions = scored_positions(mask, batch)
        out: list[torch.Tensor | None] = []
        for field in ("ids", "logps", "gathered"):
            values = batch.get(f"{name}_{field}")
            if values is None:
                out.append(None)
                continue
            laid = values.new_zeros(*mask.shape, values.shape[-1])
            laid[positions] = values[valid]
            out.append(laid)
        return tuple(out)

    def completion_logps(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed completion log-probs and completion token counts, one per sequence of the batch."""
        logps, mask = batch_token_logprobs(model, batch, self.args.logprob_chunk_size)
        return per_sequence_sum(logps, mask, batch), per_sequence_sum(mask.to(logps.dtype), mask, batch)


class PairMethod(CompletionMethod):
    """Methods on preference pairs that score chosen and rejected in one forward pass (DPO, SimPO, ORPO): the
    examples, the batch (all chosen rows, then all rejected; padded, packed or with shared prompts) and the summed
    completion log-probs with token counts. A subclass adds its signals and its loss."""

    supports_shared_prompts = True
    record_type = PreferencePair

    def build_example(self, record: PreferencePair) -> dict[str, Any]:
        """Token ids of the prompt and of both completions (truncated to fit)."""
        prompt, chosen, rejected = self.tokens.encode(record.prompt, [record.chosen, record.rejected])
        return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected,
                "length": len(prompt) + max(len(chosen), len(rejected))}

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """One batch of 2B sequences: all chosen, then all rejected, plus any precomputed reference values."""
        rows = [(e["prompt_ids"], e["chosen_ids"]) for e in examples] + [(e["prompt_ids"], e["rejected_ids"]) for e in examples]
        return self.batch_with_reference(rows, examples)

    def sequence_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Summed completion log-probs of chosen and rejected, and their token counts."""
        seq, tokens = self.completion_logps(model, batch)
        n = seq.shape[0] // 2
        return {"chosen_logps": seq[:n], "rejected_logps": seq[n:], "chosen_tokens": tokens[:n], "rejected_tokens": tokens[n:]}
