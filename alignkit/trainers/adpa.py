"""ADPA: Advantage-Guided Distillation for Preference Alignment (Gao et al., ICLR 2025; official code github
gaoshiping/ADPA). ADPA+ is ADPA started from a DCKD student (a staged recipe, `recipes/adpa_plus_*.yaml`).

The DPO teacher's implicit token-level reward gives an advantage for every token a at every state s_t of a
response the *student* generated:

    Â_t[a] = β_adv · (log π_dpo(a | s_t) − log π_ref(a | s_t))            over π_dpo's top-K tokens
    L = w_sft · NLL(y_w) − γ · mean_t Σ_k q̃_k · Ã_k

q̃ is the student's full-vocabulary softmax gathered at those K tokens plus a tail bin (advantage 0 before
clipping), so the gradient flows through the whole distribution at each state ("distribution-level"), not
through the sampled token only. ŷ is generated once, greedily, by the initial student (a `Samples` signal
through the generation interface: vLLM where `auto` picks it), and cached; the dataset's rejected response
is not used. π_dpo's top-K and π_ref's log-probs on ŷ are cached `TokenTopK` signals on exactly ŷ's ids.

Options where the official code and the paper differ (defaults: the official code):
- `advantage_clip`: (1e-8, 1 − 1e-8), the official code's clamp of the advantage target (its loader clamps
  it like a probability: negative advantages become ~0, positive ones are capped at ~1; spec P5), with the
  student bins clamped as in DCKD; `null` is the paper's form (raw advantages, exact student probabilities).
- `ref_fallback`: official = a token in π_dpo's top-K but not in π_ref's top-K gets π_dpo's K-th
  probability as its π_ref probability (floored at 1e-7, spec P4); exact = π_ref's own probability of that
  token (both teachers run on the same ids here, so no fallback is needed).
- `beta_adv` (1.0: the code has no β) and `gamma` (1.6 in the released recipe, 1.5 in the paper).
- π_ref must be a model: `ref_teacher`, by default the DPO teacher's own reference, read from the recipe
  alignkit saved with it (spec P7; the official README computes it with the DCKD student instead). The
  official importance-sampling and KL-penalty options, which use the live policy as their reference, are
  not copied.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from alignkit.data.records import PreferencePair, prompt_key
from alignkit.engine.method import CompletionMethod, MethodArgs, SamplerArgs
from alignkit.generation.base import SamplingParams
from alignkit.modeling.logprobs import batch_hidden_states, chunked_head, per_sequence_mean, scored_positions

FLOOR = 1e-7  # the official merge step floors both teachers' probabilities here
STUDENT_CLAMP = (1e-8, 1 - 1e-8)


class Args(MethodArgs, SamplerArgs):
    """`method_args` for ADPA (defaults: the official `student_adpa.yaml`)."""

    teacher: str = Field(description="π_dpo, the DPO teacher; it must share the student's tokenizer")
    ref_teacher: str | None = Field(None, description="π_ref, the model π_dpo was DPO-trained from (default: read from "
                                    "the recipe alignkit saved with the teacher; required otherwise)")
    k: int = Field(50, gt=0, description="π_dpo's top-K tokens per position that carry an advantage (official 50)")
    sft_weight: float = Field(1.0, ge=0, description="w_sft, NLL on the chosen response (official 1)")
    gamma: float = Field(1.6, ge=0, description="γ, weight of the advantage term (official adpa_weight 1.6; paper 1.5)")
    beta_adv: float = Field(1.0, gt=0, description="β of the advantage β·log(π_dpo/π_ref) (the official code has none: 1)")
    advantage_clip: tuple[float, float] | None = Field((1e-8, 1 - 1e-8), description="clamp of the advantage target: "
                                                       "official (1e-8, 1-1e-8); null = the paper's raw advantages")
    ref_fallback: Literal["official", "exact"] = Field("official", description="π_ref's probability of a token outside "
                                                       "its own top-K: official (π_dpo's K-th probability) or exact")
    sample_max_tokens: int = Field(2048, ge=1, description="length limit of the student's greedy responses ŷ (official 2048)")


def adpa_advantages(dpo_ids: torch.Tensor, dpo_logps: torch.Tensor, ref_logps_at_dpo: torch.Tensor,
                    ref_ids: torch.Tensor | None = None, ref_logps: torch.Tensor | None = None,
                    fallback: str = "official", beta_adv: float = 1.0) -> torch.Tensor:
    """Â [..., K] = β_adv·(log p_dpo − log p_ref) at π_dpo's top-K ids.

    `exact`: p_ref is π_ref's probability at those ids (`ref_logps_at_dpo`). `official`: p_ref is π_ref's
    probability where the id is in π_ref's own top-K (`ref_ids`, `ref_logps`), else max(min_k p_dpo, 1e-7);
    both probabilities are floored at 1e-7, as in the official merge step.
    """
    log_floor = torch.log(torch.tensor(FLOOR))
    log_dpo = dpo_logps.float().clamp(min=log_floor)
    if fallback == "exact":
        log_ref = ref_logps_at_dpo.float()
    elif fallback == "official":
        if ref_ids is None or ref_logps is None:
            raise ValueError("the official fallback needs π_ref's own top-K ids and log-probs")
        member = (dpo_ids[..., :, None] == ref_ids[..., None, :]).any(-1)
        kth = log_dpo.min(-1, keepdim=True).values.clamp(min=log_floor).expand_as(log_dpo)
        log_ref = torch.where(member, ref_logps_at_dpo.float(), kth).clamp(min=log_floor)
    else:
        raise ValueError(f"ref_fallback must be 'official' or 'exact', not {fallback!r}")
    return beta_adv * (log_dpo - log_ref)


def adpa_token_term(student_logits: torch.Tensor, ids: torch.Tensor, advantages: torch.Tensor,
                    advantage_clip: tuple[float, float] | None = (1e-8, 1 - 1e-8)) -> torch.Tensor:
    """Σ_k q̃_k·Ã_k over the K bins plus the tail bin, per position [...].

    q̃ is the student's full-vocabulary softmax gathered at `ids` [..., K] plus the tail 1 − Σ; the tail
    bin's advantage is 0 before clipping. With `advantage_clip` (official): Ã = clamp([Â, 0], lo, hi) and q̃
    clamped to [1e-8, 1 − 1e-8] as in DCKD; with None (the paper): raw advantages, exact q̃.
    """
    q = student_logits.float().softmax(-1).gather(-1, ids)
    q = torch.cat([q, (1 - q.sum(-1, keepdim=True))], -1)
    adv = torch.cat([advantages.float(), advantages.new_zeros(*advantages.shape[:-1], 1).float()], -1)
    if advantage_clip is not None:
        adv = adv.clamp(*advantage_clip)
        q = q.clamp(*STUDENT_CLAMP)
    return (q * adv).sum(-1)


def adpa_loss(nll_chosen: torch.Tensor, term: torch.Tensor, sft_weight: float = 1.0, gamma: float = 1.6) -> torch.Tensor:
    """Per-example ADPA losses [B]: w_sft·NLL(y_w) − γ·(token-mean Σ q̃·Ã over ŷ), both [B]."""
    return sft_weight * nll_chosen - gamma * term


def default_ref_teacher(teacher: str) -> str:
    """The model a DPO teacher trained by alignkit was trained against (its saved recipe's reference)."""
    from alignkit.config import saved_recipe

    saved = saved_recipe(teacher)
    if saved is None:
        raise ValueError(f"method_args.ref_teacher is required: {teacher!r} has no alignkit recipe saved with it, so its "
                         "DPO reference is unknown (name the SFT model it was trained from; spec P7)")
    return saved.get("method_args", {}).get("reference_model") or saved["model"]["path"]


class Method(CompletionMethod):
    """ADPA as an engine method: chosen rows (NLL) and the student's own ŷ rows (advantage term), one forward."""

    record_type = PreferencePair

    def sampling_params(self) -> SamplingParams:
        """ŷ: one greedy response per prompt (official: vLLM, temperature 0, first output only)."""
        return SamplingParams(n=1, temperature=0.0, max_tokens=self.args.sample_max_tokens, seed=self.args.sample_seed)

    def signals(self, recipe: Any) -> list[Any]:
        """ŷ from the initial student; π_dpo's top-K on ŷ; π_ref's top-K on ŷ and its log-probs at π_dpo's ids."""
        from alignkit.modeling.loading import frozen_settings

        a = self.args
        ref_teacher = a.ref_teacher or default_ref_teacher(a.teacher)
        return [
            a.samples_signal("student_samples", frozen_settings(recipe.model), self.sampling_params(), role="student"),
            self.teacher_topk(recipe, "dpo", a.teacher, ("sample",), a.k, role="teacher"),
            self.teacher_topk(recipe, "ref", ref_teacher, ("sample",), a.k, role="ref_teacher", gather_from="dpo"),
        ]

    def build_example(self, record: PreferencePair) -> dict[str, Any]:
        """Token ids of the prompt, the chosen response and the student's ŷ (as generated)."""
        prompt, chosen = self.tokens.encode(record.prompt, [record.chosen])
        sample_prompt = self.tokens.encode_prompt(record.prompt)  # what the sampler was given
        (completion,) = self.signal_values["student_samples"][prompt_key(record.prompt)]
        sample = self.tokens.truncate_completion(completion["token_ids"], self.tokens.max_length - len(sample_prompt))
        return {"prompt_ids": prompt, "chosen_ids": chosen, "sample_prompt_ids": sample_prompt, "sample_ids": sample,
                "length": max(len(prompt) + len(chosen), len(sample_prompt) + len(sample))}

    def sequences(self, example: dict[str, Any]) -> dict[str, tuple[list[int], list[int]]]:
        return {"sample": (example["sample_prompt_ids"], example["sample_ids"])}

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """All chosen rows, then all ŷ rows; the advantages of every ŷ token at π_dpo's top-K."""
        a = self.args
        rows = [(e["prompt_ids"], e["chosen_ids"]) for e in examples] + [(e["sample_prompt_ids"], e["sample_ids"]) for e in examples]
        dpo = self.signal_values["dpo"].rows([(e["example_index"], "sample") for e in examples])
        ref = self.signal_values["ref"].rows([(e["example_index"], "sample") for e in examples])
        advantages = adpa_advantages(dpo["ids"], dpo["logps"], ref["gathered"], ref["ids"], ref["logps"], a.ref_fallback, a.beta_adv)
        return {**self.batch(rows), "adv_ids": dpo["ids"][dpo["valid"]], "adv_values": advantages[dpo["valid"]]}

    def sequence_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-example token-mean NLL of chosen and token-mean Σ q̃·Ã over ŷ."""
        hidden, head, mask = batch_hidden_states(model, batch)
        k = batch["adv_ids"].shape[-1]
        ids = torch.zeros(*mask.shape, k, dtype=torch.long, device=mask.device)
        adv = torch.zeros(*mask.shape, k, device=mask.device)
        flat = scored_positions(mask, batch)  # in sequence order: the chosen rows, then the ŷ rows, as the advantages
        on_sample = batch["sequence_index"][:, 1:][flat] >= (int(batch["sequence_index"].max()) + 1) // 2
        sample_positions = tuple(f[on_sample] for f in flat)
        ids[sample_positions] = batch["adv_ids"]
        adv[sample_positions] = batch["adv_values"]
        clip = self.args.advantage_clip

        def per_chunk(logits: torch.Tensor, labels: torch.Tensor, at: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            nll = -logits.log_softmax(-1).gather(-1, labels[..., None])[..., 0]
            return nll, adpa_token_term(logits, at, a, clip)

        nll, term = chunked_head(hidden, head, per_chunk, batch["input_ids"][:, 1:], ids, adv,
                                 chunk_size=self.args.logprob_chunk_size or hidden.shape[1])
        nll_seq, term_seq = per_sequence_mean(nll, mask, batch), per_sequence_mean(term, mask, batch)
        b = nll_seq.shape[0] // 2
        return {"nll_chosen": nll_seq[:b], "advantage_term": term_seq[b:]}

    def loss(self, out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean ADPA loss and per-example metrics."""
        a = self.args
        losses = adpa_loss(out["nll_chosen"], out["advantage_term"], a.sft_weight, a.gamma)
        return losses.mean(), {"loss": losses.detach(), "nll_chosen": out["nll_chosen"].detach(),
                               "advantage_term": out["advantage_term"].detach()}
