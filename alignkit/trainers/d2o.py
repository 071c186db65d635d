"""D²O: Distributional Dispreference Optimization (Duan et al., arXiv 2403.03419): alignment from
human negatives only, anchored by K responses the reference model generates itself.

    L = −log σ( (β/K)·Σ_i log π_θ(y_i|x)/π_ref(y_i|x)  −  α·log π_θ(y_l|x)/π_ref(y_l|x) )

with y_l the human negative and y_1..y_K ~ π_ref(·|x). As in every experiment of the paper, one frozen
reference (the initial SFT model) is both the sampler and the denominator of both ratios
(π_r⁺ = π_r⁻ = π_ref); `reference_model` names another one (π_r⁻: the sampler and the samples'
denominator), and `negative_reference_model` a separate π_r⁺ for the negative's ratio (the paper's
general form, spec §2.4.3). Log-probs are **sums** over response tokens
(EOS included), the DPO convention; `logp_agg="mean"` divides each by its token count. No official
code exists, so these conventions follow the paper's equations and the DPO practice its authors'
framework (LLaMA-Factory) uses; the sampling settings (temperature, top_p, length) are not reported
and are recipe options.

Samples are a declared `Samples` signal (the offline variant of the paper): drawn before training
through the generation interface (vLLM when `auto` picks it), once per distinct prompt, under the
recipe's template and prompt truncation, and cached on disk by model weights, prompts and sampling
settings, so `alignkit prepare` draws them and `alignkit train` reuses them. The samples' and the
negative's reference log-probs are `SequenceLogps` signals, precomputed and cached like DPO's. The token
ids the sampler produced are scored as they are (no re-tokenisation). PKU-SafeRLHF negatives were
written by `alpaca-7b-reproduced` in its own conversation format: use `data.template: pku` so the
samples are drawn, and everything scored, on that distribution.

A prompt's negative and its K samples run as one batch of K+1 sequences (or one packed row with
`data.packing`); the prompt is recomputed per sequence, no prefix sharing.

Online variant (`resample_every: N`): after `resample_warmup` steps, every N optimizer steps the K
samples of every train prompt are re-drawn from the *current* policy (the engine's `PolicySampler`:
HF generate on the policy itself, or a vLLM engine whose weights are synced from it) and replace the
offline ones; the reference stays frozen and scores the new samples live, so it needs `reference:
model` or `adapter`. Each refresh is logged. Single process and DDP only (not ZeRO-3). The paper's v1
hints at this variant without details; the knobs are alignkit's.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from alignkit.data.records import NegativeOnly, Prompt, prompt_key
from alignkit.engine.method import CompletionMethod, ReferenceArgs, SamplerArgs
from alignkit.generation.base import SamplingParams

log = logging.getLogger("alignkit")


class Args(ReferenceArgs, SamplerArgs):
    """`method_args` for D²O (paper values where the paper gives them)."""

    alpha: float = Field(0.1, ge=0, description="α, weight of the negative's log-ratio (paper: 0.1)")
    beta: float = Field(0.1, ge=0, description="β, weight of the self-samples' mean log-ratio (paper: 0.1)")
    num_samples: int = Field(11, ge=1, description="K self-generated samples per prompt (paper: 11)")
    sample_temperature: float = Field(1.0, ge=0, description="sampling temperature of the K samples (not reported in the paper)")
    sample_top_p: float = Field(1.0, gt=0, le=1, description="nucleus top_p of the K samples (not reported in the paper)")
    sample_max_tokens: int = Field(256, ge=1, description="length limit of the K samples (not reported in the paper)")
    logp_agg: Literal["sum", "mean"] = Field("sum", description="sequence log-prob: sum (DPO convention) or per-token mean")
    negative_reference_model: str | None = Field(None, description="π_r⁺, the denominator of the negative's ratio "
                                                 "(default: the same model as reference_model, as in the paper's experiments)")
    resample_every: int | None = Field(None, ge=1, description="online variant: re-draw the samples from the policy every N steps")
    resample_warmup: int = Field(0, ge=0, description="steps before the first re-draw")

    @model_validator(mode="after")
    def _online_needs_live_reference(self) -> "Args":
        if self.resample_every is not None and self.reference == "precompute":
            raise ValueError("resample_every re-draws the samples during training, so their reference log-probs cannot be "
                             "precomputed: set reference to 'model' or 'adapter'")
        return self


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


class Method(CompletionMethod):
    """D²O as an engine method."""

    supports_shared_prompts = True
    record_type = NegativeOnly

    def __init__(self, args: Any, tokenizer: Any, data: Any) -> None:
        super().__init__(args, tokenizer, data)
        self.prompts: dict[tuple[int, ...], Prompt] = {}  # train prompt ids -> prompt (for re-sampling)
        self.fresh: dict[tuple[int, ...], list[list[int]]] = {}  # prompt ids -> samples drawn from the policy
        self.refreshes = 0
        self.train_prompts: set[str] = set()
        self.sampler: Any = None

    def sampling_params(self, seed_offset: int = 0) -> SamplingParams:
        """How the K samples are drawn."""
        a = self.args
        return SamplingParams(n=a.num_samples, temperature=a.sample_temperature, top_p=a.sample_top_p,
                              max_tokens=a.sample_max_tokens, seed=a.sample_seed + seed_offset)

    def signals(self, recipe: Any) -> list[Any]:
        """K samples per prompt from π_r⁻, and reference log-probs of the samples (π_r⁻) and the negative (π_r⁺)."""
        from alignkit.modeling.loading import frozen_settings

        a = self.args
        sampler = frozen_settings(recipe.model, a.reference_model)
        signals: list[Any] = [a.samples_signal("samples", sampler, self.sampling_params())]
        options = [("logp_agg", a.logp_agg), ("num_samples", a.num_samples)]
        if a.negative_reference_model and a.negative_reference_model != a.reference_model:
            signals += [a.reference_signal(recipe, ("sample_logps",), options=options),
                        a.reference_signal(recipe, ("rejected_logps",), model=a.negative_reference_model, options=options)]
        else:
            signals.append(a.reference_signal(recipe, ("sample_logps", "rejected_logps"), options=options))
        return signals

    def select_records(self, records: list[Any]) -> list[Any]:
        """Every record; remembers the train prompts (the online variant re-samples them)."""
        self.train_prompts = {prompt_key(r.prompt) for r in records}
        return records

    def build_example(self, record: NegativeOnly) -> dict[str, Any]:
        """Token ids of the prompt, the negative and the K samples (as generated; truncated to max_length)."""
        prompt, rejected = self.tokens.encode(record.prompt, [record.rejected])
        completions = self.signal_values["samples"][prompt_key(record.prompt)]
        budget = self.tokens.max_length - len(prompt)
        samples = [self.tokens.truncate_completion(c["token_ids"], budget) for c in completions]
        if prompt_key(record.prompt) in self.train_prompts:
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
        self.sampler = self.args.policy_sampler(recipe, self.tokens.tokenizer)
        return [_make_resampler(self)]

    def resample(self, model: Any, step: int) -> float:
        """Re-draw K samples for every train prompt from the policy `model` at `step`; seconds taken."""
        start = time.perf_counter()
        keys = list(self.prompts)
        results = self.sampler.generate(model, [self.prompts[k] for k in keys], self.sampling_params(step), step)
        for key, result in zip(keys, results):
            self.fresh[key] = [self.tokens.truncate_completion(c.token_ids, self.tokens.max_length - len(key))
                               for c in result.completions]
        self.refreshes += 1
        return time.perf_counter() - start


def _make_resampler(method: Method) -> Any:
    """A TrainerCallback that re-draws the samples every `resample_every` steps after the warm-up."""
    from transformers import TrainerCallback

    a = method.args

    class Resampler(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            step = state.global_step
            if step < a.resample_warmup or step % a.resample_every:
                return
            seconds = method.resample(model, step)
            log.info("D²O: re-drew %d samples for each of %d prompts from the policy at step %d (%.1fs, refresh %d)",
                     a.num_samples, len(method.prompts), step, seconds, method.refreshes)

    return Resampler()
