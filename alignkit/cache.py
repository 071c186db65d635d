"""Where alignkit keeps what it computes once and reuses (built tiny models, frozen-model signals,
rollouts, judge answers), and how those files are written so an interrupted run never leaves a file
that a later run trusts.

- `cache_dir()`: `$ALIGNKIT_CACHE`, else `~/.cache/alignkit`. Move the cache by moving the folder and
  pointing `ALIGNKIT_CACHE` at it; entries are content-addressed, not path-addressed.
- `atomic_path(target)`: a context manager that yields a temporary sibling path (file or folder) and
  renames it onto `target` only when the block finishes without an exception; on failure the
  temporary is removed, so no `.tmp` orphan stays behind.
- `content_key(*parts)`: a short hex key over JSON-serialisable parts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def cache_dir() -> Path:
    """The cache root: ALIGNKIT_CACHE, else ~/.cache/alignkit."""
    return Path(os.environ.get("ALIGNKIT_CACHE", Path.home() / ".cache" / "alignkit"))


def content_key(*parts: Any, length: int = 24) -> str:
    """A hex key hashing JSON-serialisable `parts` (sorted keys; non-JSON values by `str`)."""
    payload = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


@contextlib.contextmanager
def atomic_path(target: str | Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` on success, delete it on failure.

    With `directory=True` the temporary is an empty folder and an existing `target` folder is replaced.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    else:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory and target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, write: Callable[[Any], None], mode: str = "w") -> Path:
    """Write a file atomically: `write(fh)` fills a temp file beside `path`, which then replaces it.

    If `write` fails (or the process is interrupted by an exception), the temp file is removed and
    `path` keeps its old content: no half-written file, and no orphan `.tmp` left behind.
    """
    with atomic_path(path) as tmp, tmp.open(mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
        write(fh)
    return Path(path)


def write_text_atomic(target: str | Path, text: str) -> Path:
    """Write text to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)
