"""D²O: Distributional Dispreference Optimization (Duan et al., arXiv 2403.03419): alignment from
human negatives only, anchored by K responses the reference model generates itself.

    L = −log σ( (β/K)·Σ_i log π_θ(y_i|x)/π_ref(y_i|x)  −  α·log π_θ(y_l|x)/π_ref(y_l|x) )

with y_l the human negative and y_1..y_K ~ π_ref(·|x). As in every experiment of the paper, one frozen
reference (the initial SFT model) is both the sampler and the denominator of both ratios
(π_r⁺ = π_r⁻ = π_ref); `reference_model` names another one. Log-probs are **sums** over response tokens
(EOS included), the DPO convention; `logp_agg="mean"` divides each by its token count. No official
code exists, so these conventions follow the paper's equations and the DPO practice its authors'
framework (LLaMA-Factory) uses; the sampling settings (temperature, top_p, length) are not reported
and are recipe options.

Samples are drawn before training (`augment_records`: the offline variant of the paper) through the
generation interface (vLLM when `auto` picks it), once per distinct prompt, and cached on disk by
model weights, prompts and sampling settings, so `alignkit prepare` draws them and `alignkit train`
reuses them. The samples' and the negative's reference log-probs are then precomputed and cached
like DPO's. The token ids the sampler produced are scored as they are (no re-tokenisation).

A prompt's negative and its K samples run as one batch of K+1 sequences (or one packed row with
`data.packing`); the prompt is recomputed per sequence, no prefix sharing.

Online variant (`resample_every: N`): after `resample_warmup` steps, every N optimizer steps the K
samples of every train prompt are re-drawn from the *current* policy (HF generate on the policy
itself, or a vLLM engine whose weights are synced from it) and replace the offline ones; the reference
stays frozen and scores the new samples live, so it needs `reference: model` or `adapter`. Each
refresh is logged. Single process and DDP only (not ZeRO-3). The paper's v1 hints at this variant
without details; the knobs are alignkit's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from alignkit.data.records import NegativeOnly, Prompt
from alignkit.engine.method import CompletionMethod


class Args(BaseModel):
    """`method_args` for D²O."""

    model_config = ConfigDict(extra="forbid")
    alpha: float = Field(0.1, ge=0, description="weight of the negative's log-ratio (paper: 0.1)")
    beta: float = Field(0.1, ge=0, description="weight of the self-samples' mean log-ratio (paper: 0.1)")
    num_samples: int = Field(11, ge=1, description="K self-generated samples per prompt (paper: 11)")
    sample_temperature: float = Field(1.0, ge=0, description="not reported in the paper")
    sample_top_p: float = Field(1.0, gt=0, le=1, description="not reported in the paper")
    sample_max_tokens: int = Field(256, ge=1, description="not reported in the paper")
    sample_seed: int = 0
    sample_backend: Literal["auto", "hf", "vllm"] = "auto"
    sample_engine_args: dict[str, Any] = Field(default_factory=dict, description="extra vLLM engine arguments, e.g. "
                                               "gpu_memory_utilization to share a GPU with training, enforce_eager")
    logp_agg: Literal["sum", "mean"] = Field("sum", description="sequence log-prob: sum (DPO convention) or per-token mean")
    reference: Literal["precompute", "model", "adapter"] = "precompute"
    reference_model: str | None = Field(None, description="the frozen reference and sampler (default: the policy's initial weights)")
    resample_every: int | None = Field(None, ge=1, description="online variant: re-draw the samples from the policy every N steps")
    resample_warmup: int = Field(0, ge=0, description="steps before the first re-draw")
    logprob_chunk_size: int | None = Field(256, gt=0)

    @model_validator(mode="after")
    def _online_needs_live_reference(self) -> "Args":
        if self.resample_every is not None and self.reference == "precompute":
            raise ValueError("resample_every re-draws the samples during training, so their reference log-probs cannot be "
                             "precomputed: set reference to 'model' or 'adapter'")
        return self


log = logging.getLogger("alignkit")


def d2o_loss(
    policy_sample_logps: torch.Tensor,
    ref_sample_logps: torch.Tensor,
    policy_negative_logps: torch.Tensor,
    ref_negative_logps: torch.Tensor,
    alpha: float = 0.1,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-example D²O losses [B] from sample log-probs [B, K] and negative log-probs [B].

    Metrics (per example, detached): `rewards/samples` = (β/K)·Σ_i log-ratio(y_i), `rewards/negative`
    = α·log-ratio(y_l), `rewards/margins` = their difference (the σ argument), `rewards/accuracies` =
    1 where the margin is positive.
    """
    if policy_sample_logps.dim() != 2 or policy_sample_logps.shape != ref_sample_logps.shape:
        raise ValueError(f"sample log-probs must both be [B, K], got {tuple(policy_sample_logps.shape)} and {tuple(ref_sample_logps.shape)}")
    k = policy_sample_logps.shape[1]
    sample_term = (beta / k) * (policy_sample_logps - ref_sample_logps).sum(dim=1)
    negative_term = alpha * (policy_negative_logps - ref_negative_logps)
    margin = sample_term - negative_term
    losses = -F.logsigmoid(margin)
    metrics = {"rewards/samples": sample_term.detach(), "rewards/negative": negative_term.detach(),
               "rewards/margins": margin.detach(), "rewards/accuracies": (margin > 0).float().detach()}
    return losses, metrics


@dataclass(frozen=True)
class SampledNegative:
    """A negatives-only record with the reference model's K samples (token ids, as generated)."""

    prompt: Prompt
    rejected: str
    sample_ids: tuple[tuple[int, ...], ...]


class Method(CompletionMethod):
    """D²O as an engine method."""

    record_type = NegativeOnly
    reference_keys = ("sample_logps", "rejected_logps")

    def __init__(self, args: Any, tokenizer: Any, data: Any) -> None:
        super().__init__(args, tokenizer, data)
        self.prompts: dict[tuple[int, ...], Prompt] = {}  # train/eval prompt ids -> prompt (for re-sampling)
        self.fresh: dict[tuple[int, ...], list[list[int]]] = {}  # prompt ids -> samples drawn from the policy
        self.refreshes = 0
        self.train_prompts: set[str] = set()

    def augment_records(self, records: list[Any], recipe: Any, split: str) -> list[SampledNegative]:
        """Draw K samples per distinct prompt from the reference model (cached; the local main process
        samples while the others wait, then all read the cache)."""
        from alignkit.engine.run import distributed_state
        from alignkit.generation.backends import choose_backend
        from alignkit.generation.base import SamplingParams
        from alignkit.generation.rollouts import rollouts

        a = self.args
        prompts: dict[str, Prompt] = {}
        for r in records:
            prompts.setdefault(_prompt_key(r.prompt), r.prompt)
        if split == "train":
            self.train_prompts = set(prompts)
        rows = [{"prompt": p} for p in prompts.values()]
        params = SamplingParams(n=a.num_samples, temperature=a.sample_temperature, top_p=a.sample_top_p,
                                max_tokens=a.sample_max_tokens, seed=a.sample_seed)
        sampler = a.reference_model or recipe.model.path
        backend = a.sample_backend if a.sample_backend != "auto" else choose_backend(sampler)
        options = a.sample_engine_args if backend == "vllm" else {}
        state = distributed_state()
        sampled = rollouts(sampler, rows, params, backend, recipe.data.template, **options) if state.is_local_main_process else None
        state.wait_for_everyone()
        if sampled is None:  # the other processes read what the main process cached
            sampled = rollouts(sampler, rows, params, backend, recipe.data.template, **options)
        by_prompt = {_prompt_key(row["prompt"]): tuple(tuple(c["token_ids"]) for c in row["completions"]) for row in sampled}
        return [SampledNegative(r.prompt, r.rejected, by_prompt[_prompt_key(r.prompt)]) for r in records]

    def build_example(self, record: SampledNegative) -> dict[str, Any]:
        """Token ids of the prompt, the negative and the K samples (truncated to max_length)."""
        prompt, rejected = self.tokens.encode(record.prompt, [record.rejected])
        budget = self.tokens.max_length - len(prompt)
        samples = [list(s[:budget]) for s in record.sample_ids]
        self.prompts.setdefault(tuple(prompt), record.prompt)
        return {"prompt_ids": prompt, "rejected_ids": rejected, "sample_ids": samples,
                "length": (len(prompt) + max(len(rejected), *(len(s) for s in samples))) * (len(samples) + 1)}

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """One batch of B·(K+1) sequences: B negatives, then each example's K samples."""
        rows = [(e["prompt_ids"], e["rejected_ids"]) for e in examples]
        rows += [(e["prompt_ids"], s) for e in examples for s in self.fresh.get(tuple(e["prompt_ids"]), e["sample_ids"])]
        return self.batch_with_reference(rows, examples)

    def sequence_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Sequence log-probs of the negatives [B] and the samples [B, K] (sum, or mean per token)."""
        seq, tokens = self.completion_logps(model, batch)
        if self.args.logp_agg == "mean":
            seq = seq / tokens.clamp(min=1)
        k = self.args.num_samples
        b = seq.shape[0] // (k + 1)
        if b * (k + 1) != seq.shape[0]:
            raise ValueError(f"a D²O batch holds B·(K+1) sequences; got {seq.shape[0]} for K={k}")
        return {"rejected_logps": seq[:b], "sample_logps": seq[b:].view(b, k), "sample_tokens": tokens[b:].view(b, k)}

    def loss(self, out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean D²O loss and per-example metrics."""
        losses, metrics = d2o_loss(out["sample_logps"], ref["sample_logps"], out["rejected_logps"], ref["rejected_logps"],
                                   alpha=self.args.alpha, beta=self.args.beta)
        metrics["logps/rejected"] = out["rejected_logps"].detach()
        metrics["logps/samples"] = out["sample_logps"].detach().mean(dim=1)
        metrics["loss"] = losses.detach()
        return losses.mean(), metrics


    # -- online variant ------------------------------------------------------------------------------

    def training_callbacks(self, recipe: Any) -> list[Any]:
        if self.args.resample_every is None:
            return []
        if recipe.training.deepspeed:
            raise ValueError("D²O's online variant (resample_every) runs single-process or DDP, not under DeepSpeed")
        return [_make_resampler(self, recipe)]

    def resample(self, model: Any, step: int, generator: Any = None) -> float:
        """Re-draw K samples for every train prompt from `model` (or a weight-synced `generator`); seconds taken."""
        from alignkit.generation.base import SamplingParams
        from alignkit.generation.hf import HFGenerator

        a = self.args
        start = time.perf_counter()
        keys = [k for k, p in self.prompts.items() if _prompt_key(p) in self.train_prompts]
        params = SamplingParams(n=a.num_samples, temperature=a.sample_temperature, top_p=a.sample_top_p,
                                max_tokens=a.sample_max_tokens, seed=a.sample_seed + step)
        was_training = model.training
        model.eval()
        try:
            if generator is not None:
                generator.sync_weights(model)
            else:
                generator = HFGenerator(model, self.tokens.tokenizer, self.tokens.template)
            results = generator.generate([self.prompts[k] for k in keys], params)
        finally:
            model.train(was_training)
        for key, result in zip(keys, results):
            budget = self.tokens.max_length - len(key)
            self.fresh[key] = [c.token_ids[:budget] for c in result.completions]
        self.refreshes += 1
        return time.perf_counter() - start


def _make_resampler(method: Method, recipe: Any) -> Any:
    """A TrainerCallback that re-draws the samples every `resample_every` steps after the warm-up."""
    from transformers import TrainerCallback

    from alignkit.generation.backends import choose_backend

    a = method.args
    backend = a.sample_backend if a.sample_backend != "auto" else choose_backend(a.reference_model or recipe.model.path)

    class Resampler(TrainerCallback):
        engine = None

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            step = state.global_step
            if step < a.resample_warmup or step % a.resample_every:
                return
            if backend == "vllm" and self.engine is None:
                from alignkit.generation.vllm_engine import VLLMGenerator

                self.engine = VLLMGenerator(a.reference_model or recipe.model.path, template=recipe.data.template,
                                            **a.sample_engine_args)
            seconds = method.resample(model, step, self.engine)
            log.info("D²O: re-drew %d samples for each of %d prompts from the policy at step %d (%.1fs, refresh %d)",
                     a.num_samples, len(method.train_prompts), step, seconds, method.refreshes)

    return Resampler()


def _prompt_key(prompt: Prompt) -> str:
    import json

    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
