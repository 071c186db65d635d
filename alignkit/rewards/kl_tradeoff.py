"""The model-free KL / win-rate trade-off of transformed calibrated rewards, and choosing t.

Calibrated rewards are Uniform[0, 1] under π_ref whatever the task or model, so the optimal
KL-regularised policy for Φ, π ∝ π_ref·exp(Φ(C)/β), has calibrated-reward density
f(u) = exp(Φ(u)/β) / ∫ exp(Φ(v)/β) dv on [0, 1]. With F its CDF:

- KL(π‖π_ref) = ∫ f log f
- standard win rate = ∫ u f(u) du
- best-of-N vs best-of-N: E[M^N], M the max of N draws from f, = ∫ u^N d(F^N)
- worst-of-N vs worst-of-N: ∫ (1 − (1 − u)^N) d(1 − (1 − F)^N)

The integrals use a midpoint grid (4000 points by default, as in the spec's derivation).
`choose_t` sweeps the exponential family, solves β for the KL budget, and keeps the best t.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from scipy.optimize import brentq, minimize_scalar

from alignkit.rewards.transforms import RewardTransform, best_of_n, identity, worst_of_n

Mode = Literal["standard", "bon", "won"]


def _grid(points: int) -> torch.Tensor:
    return (torch.arange(points, dtype=torch.float64) + 0.5) / points


def _density(phi: torch.Tensor, beta: float) -> torch.Tensor:
    logits = phi / beta
    return torch.exp(logits - torch.logsumexp(logits, 0)) * phi.numel()  # mean of f over the grid is 1


def _kl(f: torch.Tensor) -> float:
    return float((f * torch.log(f.clamp(min=1e-300))).mean())


def _win(u: torch.Tensor, f: torch.Tensor, mode: str, n: int) -> float:
    cdf = torch.cumsum(f, 0) / f.numel()
    cdf_left = torch.cat([torch.zeros(1, dtype=cdf.dtype), cdf[:-1]])
    if mode == "standard":
        return float((u * f).mean())
    if mode == "bon":
        return float((u**n * (cdf**n - cdf_left**n)).sum())
    if mode == "won":
        return float(((1 - (1 - u) ** n) * ((1 - cdf_left) ** n - (1 - cdf) ** n)).sum())
    raise ValueError(f"mode must be standard, bon or won, got {mode!r}")


def kl_winrate_curve(transform: RewardTransform, n: int, betas: Sequence[float], mode: Mode = "bon", points: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """(KL, win rate) of the optimal policy for `transform` at each β, with no model involved."""
    u = _grid(points)
    phi = torch.as_tensor(transform(u.numpy()))
    kls, wins = [], []
    for beta in betas:
        if not beta > 0:
            raise ValueError(f"beta must be positive, got {beta}")
        f = _density(phi, float(beta))
        kls.append(_kl(f))
        wins.append(_win(u, f, mode, n))
    return np.array(kls), np.array(wins)


def beta_for_kl(transform: RewardTransform, kl_budget: float, points: int = 4000) -> float:
    """The β at which the optimal policy for `transform` sits at KL = kl_budget."""
    u = _grid(points)
    phi = torch.as_tensor(transform(u.numpy()))
    spread = float(phi.max() - phi.min())
    if spread == 0:
        raise ValueError(f"{transform} is constant: no KL budget can be met")
    gap = lambda log_b: _kl(_density(phi, float(np.exp(log_b)))) - kl_budget  # noqa: E731  (decreasing in β)
    lo, hi = np.log(spread) - 40, np.log(spread) + 40
    if gap(lo) < 0:
        raise ValueError(f"KL budget {kl_budget} is beyond what {transform} reaches on a {points}-point grid")
    return float(np.exp(brentq(gap, lo, hi, xtol=1e-10)))


def winrate_at_kl(transform: RewardTransform, n: int, kl_budget: float, mode: Mode = "bon", points: int = 4000) -> float:
    """Win rate of the optimal policy for `transform` at a KL budget."""
    beta = beta_for_kl(transform, kl_budget, points)
    return float(kl_winrate_curve(transform, n, [beta], mode, points)[1][0])


@dataclass(frozen=True)
class TChoice:
    """The best exponential transform for (N, KL budget, procedure)."""

    t: float
    winrate: float
    beta: float
    identity_winrate: float
    transform: RewardTransform

    @property
    def beta_normalized(self) -> float:
        """β for the normalised transform (`exponential(±t)`), which maps [0, 1] onto [0, 1]."""
        bon = self.transform.name == "best_of_n"
        return self.beta / (np.expm1(self.t) if bon else -np.expm1(-self.t))

    def __str__(self) -> str:
        return (f"t={self.t:.2f} (β={self.beta:.4g}; {self.beta_normalized:.4g} normalised): "
                f"win rate {self.winrate:.4f} vs identity {self.identity_winrate:.4f}")


def choose_t(n: int, kl_budget: float, mode: Literal["bon", "won"] = "bon", t_max: float = 400.0, points: int = 4000) -> TChoice:
    """The t of exp(t·u) (bon) or −exp(−t·u) (won) with the highest inference-time win rate at the KL budget.

    A coarse geometric sweep over t ∈ [0.25, t_max] is refined by a bounded scalar search. Keep 1/t
    well above 1/K for K calibration samples per prompt (pitfall Q3): large t needs many samples.
    """
    if mode not in ("bon", "won"):
        raise ValueError(f"mode must be 'bon' or 'won', got {mode!r}")
    family = best_of_n if mode == "bon" else worst_of_n

    def score(t: float) -> float:
        try:
            return winrate_at_kl(family(float(t)), n, kl_budget, mode, points)
        except ValueError:  # this t saturates (e.g. −exp(−tu) for large t) and cannot spend the budget
            return -np.inf
    grid = np.geomspace(0.25, t_max, 48)
    values = [score(t) for t in grid]
    i = int(np.argmax(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    best = minimize_scalar(lambda t: -score(t), bounds=(lo, hi), method="bounded", options={"xatol": 1e-2})
    t = float(best.x) if -best.fun >= values[i] else float(grid[i])
    transform = family(t)
    return TChoice(t, score(t), beta_for_kl(transform, kl_budget, points), winrate_at_kl(identity(), n, kl_budget, mode, points), transform)
