"""Helpers for checking a method's first step against a TRL trainer on the same tiny model and batch: the loss, the
logged metrics and every parameter's gradient."""

from __future__ import annotations

from typing import Any, Callable

import torch


def gradients(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> tuple[float, dict[str, torch.Tensor]]:
    """(loss, {parameter name: gradient}) of one backward of `loss_fn()` from zeroed gradients."""
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


def assert_same_gradients(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], tol: float = 1e-4) -> None:
    """Every parameter has a gradient on both sides, equal within `tol` (relative to the largest gradient entry when
    that exceeds 1: fp32 sums of many terms), and they are not all zero."""
    assert set(ours) == set(theirs), sorted(set(ours) ^ set(theirs))
    scale = max(g.abs().max().item() for g in theirs.values())
    assert scale > 1e-3, "a vanishing gradient checks nothing"
    worst = max(ours, key=lambda n: (ours[n] - theirs[n]).abs().max().item())
    gap = (ours[worst] - theirs[worst]).abs().max().item()
    assert gap < tol * max(1.0, scale), f"{worst}: gradients differ by {gap:.2e} (largest gradient entry {scale:.2e})"


def last_metrics(trainer: Any, mode: str = "train") -> dict[str, float]:
    """The metrics a TRL trainer stored for its last loss computation, then cleared."""
    store = trainer._metrics[mode] if hasattr(trainer, "_metrics") else trainer._stored_metrics[mode]
    out = {k: float(v[-1]) for k, v in store.items() if v}
    store.clear()
    return out


def example_mean(metrics: dict[str, torch.Tensor], name: str) -> float:
    """The mean of a per-example alignkit metric over the examples where it applies (NaN elsewhere)."""
    value = metrics[name].detach().float().reshape(-1)
    return value[~torch.isnan(value)].mean().item()
