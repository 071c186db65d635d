"""Turning (prompt ids, completion ids) rows into token batches, shared by every method and the scorers.

Tokenisation itself (one rule for training and sampling) is `alignkit.data.tokenization`. Two batch
layouts, both carrying `sequence_index` (which sequence each token belongs to):
- padded: one sequence per row, right-padded to a multiple of 8, with an attention mask;
- packed (padding-free): all sequences in one row with restarting `position_ids` and no attention
  mask. transformers then builds block-diagonal causal attention (flash-attention varlen on GPU;
  SDPA and eager on CPU too), so packed and padded log-probs agree.
"""

from __future__ import annotations

from typing import Sequence

import torch

PAD_MULTIPLE = 8


Rows = Sequence[tuple[Sequence[int], Sequence[int]]]


def rows_to_batch(rows: Rows, pad_id: int, packing: bool = False) -> dict[str, torch.Tensor]:
    """(prompt, completion) rows as a padded or a packed batch."""
    return pack_rows(rows, pad_id) if packing else pad_rows(rows, pad_id)


def pack_rows(rows: Rows, pad_id: int, multiple: int = PAD_MULTIPLE) -> dict[str, torch.Tensor]:
    """All rows in one sequence: input_ids, position_ids (restarting per row), loss_mask, sequence_index."""
    ids: list[int] = []
    positions: list[int] = []
    loss: list[int] = []
    index: list[int] = []
    for i, (p, c) in enumerate(rows):
        ids += [*p, *c]
        positions += range(len(p) + len(c))
        loss += [0] * len(p) + [1] * len(c)
        index += [i] * (len(p) + len(c))
    extra = -len(ids) % multiple  # the tail pad forms its own (unscored) segment
    ids += [pad_id] * extra
    positions += range(extra)
    loss += [0] * extra
    index += [len(rows) - 1] * extra
    as_row = lambda xs: torch.tensor(xs, dtype=torch.long)[None]  # noqa: E731
    return {"input_ids": as_row(ids), "position_ids": as_row(positions), "loss_mask": as_row(loss), "sequence_index": as_row(index)}


def pad_rows(rows: Rows, pad_id: int, multiple: int = PAD_MULTIPLE) -> dict[str, torch.Tensor]:
    """Right-pad (prompt, completion) rows: input_ids, attention_mask, loss_mask, sequence_index."""
    longest = max(len(p) + len(c) for p, c in rows)
    width = -(-longest // multiple) * multiple
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, c) in enumerate(rows):
        n = len(p) + len(c)
        input_ids[i, :n] = torch.tensor(list(p) + list(c), dtype=torch.long)
        attention_mask[i, :n] = 1
        loss_mask[i, len(p) : n] = 1
    sequence_index = torch.arange(len(rows))[:, None].expand(len(rows), width).contiguous()
    return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask, "sequence_index": sequence_index}
