"""Reference signals computed once by a frozen model and cached on disk, reused across runs.

The cache key hashes the model's identity (`model_fingerprint`) together with the exact token ids
of every example and the method's name and reference keys. The token ids already encode the data
files, template, tokenizer and max lengths, so any change to them gives a new key and never a stale
hit. Files are written atomically (temp file + rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from alignkit.gym.tiny_model import cache_dir

TOKEN_FIELDS_SUFFIX = "_ids"


def examples_digest(examples: Sequence[dict[str, Any]]) -> str:
    """Hash of every token-id field of every example, in order."""
    h = hashlib.sha256()
    for ex in examples:
        for key in sorted(k for k in ex if k.endswith(TOKEN_FIELDS_SUFFIX)):
            h.update(key.encode())
            value = ex[key]
            if value and isinstance(value[0], (list, tuple)):  # several sequences (e.g. D²O's K samples)
                for row in value:
                    h.update(torch.tensor(row, dtype=torch.int64).numpy().tobytes())
                    h.update(b",")
            else:
                h.update(torch.tensor(value, dtype=torch.int64).numpy().tobytes())
            h.update(b"|")
    return h.hexdigest()


class ReferenceLogprobCache:
    """On-disk store of per-example reference values, one file per key."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else cache_dir() / "reference"

    def key(self, model_fingerprint: str, method: str, keys: Sequence[str], examples: Sequence[dict[str, Any]]) -> str:
        """The cache key for these examples under this model and method."""
        h = hashlib.sha256(json.dumps([model_fingerprint, method, list(keys)]).encode())
        h.update(examples_digest(examples).encode())
        return h.hexdigest()[:24]

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def load(self, key: str) -> dict[str, torch.Tensor] | None:
        """The cached values, or None on a miss."""
        p = self.path(key)
        return torch.load(p, weights_only=True) if p.is_file() else None

    def save(self, key: str, values: dict[str, torch.Tensor]) -> Path:
        """Write atomically: a crash never leaves a half-written file that a later run trusts."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{key}.", suffix=".tmp")
        os.close(fd)
        try:
            torch.save(values, tmp)
            os.replace(tmp, self.path(key))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self.path(key)


@torch.no_grad()
def compute_reference(
    model: Any,
    examples: Sequence[dict[str, Any]],
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    outputs: Callable[[Any, dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    keys: Sequence[str],
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Run `outputs(model, batch)` over all examples in order; stack the `keys` per example."""
    model.eval()
    device = next(model.parameters()).device
    acc: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(list(examples[start : start + batch_size])).items()}
        out = outputs(model, batch)
        for k in keys:
            acc[k].append(out[k].float().cpu())
        if progress:
            progress(min(batch_size, len(examples) - start))
    return {k: torch.cat(v) for k, v in acc.items()}


def attach_reference(examples: list[dict[str, Any]], values: dict[str, torch.Tensor]) -> None:
    """Store cached values on the examples as `ref_<key>` fields."""
    for k, v in values.items():
        if len(v) != len(examples):
            raise ValueError(f"reference cache holds {len(v)} values for {k}, but there are {len(examples)} examples")
        for ex, x in zip(examples, v.tolist()):
            ex[f"ref_{k}"] = x
