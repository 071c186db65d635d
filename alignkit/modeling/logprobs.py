"""Per-token quantities of a causal LM without materialising [batch, length, vocab] logits.

The model runs its own forward, through whatever wraps it (DDP, DeepSpeed, accelerate's autocast),
with its LM head swapped for an identity for that one call (`hidden_states`): the "logits" it returns
are the final hidden states, and DDP still sees a forward of the wrapped module, so its gradient
all-reduce stays correct. The real head is then applied one sequence chunk at a time
(`chunked_head`) and each chunk keeps only what a caller needs:

- `token_logprobs_*`: log p(label) = logit[label] − logsumexp(logits) (and a stable log(1 − p));
- `token_topk_from_hidden`: the k most likely tokens' log-probs and ids plus the log of the remaining
  mass (a frozen teacher's distillation signal), or the whole log-distribution with `k=None`.

Under autograd each chunk is checkpointed, so backward recomputes the chunk's logits instead of storing
them: peak memory scales with batch × chunk × vocab, not batch × length × vocab.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


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


def _apply_head(head: torch.nn.Module | torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    # `head` is a module or a weight; calling the module lets DeepSpeed ZeRO-3 gather its parameters. Mixed
    # precision returns the wrapped forward's output in fp32 while a bf16 head expects bf16: match the head.
    weight = head if isinstance(head, torch.Tensor) else getattr(head, "weight", None)
    if weight is not None and weight.dtype != hidden.dtype and weight.dtype.is_floating_point:
        hidden = hidden.to(weight.dtype)
    return (head(hidden) if isinstance(head, torch.nn.Module) else F.linear(hidden, head)).float()


def chunked_head(
    hidden: torch.Tensor,
    head: torch.nn.Module | torch.Tensor,
    fn: Callable[..., Any],
    *aligned: torch.Tensor,
    chunk_size: int = 256,
) -> Any:
    """Apply `head` to hidden states [B, T, H] one T-chunk at a time and reduce each chunk's fp32 logits
    with `fn(logits, *aligned_chunks)`; the per-chunk results (a tensor or a tuple of tensors, chunked
    along dim 1) are concatenated along dim 1. Chunks are checkpointed when gradients are needed."""
    head_params = list(head.parameters()) if isinstance(head, torch.nn.Module) else [head]
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head_params))
    # A frozen ZeRO-3 partitioned head (LoRA) is gathered again for the recomputation only in the reentrant form (the
    # non-reentrant one finds it partitioned and fails); a trainable one needs the non-reentrant form, under which
    # its gradient is reduced once per step and not once per chunk.
    partitioned = any(hasattr(p, "ds_id") for p in head_params)
    reentrant = partitioned and not any(p.requires_grad for p in head_params)

    def run(h: torch.Tensor, *rest: torch.Tensor) -> Any:
        return fn(_apply_head(head, h), *rest)

    chunks = max(1, -(-hidden.shape[1] // chunk_size))
    if partitioned:
        chunks = _chunks_on_every_rank(chunks, hidden.device)
    pieces = []
    for start in range(0, chunks * chunk_size, chunk_size):  # chunks past the end are empty
        args = [t[:, start : start + chunk_size] for t in (hidden, *aligned)]
        pieces.append(checkpoint(run, *args, use_reentrant=reentrant) if needs_grad else run(*args))
    if isinstance(pieces[0], tuple):
        return tuple(torch.cat(parts, dim=1) for parts in zip(*pieces))
    return torch.cat(pieces, dim=1)


def _chunks_on_every_rank(chunks: int, device: torch.device) -> int:
    """The most chunks any process runs: each call of a ZeRO-3 partitioned head all-gathers its weight, so every
    process must call it equally often (in forward and in the recomputation), whatever its batch's length."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return chunks
    count = torch.tensor([chunks], device=device)
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    return int(count.item())


def token_logprobs_from_hidden(
    hidden: torch.Tensor,
    head: torch.nn.Module | torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int = 256,
    log1m: bool = False,
) -> torch.Tensor:
    """log p(labels) for hidden states [B, T, H] under an LM head (module, or weight [V, H]); [B, T] fp32.

    With `log1m=True` returns [B, T, 2]: log p and log(1 − p), both from the logits. `labels` must be
    aligned with `hidden` (labels[:, t] is the token predicted at t) and valid everywhere (mask afterwards).
    """
    return chunked_head(hidden, head, lambda logits, y: _label_logprobs(logits, y, log1m), labels, chunk_size=chunk_size)


def token_logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor, log1m: bool = False) -> torch.Tensor:
    """log p(labels) (and log(1 − p) with `log1m`) from full logits [B, T, V] (tests and odd models)."""
    return _label_logprobs(logits.float(), labels, log1m)


def topk_logprobs(logits: torch.Tensor, k: int | None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(log-probs [..., k], ids [..., k], log of the remaining mass [...]) of the k most likely tokens.

    With `k=None` the whole log-distribution [..., V] is returned, ids are None and the tail is −inf.
    The tail is logsumexp of the other logits minus the normaliser, so it stays accurate when it is tiny.
    """
    logits = logits.float()
    norm = torch.logsumexp(logits, dim=-1, keepdim=True)
    if k is None:
        return logits - norm, None, torch.full(logits.shape[:-1], float("-inf"), device=logits.device)
    values, ids = logits.topk(k, dim=-1)
    rest = torch.logsumexp(logits.scatter(-1, ids, float("-inf")), dim=-1)
    return values - norm, ids, rest - norm.squeeze(-1)


@torch.no_grad()
def token_topk_from_hidden(
    hidden: torch.Tensor, head: torch.nn.Module | torch.Tensor, k: int | None, chunk_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """`topk_logprobs` at every position of hidden states [B, T, H], one chunk of logits at a time."""
    if k is None:
        logps = chunked_head(hidden, head, lambda z: z - torch.logsumexp(z, dim=-1, keepdim=True), chunk_size=chunk_size)
        return logps, None, torch.full(logps.shape[:-1], float("-inf"), device=logps.device)
    return chunked_head(hidden, head, lambda z: topk_logprobs(z, k), chunk_size=chunk_size)


def pretrained_model(model: Any) -> Any:
    """The `transformers` model inside DDP / DeepSpeed / accelerate wrappers and a PEFT model."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def hidden_states(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                  position_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.nn.Module]:
    """(final hidden states [B, T, H], the LM head) from one forward of `model` as the caller holds it.

    The head is swapped for an identity during the call, so wrappers (DDP's gradient sync, DeepSpeed,
    autocast) run as in a normal forward and no [B, T, V] logits are built."""
    base = pretrained_model(model)
    head = base.get_output_embeddings()
    if head is None:
        raise TypeError(f"{type(base).__name__} has no LM head to separate; use logprob_chunk_size: null")
    config = getattr(base, "config", None)
    if any(getattr(config, name, None) for name in ("final_logit_softcapping", "logit_scale", "logits_scaling")):
        raise ValueError(f"{type(base).__name__} transforms its logits after the head; use logprob_chunk_size: null")
    if attention_mask is not None and attention_mask.ndim == 4:  # a custom additive mask (shared prompts): model dtype
        attention_mask = attention_mask.to(next(base.parameters()).dtype)
    kwargs: dict[str, Any] = {"attention_mask": attention_mask, "use_cache": False}
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    base.set_output_embeddings(torch.nn.Identity())
    try:
        out = model(input_ids=input_ids, **kwargs).logits
    finally:
        base.set_output_embeddings(head)
    return out, head


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
    if chunk_size is None:
        kwargs: dict[str, Any] = {"attention_mask": attention_mask}
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        logits = model(input_ids=input_ids, use_cache=False, **kwargs).logits[:, :-1]
        logps = token_logprobs_from_logits(logits, labels, log1m)
    else:
        hidden, head = hidden_states(model, input_ids, attention_mask, position_ids)
        # The head runs at the scored positions only (no logits for prompt and padding positions), in chunks of as
        # many positions as `chunk_size` positions of every row.
        values = token_logprobs_from_hidden(hidden[:, :-1][mask][None], head, labels[mask][None], chunk_size * mask.shape[0], log1m)[0]
        logps = values.new_zeros((*mask.shape, *values.shape[1:])).index_put((mask,), values)
    return logps.masked_fill(~(mask[..., None] if log1m else mask), 0.0), mask


def batch_hidden_states(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.nn.Module, torch.Tensor]:
    """(hidden states predicting each next token [R, T-1, H], the LM head, the scored-token mask [R, T-1])
    for a padded or packed batch from `modeling.batching`."""
    hidden, head = hidden_states(model, batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids"))
    return hidden[:, :-1], head, batch["loss_mask"][:, 1:].bool()


def batch_token_logprobs(model: Any, batch: dict[str, torch.Tensor], chunk_size: int | None = 256, log1m: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """`sequence_token_logprobs` for a padded, packed or shared-prompt batch from `modeling.batching`.

    For a shared-prompt batch the values are one row [1, N] of the scored tokens in sequence order (mask all
    True), which `per_sequence_sum` and `completion_matrix` read like the other layouts."""
    if "pred_row" in batch:
        hidden, head = hidden_states(model, batch["input_ids"], batch["attention_mask"], batch["position_ids"])
        picked = hidden[batch["pred_row"], batch["pred_col"]][None]
        logps = token_logprobs_from_hidden(picked, head, batch["labels"][None], chunk_size or picked.shape[1], log1m)
        return logps, torch.ones(logps.shape[:2], dtype=torch.bool, device=logps.device)
    return sequence_token_logprobs(
        model, batch["input_ids"], batch.get("attention_mask"), batch["loss_mask"], chunk_size, batch.get("position_ids"), log1m
    )


def per_sequence_sum(values: torch.Tensor, mask: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum masked per-token values [R, T-1] into one value per sequence, for padded or packed batches."""
    index = batch["sequence_index"][:, 1:]
    count = int(batch["sequence_index"].max()) + 1
    out = torch.zeros(count, dtype=values.dtype, device=values.device)
    return out.index_add(0, index[mask], values[mask])


def per_sequence_mean(values: torch.Tensor, mask: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean of masked per-token values [R, T-1] over each sequence's scored tokens, one value per sequence."""
    return per_sequence_sum(values, mask, batch) / per_sequence_sum(mask.to(values.dtype), mask, batch).clamp(min=1)


def scored_positions(mask: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The indices of `mask`'s scored positions (as `torch.nonzero(mask, as_tuple=True)`), in sequence order:
    every scored token of sequence 0 in order, then sequence 1, ... Packed rows may hold sequences out of
    order (see `modeling.batching`), so any per-position data laid out by sequence is placed through these."""
    flat = torch.nonzero(mask, as_tuple=True)
    order = torch.argsort(batch["sequence_index"][:, 1:][flat], stable=True)
    return tuple(f[order] for f in flat)


def completion_matrix(values: torch.Tensor, mask: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scored tokens laid out as [sequences, max completion length (, ...)], with a validity mask.

    Row s holds sequence s's completion tokens in order, for padded or packed batches; two sequences
    with the same completion line up by position.
    """
    positions = scored_positions(mask, batch)
    seq = batch["sequence_index"][:, 1:][positions]
    picked = values[positions]
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
