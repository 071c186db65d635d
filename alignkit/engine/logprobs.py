"""Per-token log-probabilities of label tokens without materialising [batch, length, vocab] logits.

The model's decoder produces hidden states; the LM head is applied one sequence chunk at a time,
and each chunk keeps only log p(label) = logit[label] - logsumexp(logits). Under autograd each
chunk is checkpointed, so backward recomputes the chunk's logits instead of storing them: peak
memory scales with batch x chunk x vocab, not batch x length x vocab.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def _chunk_logprobs(hidden: torch.Tensor, head: Any, labels: torch.Tensor, log1m: bool = False) -> torch.Tensor:
    # `head` is a module or a weight; calling the module lets DeepSpeed ZeRO-3 gather its parameters.
    logits = (head(hidden) if isinstance(head, torch.nn.Module) else F.linear(hidden, head)).float()
    return _label_logprobs(logits, labels, log1m)


def _label_logprobs(logits: torch.Tensor, labels: torch.Tensor, log1m: bool) -> torch.Tensor:
    """log p(label) [...], or stacked [..., 2] with log(1 − p(label)) computed from the logits.

    log(1 − p_y) = logsumexp(z_{k≠y}) − logsumexp(z) stays finite as p_y → 1, where log(−expm1(log p_y))
    fails once log p_y rounds to 0 (CUT's unlikelihood term; spec §1.9 pitfall 1).
    """
    norm = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    if not log1m:
        return picked - norm
    others = torch.logsumexp(logits.scatter(-1, labels.unsqueeze(-1), float("-inf")), dim=-1)
    return torch.stack([picked - norm, others - norm], dim=-1)


def token_logprobs_from_hidden(
    hidden: torch.Tensor,
    head: torch.nn.Module | torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int = 256,
    log1m: bool = False,
) -> torch.Tensor:
    """log p(labels) for hidden states [B, T, H] under an LM head (module, or weight [V, H]); [B, T] fp32.

    With `log1m=True` returns [B, T, 2]: log p and log(1 − p), both from the logits.

    `labels` must already be aligned with `hidden` (labels[:, t] is the token predicted at t) and hold
    valid ids everywhere (mask afterwards). Chunks over T are checkpointed when grads are needed.
    """
    pieces = []
    head_params = list(head.parameters()) if isinstance(head, torch.nn.Module) else [head]
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head_params))
    for start in range(0, hidden.shape[1], chunk_size):
        h, y = hidden[:, start : start + chunk_size], labels[:, start : start + chunk_size]
        if needs_grad:
            pieces.append(checkpoint(_chunk_logprobs, h, head, y, log1m, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(h, head, y, log1m))
    return torch.cat(pieces, dim=1)


def token_logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor, log1m: bool = False) -> torch.Tensor:
    """log p(labels) (and log(1 − p) with `log1m`) from full logits [B, T, V] (tests and odd models)."""
    return _label_logprobs(logits.float(), labels, log1m)


def _split_head(model: Any) -> tuple[Any, torch.nn.Module]:
    """The decoder trunk and the LM head of a (possibly PEFT-wrapped) causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    trunk = getattr(base, base.base_model_prefix, None)
    if head is None or trunk is None:
        raise TypeError(f"{type(base).__name__} has no separable decoder/LM head; use chunk_size=None")
    return trunk, head


def sequence_token_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    loss_mask: torch.Tensor,
    chunk_size: int | None = 256,
    position_ids: torch.Tensor | None = None,
    log1m: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs [B, T-1] of input_ids[:, 1:] and the matching mask (loss_mask[:, 1:]).

    `loss_mask` marks the tokens that are scored (the completion). With `chunk_size=None` the model's
    own logits are used (needed for models whose head applies soft-capping or scaling). With
    `log1m=True` the values are [B, T-1, 2]: log p and a stable log(1 − p).
    """
    labels = input_ids[:, 1:]
    mask = loss_mask[:, 1:].bool()
    kwargs: dict[str, Any] = {"attention_mask": attention_mask}
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    if chunk_size is None:
        logits = model(input_ids=input_ids, use_cache=False, **kwargs).logits[:, :-1]
        logps = token_logprobs_from_logits(logits, labels, log1m)
    else:
        trunk, head = _split_head(model)
        if getattr(getattr(model, "config", None), "final_logit_softcapping", None):
            raise ValueError("this model soft-caps its logits; use chunk_size=None")
        hidden = trunk(input_ids=input_ids, use_cache=False, **kwargs).last_hidden_state[:, :-1]
        logps = token_logprobs_from_hidden(hidden, head, labels, chunk_size, log1m)
    return logps.masked_fill(~(mask[..., None] if log1m else mask), 0.0), mask


def batch_token_logprobs(model: Any, batch: dict[str, torch.Tensor], chunk_size: int | None = 256, log1m: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """`sequence_token_logprobs` for a padded or packed batch from `engine.batching`."""
    return sequence_token_logprobs(
        model, batch["input_ids"], batch.get("attention_mask"), batch["loss_mask"], chunk_size, batch.get("position_ids"), log1m
    )


def per_sequence_sum(values: torch.Tensor, mask: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum masked per-token values [R, T-1] into one value per sequence, for padded or packed batches."""
    index = batch["sequence_index"][:, 1:]
    count = int(batch["sequence_index"].max()) + 1
    out = torch.zeros(count, dtype=values.dtype, device=values.device)
    return out.index_add(0, index[mask], values[mask])


def completion_matrix(values: torch.Tensor, mask: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scored tokens laid out as [sequences, max completion length (, ...)], with a validity mask.

    Row s holds sequence s's completion tokens in order, for padded or packed batches; two sequences
    with the same completion line up by position.
    """
    seq = batch["sequence_index"][:, 1:][mask]
    picked = values[mask]
    count = int(batch["sequence_index"].max()) + 1
    lengths = torch.bincount(seq, minlength=count)
    starts = torch.cumsum(lengths, 0) - lengths
    pos = torch.arange(seq.numel(), device=seq.device) - starts[seq]
    width = int(lengths.max()) if seq.numel() else 0
    out = values.new_zeros((count, width, *values.shape[mask.ndim:]))
    valid = torch.zeros((count, width), dtype=torch.bool, device=values.device)
    out[seq, pos] = picked
    valid[seq, pos] = True
    return out, valid
