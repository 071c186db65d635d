"""numpy/torch interop for the reward API: compute in float64 torch, return the caller's kind."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def to_tensor(x: Any, name: str) -> torch.Tensor:
    """A float64 CPU tensor view of `x` (numpy, torch, list or scalar); rejects NaN and empty input."""
    t = x.detach().to("cpu", torch.float64) if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")
    if torch.isnan(t).any():
        raise ValueError(f"{name} contains NaN at index {tuple(torch.nonzero(torch.isnan(t))[0].tolist())}")
    return t


def like(result: torch.Tensor, template: Any) -> Any:
    """Return `result` as the same kind as `template`: a torch tensor (its device and float dtype) or numpy."""
    if isinstance(template, torch.Tensor):
        dtype = template.dtype if template.is_floating_point() else torch.float64
        return result.to(device=template.device, dtype=dtype)
    out = result.numpy()
    return out.item() if out.ndim == 0 and np.isscalar(template) else out
