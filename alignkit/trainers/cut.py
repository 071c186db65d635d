"""CUT: Contrastive Unlikelihood Training from natural-language judgments (Xu et al., ACL 2024).

Each judgment triple (instruction, input, output, judgment) becomes:
- Align-P (positive: judgment null, or score >= 7): MLE on the response under the plain template;
- Align-N + Misalign (negative): the same response under the judgment template (MLE) and under the
  plain template, where tokens the judgment "explains" are pushed down by unlikelihood.

Token t is flagged when log p(y_t | judgment context) − log p(y_t | plain context) > log λ (detached;
λ = `threshold` is applied to probabilities, as in the official code). Flagged Misalign tokens get
α·w_t·log(1 − p), with the optional dynamic weight w_t = p_N(t)^γ (detached; γ = 0 is the official
code, γ > 0 the paper's v4); unflagged tokens get MLE.

Defaults follow the official code (github wwxu21/CUT): the plain Misalign context (no fake positive
judgment), `combine="official_half"` ((MLE_N + UL)/2 per negative; `"sum"` is the paper's L1 + L2),
Align-P downsampled to a quarter of the negatives with seed 42, once before training. Differences:
terms are means over each example's response tokens and the loss a mean over examples (the official
code at its micro-batch of 1), log(1 − p) comes from the logits (no 1e-5 floor), and positives get no
all-padding dummy Misalign row. Align-N and Misalign rows run in one forward pass.
"""

from __future__ import annotations

import math
import random
from typing import Any, Literal

import torch
from pydantic import Field

from alignkit.data.records import JudgmentTriple
from alignkit.data.templates import render_prompt
from alignkit.data.tokenization import truncate_prompt
from alignkit.engine.method import CompletionMethod, MethodArgs
from alignkit.modeling.logprobs import batch_token_logprobs, completion_matrix

Combine = Literal["official_half", "sum"]


class Args(MethodArgs):
    """`method_args` for CUT."""

    threshold: float = Field(1.1, gt=0, description="λ: flag a token when p_N/p_M > λ (1.1 online, 1.2 Shepherd)")
    alpha: float = Field(1.0, ge=0, description="unlikelihood weight α (1.0 online, 0.5 Shepherd)")
    gamma: float = Field(0.0, ge=0, description="dynamic weight p_N^γ; 0 reproduces the official code")
    combine: Combine = "official_half"
    positive_ratio: float | None = Field(0.25, gt=0, description="keep at most this many Align-P per negative; None keeps all")
    downsample_seed: int = 42
    misalign_judgment: str | None = Field(None, description="a fake positive judgment for the Misalign context (paper Table 1); None = plain template (official)")


def _log1m_exp(logp: torch.Tensor) -> torch.Tensor:
    """log(1 − e^x) for x < 0, accurate on both sides of −log 2 (used when no logits are at hand)."""
    return torch.where(logp > -math.log(2), torch.log(-torch.expm1(logp)), torch.log1p(-torch.exp(logp)))


def cut_loss(
    logp_aligned: torch.Tensor,
    logp_misaligned: torch.Tensor,
    mask: torch.Tensor,
    negative: torch.Tensor,
    threshold: float = 1.1,
    alpha: float = 1.0,
    gamma: float = 0.0,
    combine: Combine = "official_half",
    log1m_misaligned: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CUT loss over a batch. Tensors are [B, T] over response positions; `negative` is [B] bool.

    `logp_aligned` is the Align-P (positives) or Align-N (negatives) row, `logp_misaligned` the
    Misalign row (ignored for positives). `log1m_misaligned`, log(1 − p) of the Misalign row computed
    from logits, keeps the unlikelihood term finite as p → 1; without it, it is derived from
    `logp_misaligned`. Returns the mean over examples and per-example metrics.
    """
    mask = mask.bool()
    negative = negative.bool()
    tokens = mask.sum(-1).clamp(min=1)
    mean_t = lambda x: (x * mask).sum(-1) / tokens  # noqa: E731  (mean over each example's response tokens)
    mle_aligned = -mean_t(logp_aligned)
    flagged = ((logp_aligned - logp_misaligned).detach() > math.log(threshold)) & mask & negative[:, None]
    if log1m_misaligned is None:
        # Evaluate log(1 − p) only where flagged, so unflagged positions cannot leak inf/NaN gradients.
        log1m_misaligned = _log1m_exp(torch.where(flagged, logp_misaligned, torch.full_like(logp_misaligned, -1.0)))
    weight = alpha * torch.exp(gamma * logp_aligned.detach()) if gamma else torch.full_like(logp_aligned, alpha)
    safe_log1m = torch.where(flagged, log1m_misaligned, torch.zeros_like(log1m_misaligned))
    unlikelihood = -mean_t(torch.where(flagged, weight * safe_log1m, logp_misaligned))
    if combine == "official_half":
        negative_loss = 0.5 * (mle_aligned + unlikelihood)
    elif combine == "sum":
        negative_loss = mle_aligned + unlikelihood
    else:
        raise ValueError(f"combine must be 'official_half' or 'sum', got {combine!r}")
    losses = torch.where(negative, negative_loss, mle_aligned)
    only_negatives = lambda x: torch.where(negative, x.detach(), torch.full_like(x, float("nan")))  # noqa: E731
    metrics = {  # per example; NaN where a metric does not apply (the engine skips it)
        "loss": losses.detach(),
        "mle_aligned": mle_aligned.detach(),
        "negative_fraction": negative.float(),
        "flagged_fraction": only_negatives(flagged.sum(-1) / tokens),
        "unlikelihood": only_negatives(unlikelihood),
    }
    return losses.mean(), metrics


def downsample_positives(records: list[JudgmentTriple], ratio: float | None, seed: int = 42) -> list[JudgmentTriple]:
    """Keep at most int(negatives·ratio) positives, chosen with `seed` (official: once, before training)."""
    positives = [r for r in records if r.is_positive]
    keep_n = int((len(records) - len(positives)) * ratio) if ratio is not None else len(positives)
    if keep_n >= len(positives):
        return records
    kept = {id(r) for r in random.Random(seed).sample(positives, keep_n)}
    return [r for r in records if not r.is_positive or id(r) in kept]


class Method(CompletionMethod):
    """CUT as an engine method: Align-P/Align-N rows, then Misalign rows of the negatives, one pass."""

    record_type = JudgmentTriple

    @staticmethod
    def record_from_judgment(prompt: Any, response: str, positive: bool, judgment: str | None) -> dict[str, Any]:
        """A judged sample (online CUT) as a judgment triple: positive (Align-P) when the judge found nothing
        wrong, else the judgment makes Align-N and Misalign rows."""
        from alignkit.data.templates import as_messages

        instruction = prompt if isinstance(prompt, str) else as_messages(prompt)[-1]["content"]
        return {"instruction": instruction, "input": "", "output": response, "judgment": None if positive else judgment}

    def select_records(self, records: list[JudgmentTriple]) -> list[JudgmentTriple]:
        """Align-P downsampling, once, before training."""
        return downsample_positives(records, self.args.positive_ratio, self.args.downsample_seed)

    def build_example(self, record: JudgmentTriple) -> dict[str, Any]:
        """Prompt ids per context and one response tokenisation, shared by both contexts: the response is
        tokenised jointly with the plain (inference) prompt, so its ids are those the model produces."""
        tokens = self.tokens
        plain_full, boundary, (response,) = tokens.joint(record.prompt, [record.output])
        shift = len(plain_full) - boundary  # prompt tokens the tokenizer merged into the response (usually 0)

        def context(judgment: str | None) -> list[int]:
            ids = tokens.text_ids(render_prompt(record.prompt, tokens.template, tokens.tokenizer, judgment=judgment))
            if shift and ids[len(ids) - shift:] != plain_full[boundary:]:
                raise ValueError("CUT needs both contexts to end with the same template tokens; this template/tokenizer "
                                 "merges the prompt's end into the response differently per context")
            ids = ids[: len(ids) - shift]
            if len(ids) > tokens.max_prompt_length:
                tokens.stats["prompt_truncated"] += 1
            return truncate_prompt(ids, tokens.max_prompt_length)

        plain = context(self.args.misalign_judgment)
        if record.is_positive:
            aligned = context(None)
            # Every example has the same fields (datasets takes its schema from the first one).
            example = {"aligned_prompt_ids": aligned, "misaligned_prompt_ids": [], "negative": False}
        else:
            aligned = context(record.judgment)
            example = {"aligned_prompt_ids": aligned, "misaligned_prompt_ids": plain, "negative": True}
        # One budget for both contexts, so the response is truncated the same way on both sides.
        budget = tokens.max_length - max(len(aligned), len(plain))
        example["response_ids"] = tokens.truncate_completion(response + [tokens.tokenizer.eos_token_id], budget)
        example["length"] = len(aligned) + len(example["response_ids"])
        return example

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [(e["aligned_prompt_ids"], e["response_ids"]) for e in examples]
        rows += [(e["misaligned_prompt_ids"], e["response_ids"]) for e in examples if e["negative"]]
        batch = self.batch(rows)
        batch["negative"] = torch.tensor([e["negative"] for e in examples], dtype=torch.bool)
        return batch

    def sequence_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-position log p (and log(1 − p)) of the aligned rows and, for negatives, the Misalign rows."""
        values, mask = batch_token_logprobs(model, batch, self.args.logprob_chunk_size, log1m=True)
        matrix, valid = completion_matrix(values, mask, batch)
        negative = batch["negative"]
        b = negative.numel()
        misaligned = matrix.new_zeros((b, *matrix.shape[1:]))
        misaligned[negative] = matrix[b:]
        return {"aligned": matrix[:b, :, 0], "misaligned": misaligned[..., 0], "log1m_misaligned": misaligned[..., 1],
                "mask": valid[:b], "negative": negative}

    def loss(self, out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        a = self.args
        return cut_loss(out["aligned"], out["misaligned"], out["mask"], out["negative"], a.threshold, a.alpha, a.gamma,
                        a.combine, log1m_misaligned=out["log1m_misaligned"])
