"""Frozen signals: what a method needs from models that do not train, declared by the method, computed
once by the engine, cached on disk by content, and reused across runs and processes.

A method's `signals(recipe)` returns a list of these declarations (each names the model that produces it
by role: reference, teacher, ref_teacher, sampler, reward):

| kind | computed | where the method finds it |
|---|---|---|
| `Samples` | n completions per distinct prompt from a sampler model, through the generation interface (vLLM where `auto` picks it), with their token ids | `method.signal_values[name]`: prompt key → completion dicts; before `build_example` |
| `Rewards` | a scorer's score of every completion of a `Samples` signal (reward model, gold, judge) | `method.signal_values[name]`: prompt key → scores; before `build_example` |
| `SequenceLogps` | the method's own `sequence_outputs` under a frozen model, per example (e.g. reference log-probs) | `ref_<key>` in each example and batch, or computed live (`route`: model, adapter) |
| `TokenTopK` | per completion token, a frozen model's top-k log-probs and ids and the log of the remaining mass (k=None: the whole distribution); optionally its log-probs at another `TokenTopK` signal's ids | `method.signal_values[name]`: a memory-mapped `TopKStore`; `method.topk_rows(...)` in `collate` |

Cache keys hash the producing model's fingerprint (every weight byte, see `modeling.loading`), the
signal's settings, and the exact inputs (prompt texts and sampling settings, or every token id). The
local main process computes a miss while the others wait, then every process reads the same file.
Files are written atomically; an unreadable cache file is reported and recomputed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch

from alignkit.cache import atomic_path, cache_dir, content_key
from alignkit.config import ModelSettings
from alignkit.data.records import prompt_json, prompt_key
from alignkit.distributed import main_process_first
from alignkit.engine.contract import AlignMethod
from alignkit.generation.base import SamplingParams
from alignkit.modeling.batching import SCORING_VERSION, pad_rows, scored_count

log = logging.getLogger("alignkit")
Route = Literal["precompute", "model", "adapter"]


@dataclass(frozen=True)
class SequenceLogps:
    """Per-example values (`keys` of the method's `sequence_outputs`) under a frozen model.

    `route`: `precompute` (computed before training, cached, carried as `ref_<key>`), `model` (a frozen
    copy runs live, sharded like the policy under ZeRO-3) or `adapter` (the LoRA policy, adapter off).
    `options` are method settings that change the values (they enter the cache key)."""

    keys: tuple[str, ...]
    model: ModelSettings
    route: Route = "precompute"
    role: str = "reference"
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class TokenTopK:
    """Per completion token of the named completions of each example: a frozen model's top-k log-probs."""

    name: str
    model: ModelSettings
    completions: tuple[str, ...]
    k: int | None = 50
    role: str = "teacher"
    gather_from: str | None = None
    chunk_size: int = 256


@dataclass(frozen=True)
class Samples:
    """`params.n` completions per distinct prompt of the train and eval records, from a sampler model."""

    name: str
    model: ModelSettings
    params: SamplingParams
    backend: str = "auto"
    engine_args: tuple[tuple[str, Any], ...] = ()
    template: str | None = None
    role: str = "sampler"


@dataclass(frozen=True)
class ScorerSpec:
    """A scorer by name (`alignkit.judge.scorer.make_scorer`): reward-model, gold or judge."""

    kind: str
    path: str | None = None
    template: str = "chat"
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Rewards:
    """The scorer's score of every completion of the `Samples` signal named `samples`."""

    name: str
    samples: str
    scorer: ScorerSpec
    role: str = "reward"


Signal = SequenceLogps | TokenTopK | Samples | Rewards


@dataclass
class SignalReport:
    """What computing the signals did, one line each, for the run summary."""

    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        log.info("signals: %s", line)
        self.lines.append(line)


def _progress(total: int, desc: str, unit: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)


def _describe(model: ModelSettings) -> str:
    return model.path + (f"@{model.revision}" if model.revision else "")


# -- record-level: samples and rewards -----------------------------------------------------------------


def compute_samples(signal: Samples, records: Sequence[Any], recipe: Any, report: SignalReport) -> dict[str, list[dict[str, Any]]]:
    """Sample every distinct prompt of `records` (cached); returns prompt key -> completion dicts."""
    from alignkit.generation.rollouts import rollouts

    prompts: dict[str, Any] = {}
    for r in records:
        prompts.setdefault(prompt_key(r.prompt), r.prompt)
    rows = [{"prompt": prompt_json(p)} for p in prompts.values()]
    template = signal.template or recipe.data.template
    options = dict(signal.engine_args)
    args = (signal.model, rows, signal.params, signal.backend, template)
    kwargs = {"max_prompt_length": recipe.data.max_prompt_length}
    total = signal.params.n * len(rows)
    what = (f"{signal.name}: {signal.params.n} samples for each of {len(rows)} prompts = {total:,} completions of up to "
            f"{signal.params.max_tokens} tokens from {_describe(signal.model)} ({signal.role})")
    log.info("signals: %s: sampling unless cached", what)  # the cost, before it is paid
    t0 = time.perf_counter()
    result, computed = main_process_first(lambda: rollouts(*args, load_only=True, **kwargs),
                                          lambda: rollouts(*args, **kwargs, **options))
    report.add(f"{what}: {'computed in %.1fs' % (time.perf_counter() - t0) if computed else 'reused from the rollout cache'}")
    return {prompt_key(row["prompt"]): row["completions"] for row in result}


def compute_rewards(signal: Rewards, samples: dict[str, list[dict[str, Any]]], sample_signal: Samples,
                    report: SignalReport) -> dict[str, list[float]]:
    """Score every sampled completion (cached by the scorer's identity and the samples)."""
    from alignkit.judge.scorer import make_scorer, scorer_identity
    from alignkit.scoring.base import score_groups

    spec = signal.scorer
    holder: dict[str, Any] = {}

    def scorer() -> Any:
        if "scorer" not in holder:
            holder["scorer"] = make_scorer(spec.kind, spec.path, spec.template, **dict(spec.options))
        return holder["scorer"]

    texts = {k: [c["text"] for c in cs] for k, cs in samples.items()}
    identity = scorer_identity(spec.kind, spec.path, spec.template, **dict(spec.options)) or scorer().identity  # no load on a hit
    key = content_key("rewards", identity, sorted((k, v) for k, v in texts.items()))
    path = cache_dir() / "signals" / "rewards" / f"{key}.json"

    def load() -> dict[str, list[float]] | None:
        return _read_json(path)

    def compute() -> dict[str, list[float]]:
        keys = list(texts)
        prompts = [json.loads(k[len("messages:"):]) if k.startswith("messages:") else k for k in keys]
        scores = score_groups(scorer(), prompts, [texts[k] for k in keys], progress=True, desc=f"score {signal.name}")
        value = {k: [float(x) for x in s] for k, s in zip(keys, scores)}
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(value))
        return value

    t0 = time.perf_counter()
    value, computed = main_process_first(load, compute)
    n = sum(len(v) for v in value.values())
    report.add(f"{signal.name}: {spec.kind} scores of {n} completions of {signal.samples} "
               f"{'computed in %.1fs' % (time.perf_counter() - t0) if computed else 'reused'} ({path})")
    return value


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("cache file %s is unreadable (%s); computing it again", path, err)
        return None


# -- example-level: sequence values ------------------------------------------------------------------

TOKEN_FIELDS_SUFFIX = "_ids"


def examples_digest(examples: Sequence[dict[str, Any]]) -> str:
    """Hash of every token-id field of every example, in order."""
    import hashlib

    h = hashlib.sha256()
    for ex in examples:
        for key in sorted(k for k in ex if k.endswith(TOKEN_FIELDS_SUFFIX)):
            h.update(key.encode())
            value = ex[key]
            if value and isinstance(value[0], (list, tuple)):  # several sequences (e.g. D²O's K samples)
                for row in value:
                    h.update(np.asarray(row, dtype=np.int64).tobytes())
                    h.update(b",")
            else:
                h.update(np.asarray(value, dtype=np.int64).tobytes())
            h.update(b"|")
    return h.hexdigest()


def _load_frozen(settings: ModelSettings) -> Any:
    """A reference or teacher for precomputing, placed by the frozen-model rule (`modeling.loading.load_frozen`)."""
    from alignkit.modeling.loading import load_frozen

    return load_frozen(settings)


@torch.no_grad()
def sequence_values(model: Any, examples: Sequence[dict[str, Any]], method: AlignMethod, keys: Sequence[str], batch_size: int,
                    desc: str = "reference") -> dict[str, torch.Tensor]:
    """`method.sequence_outputs(model, batch)[key]` over all examples in order, stacked per key."""
    model.eval()
    device = next(model.parameters()).device
    acc: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    with _progress(len(examples), desc, "example") as bar:
        for start in range(0, len(examples), batch_size):
            part = list(examples[start : start + batch_size])
            batch = {k: v.to(device) for k, v in method.collate(part).items() if isinstance(v, torch.Tensor)}
            out = method.sequence_outputs(model, batch)
            for k in keys:
                acc[k].append(out[k].float().cpu())
            bar.update(len(part))
    return {k: torch.cat(v) for k, v in acc.items()}


def compute_sequence_logps(signal: SequenceLogps, method: AlignMethod, examples: list[dict[str, Any]], batch_size: int,
                           report: SignalReport) -> None:
    """Attach `ref_<key>` to every example, computing and caching the values on a miss."""
    from alignkit.modeling.loading import model_fingerprint, placed_settings

    if not examples:
        return
    key = content_key("sequence", SCORING_VERSION, model_fingerprint(placed_settings(signal.model)), type(method).__module__, list(signal.keys),
                      list(signal.options), examples_digest(examples))
    path = cache_dir() / "signals" / "sequence" / f"{key}.pt"

    def load() -> dict[str, torch.Tensor] | None:
        try:
            values = torch.load(path, weights_only=True)
        except FileNotFoundError:
            return None
        except Exception as err:  # noqa: BLE001 - a truncated or foreign file: recompute, and say so
            log.warning("cache file %s is unreadable (%s); computing it again", path, err)
            return None
        if set(values) != set(signal.keys) or any(len(v) != len(examples) for v in values.values()):
            log.warning("cache file %s does not match these examples; computing it again", path)
            return None
        return values

    def compute() -> dict[str, torch.Tensor]:
        model = _load_frozen(signal.model)
        values = sequence_values(model, examples, method, signal.keys, batch_size, desc=f"{signal.role} log-probs")
        with atomic_path(path) as tmp:
            torch.save(values, tmp)
        return values

    t0 = time.perf_counter()
    values, computed = main_process_first(load, compute)
    for k, v in values.items():
        for ex, x in zip(examples, v.tolist()):
            ex[f"ref_{k}"] = x
    state = f"computed for {len(examples)} examples in {time.perf_counter() - t0:.1f}s" if computed else "reused"
    report.add(f"{signal.role} {', '.join(signal.keys)} by {_describe(signal.model)}: {state} ({path})")


# -- example-level: per-token top-k ----------------------------------------------------------------


class TopKStore:
    """A memory-mapped per-token top-k signal: one [T_i, k] block per (example, completion) sequence."""

    FILES = ("ids", "logps", "tail", "offsets")

    def __init__(self, folder: Path, completions: Sequence[str]) -> None:
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.completions = tuple(completions)
        self.arrays = {name: np.load(self.folder / f"{name}.npy", mmap_mode="r") for name in self.FILES + ("gathered",)
                       if (self.folder / f"{name}.npy").is_file()}
        self.offsets = np.asarray(self.arrays["offsets"])

    def check(self, sequences: int, tokens: int, k: int | None) -> None:
        """Raise ValueError unless the store holds `sequences` sequences and `tokens` tokens at this k."""
        if len(self.offsets) != sequences + 1 or int(self.offsets[-1]) != tokens or self.meta.get("k") != k:
            raise ValueError(f"holds {len(self.offsets) - 1} sequences / {int(self.offsets[-1])} tokens at k={self.meta.get('k')}, "
                             f"expected {sequences} / {tokens} at k={k}")

    def block(self, example_index: int, completion: str) -> dict[str, np.ndarray]:
        """The arrays of one sequence: ids/logps (and gathered) [T, k], tail [T]."""
        s = example_index * len(self.completions) + self.completions.index(completion)
        lo, hi = int(self.offsets[s]), int(self.offsets[s + 1])
        return {name: arr[lo:hi] for name, arr in self.arrays.items() if name != "offsets"}

    def rows(self, pairs: Sequence[tuple[int, str]]) -> dict[str, torch.Tensor]:
        """Padded tensors for (example index, completion) rows in the given order, in the completion-matrix
        layout of `modeling.logprobs.completion_matrix`: ids [S, T, k] (int64), logps [S, T, k] and tail
        [S, T] (fp32), gathered [S, T, k] when stored, and valid [S, T]."""
        blocks = [self.block(i, c) for i, c in pairs]
        width = max((len(b["logps"]) for b in blocks), default=0)
        k = blocks[0]["logps"].shape[1] if blocks else 0
        out = {"logps": torch.zeros(len(blocks), width, k), "tail": torch.full((len(blocks), width), float("-inf")),
               "valid": torch.zeros(len(blocks), width, dtype=torch.bool)}
        if "ids" in self.arrays:
            out["ids"] = torch.zeros(len(blocks), width, k, dtype=torch.long)
        if "gathered" in self.arrays:
            out["gathered"] = torch.zeros(len(blocks), width, k)
        for s, b in enumerate(blocks):
            t = len(b["logps"])
            out["logps"][s, :t] = torch.tensor(np.asarray(b["logps"], dtype=np.float32))
            out["tail"][s, :t] = torch.tensor(np.asarray(b["tail"], dtype=np.float32))
            out["valid"][s, :t] = True
            if "ids" in out:
                out["ids"][s, :t] = torch.tensor(np.asarray(b["ids"], dtype=np.int64))
            if "gathered" in out:
                out["gathered"][s, :t] = torch.tensor(np.asarray(b["gathered"], dtype=np.float32))
        return out


def _topk_sequences(method: AlignMethod, examples: Sequence[dict[str, Any]], completions: Sequence[str]) -> list[tuple[list[int], list[int]]]:
    rows = []
    for ex in examples:
        named = method.sequences(ex)
        for c in completions:
            if c not in named:
                raise KeyError(f"{type(method).__module__}: sequences(example) has no completion {c!r} (has {sorted(named)})")
            rows.append(named[c])
    return rows


@torch.no_grad()
def _fill_topk(model: Any, rows: list[tuple[list[int], list[int]]], signal: TokenTopK, arrays: dict[str, np.ndarray],
               offsets: np.ndarray, batch_size: int, pad_id: int, other: TopKStore | None) -> None:
    from alignkit.modeling.logprobs import batch_hidden_states, chunked_head, topk_logprobs

    device = next(model.parameters()).device
    with _progress(len(rows), f"{signal.role} top-{signal.k or 'V'}", "seq") as bar:
        for start in range(0, len(rows), batch_size):
            part = rows[start : start + batch_size]
            batch = {k: v.to(device) for k, v in pad_rows(part, pad_id).items()}
            hidden, head, mask = batch_hidden_states(model, batch)
            lo, hi = int(offsets[start]), int(offsets[start + len(part)])
            if other is not None:  # this model's log-probs at the other signal's ids, position by position
                at = torch.zeros(*mask.shape, other.arrays["ids"].shape[1], dtype=torch.long, device=device)
                at[mask] = torch.tensor(np.asarray(other.arrays["ids"][lo:hi], dtype=np.int64), device=device)
                gathered = chunked_head(hidden, head, lambda z, ids: (z - torch.logsumexp(z, -1, keepdim=True)).gather(-1, ids),
                                        at, chunk_size=signal.chunk_size)
                arrays["gathered"][lo:hi] = gathered[mask].cpu().numpy().astype(np.float16)
            if signal.k:
                result = chunked_head(hidden, head, lambda z: topk_logprobs(z, signal.k), chunk_size=signal.chunk_size)
            else:
                result = (chunked_head(hidden, head, lambda z: z - torch.logsumexp(z, -1, keepdim=True), chunk_size=signal.chunk_size),)
            arrays["logps"][lo:hi] = result[0][mask].cpu().numpy().astype(np.float16)
            if signal.k:
                arrays["ids"][lo:hi] = result[1][mask].cpu().numpy().astype(np.int32)
                arrays["tail"][lo:hi] = result[2][mask].cpu().numpy().astype(np.float32)
            else:
                arrays["tail"][lo:hi] = float("-inf")
            bar.update(len(part))


def compute_token_topk(signal: TokenTopK, method: AlignMethod, examples: list[dict[str, Any]], batch_size: int,
                       report: SignalReport) -> TopKStore:
    """The signal's store over `examples` (train then eval, indexed by `example_index`), computed on a miss."""
    from alignkit.modeling.loading import model_fingerprint, placed_settings

    rows = _topk_sequences(method, examples, signal.completions)
    lengths = np.asarray([scored_count(p, c) for p, c in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = int(offsets[-1])
    digest = examples_digest([{"p_ids": p, "c_ids": c} for p, c in rows])
    other = method.signal_values.get(signal.gather_from) if signal.gather_from else None
    if signal.gather_from and not isinstance(other, TopKStore):
        raise ValueError(f"TokenTopK {signal.name!r}: gather_from={signal.gather_from!r} must name an earlier TokenTopK signal")
    key = content_key("topk", SCORING_VERSION, model_fingerprint(placed_settings(signal.model)), signal.k, digest,
                      other.meta["key"] if other is not None else None)
    folder = cache_dir() / "signals" / "topk" / key

    def load() -> TopKStore | None:
        if not (folder / "meta.json").is_file():
            return None
        try:
            store = TopKStore(folder, signal.completions)
            store.check(len(rows), tokens, signal.k)
            return store
        except Exception as err:  # noqa: BLE001 - truncated, foreign or mismatched: recompute, and say so
            log.warning("cache folder %s is unreadable (%s); computing it again", folder, err)
            return None

    def compute() -> TopKStore:
        model = _load_frozen(signal.model)
        vocab = model.get_output_embeddings().weight.shape[0]
        width = signal.k or vocab
        with atomic_path(folder, directory=True) as tmp:
            arrays = {"logps": np.lib.format.open_memmap(tmp / "logps.npy", "w+", np.float16, (tokens, width)),
                      "tail": np.lib.format.open_memmap(tmp / "tail.npy", "w+", np.float32, (tokens,))}
            if signal.k:
                arrays["ids"] = np.lib.format.open_memmap(tmp / "ids.npy", "w+", np.int32, (tokens, width))
            if other is not None:
                arrays["gathered"] = np.lib.format.open_memmap(tmp / "gathered.npy", "w+", np.float16, (tokens, other.meta["k"]))
            np.save(tmp / "offsets.npy", offsets)
            _fill_topk(model, rows, signal, arrays, offsets, batch_size, method.pad_id, other)
            for arr in arrays.values():
                arr.flush()
            del arrays
            meta = {"key": key, "k": signal.k, "vocab": vocab, "sequences": len(rows), "tokens": tokens,
                    "completions": list(signal.completions), "model": _describe(signal.model), "gather_from": signal.gather_from}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        store = load()
        assert store is not None
        return store

    t0 = time.perf_counter()
    store, computed = main_process_first(load, compute)
    state = f"computed for {len(rows)} sequences ({tokens} tokens) in {time.perf_counter() - t0:.1f}s" if computed else "reused"
    report.add(f"{signal.name}: {signal.role} top-{signal.k or 'V'} by {_describe(signal.model)}: {state} ({folder})")
    return store
