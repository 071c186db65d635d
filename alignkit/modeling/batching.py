"""Turning (prompt ids, completion ids) rows into token batches, shared by every method and the scorers.

Tokenisation itself (one rule for training and sampling) is `alignkit.data.tokenization`. Two batch
layouts, both carrying `sequence_index` (which sequence each token belongs to):
- padded: one sequence per row, right-padded to a multiple of 8, with an attention mask;
- packed (padding-free): sequences laid end to end with restarting `position_ids` and no attention
  mask. transformers then builds block-diagonal causal attention, so packed and padded log-probs agree.
  With flash-attention (varlen, which transformers only uses for a single row) all sequences go in one
  row; with SDPA, eager or flex attention, whose cost grows with the square of a row, sequences fill rows
  of at most `width` tokens (the recipe's max_length), so no row costs more than the longest padded
  sequence. Rows are filled first-fit decreasing, so the rows' tail padding stays small; a sequence's
  tokens stay together and in order, but sequences are no longer in row-major order: read per-position
  values in sequence order through `modeling.logprobs.scored_positions`.

A third layout computes a prompt shared by several sequences once (`shared_prompt_rows`): one row per
distinct prompt holding the prompt followed by each of its completions, with a 4D attention mask in which
every completion sees the prompt and itself (causally) but not the other completions, and position ids
that continue from the prompt for each completion. A completion's first token is predicted from the
prompt's last position, so the batch lists, for every scored token in sequence order, where its predicting
hidden state is (`pred_row`, `pred_col`) and its label. D²O's K + 1 sequences per prompt and DPO's chosen and
rejected then cost one prompt each instead of K + 1 or 2; the log-probs equal the unshared ones (tested).
"""

from __future__ import annotations

from typing import Sequence

import torch

PAD_MULTIPLE = 8
# Which completion tokens are scored, the same in every layout: all of them, except the first one of a sequence with
# no prompt (nothing precedes it to predict it from). Cached per-token and per-sequence values are keyed on this
# version, so a change of the rule recomputes them instead of reusing values scored under the old one.
# 2: a prompt-less first token became unscored in packed rows too.
SCORING_VERSION = 2


def scored_count(prompt: Sequence[int], completion: Sequence[int]) -> int:
    """How many of `completion`'s tokens a batch scores (see `SCORING_VERSION`)."""
    return max(len(completion) - (not prompt), 0)


Rows = Sequence[tuple[Sequence[int], Sequence[int]]]


def rows_to_batch(rows: Rows, pad_id: int, packing: bool = False, share_prompts: bool = False,
                  pack_width: int | None = None) -> dict[str, torch.Tensor]:
    """(prompt, completion) rows as a padded, a packed (rows of at most `pack_width` tokens; None: one row)
    or a shared-prompt batch."""
    if share_prompts:
        return shared_prompt_rows(rows, pad_id)
    return pack_rows(rows, pad_id, width=pack_width) if packing else pad_rows(rows, pad_id)


def pack_rows(rows: Rows, pad_id: int, multiple: int = PAD_MULTIPLE, width: int | None = None) -> dict[str, torch.Tensor]:
    """Sequences end to end: input_ids, position_ids (restarting per sequence), loss_mask, sequence_index.

    `width=None` puts every sequence in one row; otherwise sequences share rows of at most `width` tokens (a
    longer sequence gets a row of its own), placed first-fit decreasing: as few rows as that allows, balanced
    so the longest row, which every row is padded to, comes out short. Within a row sequences keep
    their order. Each row's tail pad forms its own unscored segment."""
    lengths = [len(p) + len(c) for p, c in rows]
    packed: list[tuple[list[int], list[int], list[int], list[int]]] = []
    for members in _balanced_rows(lengths, width):
        ids: list[int] = []
        positions: list[int] = []
        loss: list[int] = []
        index: list[int] = []
        for i in members:
            p, c = rows[i]
            ids += [*p, *c]
            positions += range(lengths[i])
            # a sequence's first token has nothing before it to be predicted from (as in a padded row, where it is
            # never scored); unmasked here it would be predicted from the previous sequence in the row
            scored = [0] * len(p) + [1] * len(c)
            if scored:
                scored[0] = 0
            loss += scored
            index += [i] * lengths[i]
        packed.append((ids, positions, loss, index))
    longest = max(len(row[0]) for row in packed)
    span = -(-longest // multiple) * multiple
    out = {name: torch.zeros((len(packed), span), dtype=torch.long) for name in ("input_ids", "position_ids", "loss_mask", "sequence_index")}
    for r, (ids, positions, loss, index) in enumerate(packed):
        extra = span - len(ids)
        out["input_ids"][r] = torch.tensor(ids + [pad_id] * extra)
        out["position_ids"][r] = torch.tensor(positions + list(range(extra)))
        out["loss_mask"][r, : len(loss)] = torch.tensor(loss)
        out["sequence_index"][r] = torch.tensor(index + [index[-1]] * extra)
    return out


def _first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Sequence indices grouped into rows of `capacity` tokens, longest first, each into the first row with
    room (a longer sequence gets a row of its own); each row's members ascending, rows by their first member."""
    rows: list[list[int]] = []
    used: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        n = lengths[i]
        r = next((r for r, u in enumerate(used) if u + n <= capacity), None)
        if r is None:
            rows.append([])
            used.append(0)
            r = len(rows) - 1
        rows[r].append(i)
        used[r] += n
    return sorted((sorted(r) for r in rows), key=lambda r: r[0])


def _balanced_rows(lengths: Sequence[int], width: int | None) -> list[list[int]]:
    """Rows for packing: one row when `width` is None; otherwise the rows of first-fit decreasing at `width`
    tokens, then at a smaller capacity that needs no more rows (a binary search; first-fit decreasing's row count
    is not monotone in the capacity, so not always the smallest), so the rows come out even."""
    if width is None or not lengths:
        return [list(range(len(lengths)))]
    longest = max(lengths)
    hi = max(width, longest)
    count = len(_first_fit_decreasing(lengths, hi))
    lo = max(longest, -(-sum(lengths) // count))
    while lo < hi:  # invariant: capacity hi needs at most `count` rows
        mid = (lo + hi) // 2
        if len(_first_fit_decreasing(lengths, mid)) <= count:
            hi = mid
        else:
            lo = mid + 1
    return _first_fit_decreasing(lengths, hi)


def token_batches(lengths: Sequence[int], max_tokens: int, max_rows: int | None = None,
                  multiple: int = PAD_MULTIPLE) -> list[list[int]]:
    """Indices of `lengths` grouped into padded batches of at most `max_tokens` tokens (rows x padded width) and
    `max_rows` rows, longest first: a frozen model's forward passes cost about the same whatever the lengths,
    and similar lengths share a batch, so little is padding. A sequence longer than `max_tokens` goes alone."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    width = 0  # the padded width of the last batch: its first (longest) sequence's
    for i in order:
        if batches and (len(batches[-1]) + 1) * width <= max_tokens and (max_rows is None or len(batches[-1]) < max_rows):
            batches[-1].append(i)
        else:
            batches.append([i])
            width = -(-max(lengths[i], 1) // multiple) * multiple
    return batches


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


def shared_prompt_rows(rows: Rows, pad_id: int, multiple: int = PAD_MULTIPLE) -> dict[str, torch.Tensor]:
    """(prompt, completion) rows with each distinct prompt computed once (see the module docstring).

    Returns input_ids / position_ids [G, W], attention_mask [G, 1, W, W] (0 where attended, −inf elsewhere,
    fp32), and per scored token, ordered by sequence: pred_row, pred_col, labels [N]; sequence_index [1, N + 1]
    (its [:, 1:] names each scored token's sequence, as in the other layouts) and loss_mask [1, N + 1]."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (p, _) in enumerate(rows):
        groups.setdefault(tuple(p), []).append(i)
    lengths = [len(p) + sum(len(rows[i][1]) for i in members) for p, members in groups.items()]
    width = -(-max(lengths) // multiple) * multiple
    g = len(groups)
    input_ids = torch.full((g, width), pad_id, dtype=torch.long)
    positions = torch.zeros((g, width), dtype=torch.long)
    allowed = torch.zeros((g, width, width), dtype=torch.bool)
    where: dict[int, tuple[int, int, int]] = {}  # row -> (group, start column, prompt length)
    for gi, (prompt, members) in enumerate(groups.items()):
        n = len(prompt)
        input_ids[gi, :n] = torch.tensor(prompt, dtype=torch.long)
        positions[gi, :n] = torch.arange(n)
        allowed[gi, :n, :n] = torch.ones(n, n, dtype=torch.bool).tril()
        col = n
        for i in members:
            c = rows[i][1]
            m = len(c)
            input_ids[gi, col : col + m] = torch.tensor(list(c), dtype=torch.long)
            positions[gi, col : col + m] = torch.arange(n, n + m)
            allowed[gi, col : col + m, :n] = True
            allowed[gi, col : col + m, col : col + m] = torch.ones(m, m, dtype=torch.bool).tril()
            where[i] = (gi, col, n)
            col += m
        allowed[gi, col:, 0] = True  # padding attends to something, so no row of the softmax is empty
    pred_row, pred_col, labels, seq = [], [], [], []
    for i, (_, completion) in enumerate(rows):
        gi, col, n = where[i]
        for j, token in enumerate(completion):
            if j == 0 and n == 0:
                continue  # nothing to predict a first token from (unscored, as in the other layouts)
            pred_row.append(gi)
            pred_col.append(n - 1 if j == 0 else col + j - 1)
            labels.append(token)
            seq.append(i)
    mask = torch.zeros((g, 1, width, width))
    mask.masked_fill_(~allowed[:, None], torch.finfo(torch.float32).min)
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    sequence_index = as_long([len(rows) - 1] + seq)[None]  # slot 0 is never read; it keeps max() + 1 = the sequence count
    return {"input_ids": input_ids, "position_ids": positions, "attention_mask": mask, "pred_row": as_long(pred_row),
            "pred_col": as_long(pred_col), "labels": as_long(labels), "sequence_index": sequence_index,
            "loss_mask": torch.ones_like(sequence_index)}
