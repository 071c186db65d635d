"""Rollouts: sample K completions per prompt into a JSONL dataset, cached by (model, prompts, sampling).

Each output row is `{"prompt", "completions": [{"text", "token_ids", "logprobs", "logprob",
"finish_reason"}], ...}` plus the prompt row's other fields (family, id). A rerun with the same model
weights, prompts, sampling parameters, backend and template is read from the cache
(`$ALIGNKIT_CACHE/rollouts`) instead of sampling again; progress shows prompts/s and tokens/s.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from alignkit.data.records import Prompt
from alignkit.generation.base import GenerationResult, Generator, SamplingParams
from alignkit.gym.tiny_model import cache_dir


def rollout_key(model_id: str, backend: str, template: str, prompts: Sequence[Prompt], params: SamplingParams) -> str:
    """Cache key: model identity (weights fingerprint or endpoint+name), backend, template, prompts, sampling."""
    payload = json.dumps([model_id, backend, template, list(prompts), asdict(params)], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def model_identity(model: str) -> str:
    """A model folder's weights fingerprint (an endpoint URL is its own identity)."""
    if model.startswith(("http://", "https://")):
        return model
    from alignkit.config import ModelSettings
    from alignkit.engine.model_loading import model_fingerprint

    return model_fingerprint(ModelSettings(path=model))


def generate_with_progress(generator: Generator, prompts: Sequence[Prompt], params: SamplingParams, chunk: int = 64,
                           desc: str = "generate") -> list[GenerationResult]:
    """Generate in chunks under a progress bar showing prompts/s and tokens/s."""
    from tqdm.auto import tqdm

    results: list[GenerationResult] = []
    tokens, start = 0, time.perf_counter()
    with tqdm(total=len(prompts), desc=desc, unit="prompt") as bar:
        for i in range(0, len(prompts), chunk):
            part = list(prompts[i : i + chunk])
            seeded = params if params.seed is None else SamplingParams(**{**asdict(params), "seed": params.seed + i})
            out = generator.generate(part, seeded)
            results += out
            tokens += sum(len(c.token_ids) for r in out for c in r.completions)
            bar.update(len(part))
            bar.set_postfix(tok_s=f"{tokens / max(time.perf_counter() - start, 1e-9):.0f}")
    return results


def result_rows(rows: Sequence[dict[str, Any]], results: Sequence[GenerationResult]) -> list[dict[str, Any]]:
    """Output rows: the input row's fields plus its completions."""
    out = []
    for row, result in zip(rows, results):
        completions = [{"text": c.text, "token_ids": c.token_ids, "logprobs": c.logprobs, "logprob": c.logprob,
                        "finish_reason": c.finish_reason} for c in result.completions]
        out.append({**row, "completions": completions})
    return out


def write_atomic(path: str | Path, write: Callable[[Any], None], mode: str = "w") -> Path:
    """Write a file atomically: `write(fh)` fills a temp file beside `path`, which then replaces it.

    If `write` fails (or the process is interrupted by an exception), the temp file is removed and
    `path` keeps its old content: no half-written file, and no orphan `.tmp` left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_jsonl(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write rows atomically (temp file + rename; the temp file is removed when a row fails to serialise)."""

    def write(fh: Any) -> None:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    return write_atomic(path, write)


def read_prompt_rows(path: str | Path, fmt: str | None = None) -> list[dict[str, Any]]:
    """Prompt rows of a data file in any prompt-bearing format (detected unless given), validated, keeping
    each row's `family` and `id` when present."""
    from alignkit.data.loaders import iter_rows, load_records
    from alignkit.data.records import to_prompt
    from alignkit.data.templates import as_messages

    records = load_records(path, fmt).records
    raw = [row for _, row in iter_rows(path)]
    keep = len(raw) == len(records)  # an adapter that filters rows breaks the 1:1 alignment; drop the extras then
    out = []
    for i, record in enumerate(records):
        extras = {k: raw[i][k] for k in ("family", "id") if keep and k in raw[i]}
        prompt = to_prompt(record).prompt
        # Chat prompts as plain dicts: Message objects do not serialise into the output or the cache.
        out.append({"prompt": prompt if isinstance(prompt, str) else as_messages(prompt), **extras})
    return out


def rollouts(model: str, prompt_rows: Sequence[dict[str, Any]], params: SamplingParams, backend: str = "auto",
             template: str = "chat", cache: bool = True, make_generator: Callable[[], Generator] | None = None,
             **options: Any) -> list[dict[str, Any]]:
    """Sample completions for every prompt row, from the cache when this exact request was sampled before."""
    from alignkit.generation.backends import choose_backend, load_generator

    if backend == "auto" and not model.startswith(("http://", "https://")):
        backend = choose_backend(model)
    prompts = [r["prompt"] for r in prompt_rows]
    key = rollout_key(model_identity(model), backend, template, prompts, params)
    cached = cache_dir() / "rollouts" / f"{key}.jsonl"
    if cache and cached.is_file():
        with cached.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]
    generator = make_generator() if make_generator else load_generator(model, backend, template, **options)
    rows = result_rows(prompt_rows, generate_with_progress(generator, prompts, params))
    if cache:
        write_jsonl(cached, rows)
    return rows
