"""Rollouts: sample K completions per prompt into a JSONL dataset, cached by (model, prompts, sampling).

Each output row is `{"prompt", "completions": [{"text", "token_ids", "logprobs", "logprob",
"finish_reason"}], ...}` plus the prompt row's other fields (family, id). A rerun with the same model
weights, prompts, sampling parameters, backend and template is read from the cache
(`$ALIGNKIT_CACHE/rollouts`) instead of sampling again; progress shows prompts/s and tokens/s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from alignkit.cache import cache_dir, write_atomic
from alignkit.data.records import Prompt, prompt_json
from alignkit.data.templates import template_identity
from alignkit.generation.base import GenerationResult, Generator, SamplingParams

log = logging.getLogger("alignkit")


def rollout_key(model_id: str, backend: str, template: str, prompts: Sequence[Prompt], params: SamplingParams,
                max_prompt_length: int | None = None) -> str:
    """Cache key: model identity (weights fingerprint or endpoint+name), backend, template (with a hash of the
    text a named prefix such as URIAL's stands for), prompt truncation, prompts, sampling."""
    sampling = asdict(params)
    if sampling["repetition_penalty"] == 1.0:  # the default leaves keys written before the field existed valid
        del sampling["repetition_penalty"]
    payload = json.dumps([model_id, backend, template_identity(template), max_prompt_length, [prompt_json(p) for p in prompts],
                          sampling], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def model_identity(model: Any) -> str:
    """A model's fingerprint (a folder, `tiny:<size>` or `ModelSettings`); an endpoint URL is its own identity."""
    from alignkit.config import ModelSettings
    from alignkit.modeling.loading import model_fingerprint

    if isinstance(model, ModelSettings):
        return model_fingerprint(model)
    if model.startswith(("http://", "https://")):
        return model
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
        out.append({**row, "prompt": prompt_json(row["prompt"]), "completions": completions})
    return out


def write_jsonl(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write rows atomically (temp file + rename; the temp file is removed when a row fails to serialise)."""

    def write(fh: Any) -> None:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    return write_atomic(path, write)


def read_jsonl(path: str | Path) -> list[dict[str, Any]] | None:
    """Rows of a cached JSONL file, or None (with a warning naming the file) when it cannot be read."""
    try:
        with Path(path).open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("cache file %s is unreadable (%s); computing it again", path, err)
        return None


def read_prompt_rows(path: str | Path, fmt: str | None = None) -> list[dict[str, Any]]:
    """Prompt rows of a data file in any prompt-bearing format (detected unless given), validated, keeping
    each row's `family` and `id` when present."""
    from alignkit.data.loaders import iter_rows, load_records
    from alignkit.data.records import to_prompt
    records = load_records(path, fmt).records
    raw = [row for _, row in iter_rows(path)]
    keep = len(raw) == len(records)  # an adapter that filters rows breaks the 1:1 alignment; drop the extras then
    out = []
    for i, record in enumerate(records):
        extras = {k: raw[i][k] for k in ("family", "id") if keep and k in raw[i]}
        out.append({"prompt": prompt_json(to_prompt(record).prompt), **extras})
    return out


def rollouts(model: Any, prompt_rows: Sequence[dict[str, Any]], params: SamplingParams, backend: str = "auto",
             template: str = "chat", cache: bool = True, make_generator: Callable[[], Generator] | None = None,
             max_prompt_length: int | None = None, load_only: bool = False, **options: Any) -> list[dict[str, Any]] | None:
    """Sample completions for every prompt row, from the cache when this exact request was sampled before.

    `model` is a folder, `tiny:<size>`, `ModelSettings` (the recipe's load settings) or an endpoint URL;
    prompts are left-truncated to `max_prompt_length` tokens exactly as in training. With `load_only`
    a cache miss returns None instead of sampling."""
    from alignkit.config import ModelSettings
    from alignkit.generation.backends import choose_backend, load_generator

    remote = isinstance(model, str) and model.startswith(("http://", "https://"))
    if backend == "auto" and not remote:
        backend = choose_backend(model.path if isinstance(model, ModelSettings) else model)
    prompts = [r["prompt"] for r in prompt_rows]
    key = rollout_key(model_identity(model), backend, template, prompts, params, max_prompt_length)
    cached = cache_dir() / "rollouts" / f"{key}.jsonl"
    if cache:
        rows = read_jsonl(cached)
        if rows is not None and len(rows) == len(prompt_rows):
            return rows
    if load_only:
        return None
    if make_generator:
        generator = make_generator()
    else:
        if max_prompt_length is not None and not remote:
            options["max_prompt_length"] = max_prompt_length
        generator = load_generator(model, backend, template, **options)
    rows = result_rows(prompt_rows, generate_with_progress(generator, prompts, params))
    if cache:
        write_jsonl(cached, rows)
    return rows


def static_prefix_tokens(model: str, template: str) -> int | None:
    """How many tokens a template's static prefix (URIAL's in-context examples) takes under `model`'s tokenizer,
    counted as the prompt truncation counts it (None for a template without one). `max_prompt_length` must
    exceed it: it bounds the whole prompt and the prefix is never cut."""
    from alignkit.data.templates import static_prefix

    if static_prefix(template) is None:
        return None
    from alignkit.config import ModelSettings
    from alignkit.data.tokenization import adds_special_tokens, prefixed_text_ids
    from alignkit.modeling.loading import load_tokenizer

    tokenizer = load_tokenizer(ModelSettings(path=model))
    _, length = prefixed_text_ids(tokenizer, static_prefix(template), template, adds_special_tokens(template))
    return length
