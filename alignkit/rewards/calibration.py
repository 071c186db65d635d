"""Calibrated rewards: a reward's quantile among reference-policy samples of the same prompt.

C(x, y) = P_{z~π_ref}[r(x,z) < r(x,y)] + ½·P[r(x,z) = r(x,y)]  (InfAlign step 1; ties="half").

Calibration removes per-prompt offsets and scales and is invariant to any increasing transform of the
reward; under the reference policy it is Uniform[0, 1] when rewards have no ties. Mid-rank ties
("half") make E_ref[C] = ½ exactly and match win-rate semantics; "lower" (strictly below) and
"upper" (at or below, which inflates C) are offered for comparison.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch

from alignkit.rewards.arrays import like, to_tensor

Ties = Literal["half", "lower", "upper"]
TIES = ("half", "lower", "upper")


def _sorted(x: torch.Tensor) -> torch.Tensor:
    """Sort along the last axis (numpy's row sort is several times faster than torch's on CPU)."""
    return torch.from_numpy(np.sort(x.numpy(), axis=-1))


def _ranks(sorted_ref: torch.Tensor, values: torch.Tensor, ties: Ties) -> torch.Tensor:
    """Calibrated values for `values` [..., M] against row-sorted references [..., K]."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    k = sorted_ref.shape[-1]
    below = torch.searchsorted(sorted_ref, values, right=False).to(torch.float64)
    if ties == "lower":
        return below / k
    at_or_below = torch.searchsorted(sorted_ref, values, right=True).to(torch.float64)
    return at_or_below / k if ties == "upper" else (below + at_or_below) / (2 * k)


def calibrate(rewards: Any, reference_rewards: Any, ties: Ties = "half") -> Any:
    """Each reward's share of its prompt's reference rewards below it (ties by `ties`).

    Shapes: rewards [M] with reference [K] (one prompt), or rewards [P, M] with reference [P, K]
    (row p against row p) or [K] (one reference set for every prompt). Returns the shape and kind
    (numpy array or torch tensor) of `rewards`.
    """
    r = to_tensor(rewards, "rewards")
    ref = to_tensor(reference_rewards, "reference_rewards")
    if ref.ndim not in (1, 2) or r.ndim not in (0, 1, 2):
        raise ValueError(f"expected rewards [M] or [P, M] and reference [K] or [P, K], got {tuple(r.shape)} and {tuple(ref.shape)}")
    if ref.ndim == 2 and (r.ndim != 2 or r.shape[0] != ref.shape[0]):
        raise ValueError(
            f"reference_rewards has {ref.shape[0]} prompts (shape {tuple(ref.shape)}), so rewards must be [{ref.shape[0]}, M]; got {tuple(r.shape)}"
        )
    sorted_ref = _sorted(ref)
    if ref.ndim == 1:
        out = _ranks(sorted_ref, r.reshape(-1), ties).reshape(r.shape)
    else:
        out = _ranks(sorted_ref.contiguous(), r.contiguous(), ties)
    return like(out, rewards)


class Calibrator:
    """Holds sorted reference rewards per prompt id and calibrates new rewards in O(log K) each.

    Prompts may have different numbers of reference samples. Use the same π_ref for calibration as for
    the KL anchor, sampled at temperature 1 and scored by the same reward model (InfAlign pitfall Q1).
    """

    def __init__(self, ties: Ties = "half") -> None:
        if ties not in TIES:
            raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
        self.ties = ties
        self._sorted: dict[Hashable, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._sorted)

    def __contains__(self, prompt_id: Hashable) -> bool:
        return prompt_id in self._sorted

    def add(self, prompt_id: Hashable, reference_rewards: Any) -> "Calibrator":
        """Store (replace) one prompt's reference rewards."""
        ref = to_tensor(reference_rewards, f"reference rewards of prompt {prompt_id!r}").reshape(-1)
        self._sorted[prompt_id] = _sorted(ref)
        return self

    def fit(self, prompt_ids: Iterable[Hashable], reference_rewards: Any) -> "Calibrator":
        """Store reference rewards for many prompts: [P, K] array or a list of per-prompt sequences."""
        ids = list(prompt_ids)
        rows = list(reference_rewards)
        if len(ids) != len(rows):
            raise ValueError(f"{len(ids)} prompt ids but {len(rows)} rows of reference rewards")
        for pid, row in zip(ids, rows):
            self.add(pid, row)
        return self

    def reference_size(self, prompt_id: Hashable) -> int:
        """K for a prompt: calibrated values live on a grid of step 1/K."""
        return int(self._sorted[prompt_id].numel())

    def __call__(self, prompt_ids: Sequence[Hashable], rewards: Any) -> Any:
        """Calibrate rewards [B] whose prompts are `prompt_ids` [B]; returns the kind of `rewards`."""
        r = to_tensor(rewards, "rewards").reshape(-1)
        ids = list(prompt_ids)
        if len(ids) != r.numel():
            raise ValueError(f"{len(ids)} prompt ids but {r.numel()} rewards")
        missing = [p for p in dict.fromkeys(ids) if p not in self._sorted]
        if missing:
            raise KeyError(f"no reference rewards for prompt ids {missing[:5]}; sample π_ref for them first (pitfall Q8)")
        # Group positions by prompt with one argsort over integer codes.
        code_of = {pid: c for c, pid in enumerate(dict.fromkeys(ids))}
        codes = np.fromiter((code_of[pid] for pid in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(codes, kind="stable")
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        out = torch.empty_like(r)
        for group in np.split(order, bounds):
            index = torch.from_numpy(group)
            out[index] = _ranks(self._sorted[ids[group[0]]], r[index], self.ties)
        return like(out.reshape(np.shape(rewards)), rewards)
