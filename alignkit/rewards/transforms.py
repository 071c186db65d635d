"""Reward transforms Φ applied to calibrated rewards u ∈ [0, 1] (InfAlign-CTRL step 2).

| transform | Φ(u) | aligns for |
|---|---|---|
| `identity()` | u | standard sampling (exactly optimal for standard win rate) |
| `log(eps)` | log(max(u, eps)) | β = 1/(N−1) reproduces best-of-N sampling itself |
| `best_of_n(t)` | exp(t·u), or (e^{tu} − 1)/(e^t − 1) normalised | best-of-N decoding, t > 0 |
| `worst_of_n(t)` | −exp(−t·u), or (1 − e^{−tu})/(1 − e^{−t}) normalised | worst-of-N (best-of-N jailbreaking), t > 0 |
| `exponential(t)` | the normalised family, t > 0 BoN, t < 0 WoN, t = 0 identity | both, one knob |

Every transform is increasing in u (pitfall Q7: WoN is −exp(−tu), never exp(−tu)). The normalised
forms map [0, 1] onto [0, 1] and give the same optimal policies as the raw ones with β rescaled by
|e^t − 1|; they are computed in a form that does not overflow for large t. Compose with calibration:
`best_of_n(4.5)(calibrate(r, ref))`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from alignkit.rewards.arrays import like, to_tensor


@dataclass(frozen=True)
class RewardTransform:
    """A named increasing map of calibrated rewards; call it on numpy arrays or torch tensors."""

    name: str
    params: dict[str, float] = field(default_factory=dict)
    fn: Callable[[torch.Tensor], torch.Tensor] = field(repr=False, compare=False, default=lambda u: u)

    def __call__(self, u: Any) -> Any:
        x = to_tensor(u, "calibrated rewards")
        if (x < 0).any() or (x > 1).any():
            raise ValueError("calibrated rewards must lie in [0, 1]; calibrate raw rewards first")
        return like(self.fn(x), u)

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{self.name}({args})"


def identity() -> RewardTransform:
    """Φ(u) = u."""
    return RewardTransform("identity", {}, lambda u: u)


def log(eps: float = 1e-3) -> RewardTransform:
    """Φ(u) = log(max(u, eps)); clip at 1/(2K) for K reference samples (pitfall Q4)."""
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    return RewardTransform("log", {"eps": eps}, lambda u: torch.log(u.clamp(min=eps)))


def _normalised_exp(t: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """(e^{tu} − 1)/(e^t − 1) for t ≠ 0, written to stay finite for large |t|."""
    if t > 0:
        # = e^{t(u−1)} · (1 − e^{−tu}) / (1 − e^{−t})
        return lambda u: torch.exp(t * (u - 1)) * torch.expm1(-t * u) / math.expm1(-t)
    return lambda u: torch.expm1(t * u) / math.expm1(t)


def best_of_n(t: float, normalized: bool = False) -> RewardTransform:
    """Φ(u) = exp(t·u) (t > 0), or its normalised form; for best-of-N decoding."""
    if not t > 0:
        raise ValueError(f"best_of_n needs t > 0 (a positive exponent), got {t}")
    if normalized:
        return RewardTransform("best_of_n", {"t": t, "normalized": 1.0}, _normalised_exp(t))
    return RewardTransform("best_of_n", {"t": t}, lambda u: torch.exp(t * u))


def worst_of_n(t: float, normalized: bool = False) -> RewardTransform:
    """Φ(u) = −exp(−t·u) (t > 0), or its normalised form; for worst-of-N (jailbreak) robustness."""
    if not t > 0:
        raise ValueError(f"worst_of_n takes t > 0 and applies the negative exponent itself, got {t}")
    if normalized:
        return RewardTransform("worst_of_n", {"t": t, "normalized": 1.0}, _normalised_exp(-t))
    return RewardTransform("worst_of_n", {"t": t}, lambda u: -torch.exp(-t * u))


def exponential(t: float) -> RewardTransform:
    """The unified normalised family Φ_t: t > 0 targets best-of-N, t < 0 worst-of-N, t = 0 is identity."""
    if t == 0:
        return RewardTransform("exponential", {"t": 0.0}, lambda u: u)
    return RewardTransform("exponential", {"t": t}, _normalised_exp(t))
