"""A worked example of a method that needs a teacher's per-token top-k signal (docs/engine.md).

Top-k knowledge distillation on SFT data: loss = NLL(completion) + kd_weight · mean_t KL(teacher ‖ student)
over the teacher's top-k tokens plus one bin for the rest of the vocabulary. It is the whole method: Args,
a pure loss, and Method declaring its record type and signal; the engine does the rest. A recipe names it
by import path: `method: topk_kd_method` (this folder must be importable).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from alignkit.data.records import SFTExample
from alignkit.engine.method import CompletionMethod, MethodArgs
from alignkit.modeling.logprobs import batch_hidden_states, chunked_head, completion_matrix


class Args(MethodArgs):
    """`method_args` of the example."""

    teacher: str = Field(description="the teacher model (a folder or tiny:<size>); it must share the student's tokenizer")
    k: int | None = Field(8, gt=0, description="teacher tokens kept per position; None keeps the whole distribution")
    kd_weight: float = Field(1.0, ge=0, description="weight of the distillation term")


def topk_kl(student_logps: torch.Tensor, student_tail: torch.Tensor, teacher_logps: torch.Tensor,
            teacher_tail: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) over k bins plus a tail bin, per position: [..., k] and [...] log-probs in, [...] out."""
    p = torch.cat([teacher_logps, teacher_tail[..., None]], -1)
    q = torch.cat([student_logps, student_tail[..., None]], -1)
    weight = p.exp()
    return (weight * (p - q)).nan_to_num(0.0).sum(-1)  # a zero-mass bin (exp(-inf) * ...) contributes 0


def kd_loss(nll: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kd_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example loss [B]: token-mean NLL [B] plus kd_weight · token-mean KL ([B, T] with mask [B, T])."""
    kl_mean = (kl * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return nll + kd_weight * kl_mean, kl_mean


class Method(CompletionMethod):
    """The example as an engine method."""

    record_type = SFTExample

    def signals(self, recipe: Any) -> list[Any]:
        # The teacher's top-k at every completion token; `teacher_topk` also checks the shared tokenizer.
        return [self.teacher_topk(recipe, "teacher", self.args.teacher, ("completion",), k=self.args.k)]

    def build_example(self, record: SFTExample) -> dict[str, Any]:
        prompt, completion = self.tokens.encode(record.prompt, [record.completion])
        return {"prompt_ids": prompt, "completion_ids": completion, "length": len(prompt) + len(completion)}

    def sequences(self, example: dict[str, Any]) -> dict[str, tuple[list[int], list[int]]]:
        return {"completion": (example["prompt_ids"], example["completion_ids"])}

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.batch([(e["prompt_ids"], e["completion_ids"]) for e in examples])
        return {**batch, **self.topk_rows("teacher", examples, ["completion"])}

    def sequence_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden, head, mask = batch_hidden_states(model, batch)
        labels = batch["input_ids"][:, 1:]
        ids, _, _ = self.topk_positions(batch, mask, "teacher")
        if ids is None:  # k = None: the whole vocabulary in order
            ids = torch.arange(batch["teacher_logps"].shape[-1], device=mask.device).expand(*mask.shape, -1)

        def per_chunk(logits: torch.Tensor, y: torch.Tensor, at: torch.Tensor) -> tuple[torch.Tensor, ...]:
            logps = logits.log_softmax(-1)
            picked = logps.gather(-1, at)
            tail = torch.log1p(-picked.exp().sum(-1).clamp(max=1 - 1e-6))
            return logps.gather(-1, y[..., None])[..., 0], picked, tail

        token_logps, picked, tail = chunked_head(hidden, head, per_chunk, labels, ids, chunk_size=self.args.logprob_chunk_size or 256)
        nll_tokens, valid = completion_matrix(-token_logps, mask, batch)
        picked_m, _ = completion_matrix(picked, mask, batch)
        tail_m, _ = completion_matrix(tail, mask, batch)
        kl = topk_kl(picked_m, tail_m, batch["teacher_logps"], batch["teacher_tail"])
        return {"nll": (nll_tokens * valid).sum(-1) / valid.sum(-1).clamp(min=1), "kl": kl, "mask": valid}

    def loss(self, out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses, kl = kd_loss(out["nll"], out["kl"], out["mask"], self.args.kd_weight)
        return losses.mean(), {"loss": losses.detach(), "kl": kl.detach(), "nll": out["nll"].detach()}
