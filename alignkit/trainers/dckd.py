"""DCKD: Dual-Constrained Knowledge Distillation (Gao et al., "Advantage-Guided Distillation for Preference
Alignment in Small Language Models", ICLR 2025; official code github gaoshiping/ADPA).

A small student learns from an aligned (DPO) teacher on preference pairs:

    L = w_sft · NLL(y_w) + w_c · FKL(π_dpo ‖ π_θ; y_w) + w_r · FKL(π_dpo ‖ π_θ; y_l)

FKL is the forward KL per response token over the teacher's top-K tokens plus one "tail" bin for the
rest of the vocabulary (`dckd_token_kl`), averaged over the response's tokens. Defaults are the official
code's (`student_dckd.yaml`: w_sft 1, w_c = w_r = 0.1, K = 50) and its clamps: both (K+1)-bin vectors
clamped to [1e-8, 1 − 1e-8], the student's also floored at 1e-7. `clamp: false` gives the exact KL, and
`k: null` the KL over the full vocabulary (small vocabularies).

The teacher's top-K is the engine's cached per-token signal, computed once (`alignkit prepare`) on the
*same token ids* the student trains on, including the EOS the student learns: every response position has
teacher values. Differences from the official code, all deliberate: the official precompute has no entry for
the appended EOS or truncated tails, which then add a constant to the mean (spec P3); the student's
softmax is fp32 here (bf16 there, P9), computed one sequence chunk at a time, never [B × T × V] at
once; terms are per-example token means averaged over examples (the official token mean over the
micro-batch, at its micro-batch size of 1). Teacher and student must share a tokenizer (checked, P1);
top-K ids beyond the student's vocabulary fall into the tail bin.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from alignkit.data.records import PreferencePair
from alignkit.engine.method import CompletionMethod, MethodArgs
from alignkit.modeling.logprobs import batch_hidden_states, chunked_head, per_sequence_mean

CLAMP = (1e-8, 1 - 1e-8)
STUDENT_FLOOR = 1e-7


class Args(MethodArgs):
    """`method_args` for DCKD (defaults: the official `student_dckd.yaml`)."""

    teacher: str = Field(description="π_dpo, the aligned (DPO) teacher; it must share the student's tokenizer")
    k: int | None = Field(50, gt=0, description="teacher tokens kept per position (official 50); null = the full "
                          "vocabulary (small vocabularies only)")
    sft_weight: float = Field(1.0, ge=0, description="w_sft, NLL on the chosen response (official sft_on_chosen 1)")
    chosen_weight: float = Field(0.1, ge=0, description="w_c, KL on the chosen response (official chosen_distil_weight 0.1)")
    rejected_weight: float = Field(0.1, ge=0, description="w_r, KL on the rejected response (official rejected_distil_weight 0.1)")
    clamp: bool = Field(True, description="the official clamps of both (K+1)-bin vectors; false = the exact KL")


def dckd_token_kl(student_logits: torch.Tensor, teacher_ids: torch.Tensor | None, teacher_logps: torch.Tensor,
                  clamp: bool = True) -> torch.Tensor:
    """Forward KL(teacher ‖ student) at N positions over the teacher's K bins plus a tail bin; [N] (or [..., ]).

    `student_logits` [..., V]; `teacher_ids` [..., K] (None: the teacher's whole vocabulary in order) and
    `teacher_logps` [..., K]. The student's probabilities come from its full-vocabulary softmax, gathered at
    the ids, with the tail bin 1 − Σ. Ids ≥ V (a teacher vocabulary larger than the student's) count in the
    tail. `clamp`: the official clamps (both vectors to [1e-8, 1 − 1e-8], the student's floored at 1e-7);
    otherwise the exact KL, with 0·log 0 = 0.
    """
    log_q_all = student_logits.float().log_softmax(-1)
    vocab = log_q_all.shape[-1]
    if teacher_ids is None:
        teacher_ids = torch.arange(teacher_logps.shape[-1], device=log_q_all.device).expand(teacher_logps.shape)
    inside = teacher_ids < vocab
    log_q = log_q_all.gather(-1, teacher_ids.clamp(max=vocab - 1))
    log_p = teacher_logps.float().masked_fill(~inside, float("-inf"))
    p = log_p.exp()
    q = log_q.exp().masked_fill(~inside, 0.0)
    p_tail = (1 - p.sum(-1)).clamp(min=0)
    if clamp:
        tau = torch.cat([p, p_tail[..., None]], -1).clamp(*CLAMP)
        q_bins = torch.cat([q, (1 - q.sum(-1))[..., None]], -1).clamp(*CLAMP).clamp(min=STUDENT_FLOOR)
        return (tau * (tau.log() - q_bins.log())).sum(-1)
    # exact: the student's tail from its logits (accurate when tiny), zero-mass bins contribute 0; when the ids
    # cover the whole vocabulary there is no tail (what 1 − Σp leaves is rounding)
    outside = torch.zeros_like(log_q_all, dtype=torch.bool).scatter(-1, teacher_ids.clamp(max=vocab - 1), inside)
    log_q_tail = torch.logsumexp(log_q_all.masked_fill(outside, float("-inf")), dim=-1)
    p_tail = torch.where(outside.all(-1), torch.zeros_like(p_tail), p_tail)
    body = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)
    tail = torch.where(p_tail > 0, p_tail * (p_tail.clamp(min=1e-30).log() - log_q_tail), torch.zeros_like(p_tail))
    return body + tail


def dckd_loss(nll_chosen: torch.Tensor, kl_chosen: torch.Tensor, kl_rejected: torch.Tensor, sft_weight: float = 1.0,
              chosen_weight: float = 0.1, rejected_weight: float = 0.1) -> torch.Tensor:
    """Per-example DCKD losses [B] from per-example token-mean NLL and KLs [B]."""
    return sft_weight * nll_chosen + chosen_weight * kl_chosen + rejected_weight * kl_rejected


class Method(CompletionMethod):
    """DCKD as an engine method: chosen and rejected rows in one forward, the teacher's top-K from the cache."""

    record_type = PreferencePair

    def signals(self, recipe: Any) -> list[Any]:
        """The DPO teacher's top-K on every chosen and rejected token."""
        return [self.teacher_topk(recipe, "teacher", self.args.teacher, ("chosen", "rejected"), self.args.k)]

    def build_example(self, record: PreferencePair) -> dict[str, Any]:
        """Token ids of the prompt and both completions (truncated to fit)."""
        prompt, chosen, rejected = self.tokens.encode(record.prompt, [record.chosen, record.rejected])
        return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected,
                "length": len(prompt) + max(len(chosen), len(rejected))}

    def sequences(self, example: dict[str, Any]) -> dict[str, tuple[list[int], list[int]]]:
        return {"chosen": (example["prompt_ids"], example["chosen_ids"]),
                "rejected": (example["prompt_ids"], example["rejected_ids"])}

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """All chosen rows, then all rejected rows, with the teacher's top-K of each token."""
        rows = [(e["prompt_ids"], e["chosen_ids"]) for e in examples] + [(e["prompt_ids"], e["rejected_ids"]) for e in examples]
        return {**self.batch(rows), **self.topk_rows("teacher", examples, ["chosen", "rejected"])}

    def sequence_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-example token-mean NLL of chosen and KL to the teacher on chosen and rejected."""
        hidden, head, mask = batch_hidden_states(model, batch)
        ids, logps, _ = self.topk_positions(batch, mask, "teacher")
        clamp = self.args.clamp

        def per_chunk(logits: torch.Tensor, labels: torch.Tensor, at: torch.Tensor | None, tl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            nll = -logits.log_softmax(-1).gather(-1, labels[..., None])[..., 0]
            return nll, dckd_token_kl(logits, at, tl, clamp)

        extra = (ids, logps) if ids is not None else (logps,)
        fn = per_chunk if ids is not None else (lambda z, y, tl: per_chunk(z, y, None, tl))
        nll, kl = chunked_head(hidden, head, fn, batch["input_ids"][:, 1:], *extra,
                               chunk_size=self.args.logprob_chunk_size or hidden.shape[1])
        nll_seq, kl_seq = per_sequence_mean(nll, mask, batch), per_sequence_mean(kl, mask, batch)
        b = nll_seq.shape[0] // 2
        return {"nll_chosen": nll_seq[:b], "kl_chosen": kl_seq[:b], "kl_rejected": kl_seq[b:]}

    def loss(self, out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean DCKD loss and per-example metrics."""
        a = self.args
        losses = dckd_loss(out["nll_chosen"], out["kl_chosen"], out["kl_rejected"], a.sft_weight, a.chosen_weight, a.rejected_weight)
        metrics = {"loss": losses.detach(), "nll_chosen": out["nll_chosen"].detach(), "kl_chosen": out["kl_chosen"].detach(),
                   "kl_rejected": out["kl_rejected"].detach()}
        return losses.mean(), metrics
