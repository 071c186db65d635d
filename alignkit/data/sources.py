"""Where records come from: data files, dataset repositories (on the Hugging Face Hub or laid out like one in a
local folder), and weighted mixtures of several sources.

A recipe's `data.train` / `data.eval` entry is a file path, a dataset repository in short form, or a mapping:

    data/gym/train_preference.jsonl                      # a JSONL/JSON/Parquet/CSV file or a saved datasets folder
    hf:HuggingFaceH4/ultrafeedback_binarized/train_prefs  # hf:ORG/NAME[:CONFIG][@REVISION][/SPLIT]
    {path: "hf:Anthropic/hh-rlhf", data_dir: helpful-base, split: test}
    {path: "hf:argilla/dpo-mix-7k", split: train, columns: {chosen: chosen, rejected: rejected}, weight: 2}

A repository is read with `datasets.load_dataset` (its download cache, its offline mode: with `HF_HUB_OFFLINE=1`
only a cached copy loads); a local folder after `hf:` (`hf:./my_repo`) goes through the same code path, its
splits named by its files (`data/train-*.parquet`, `data/test.jsonl`, ...). `columns` maps the fields the
format reads to the dataset's columns (`{field: column}`); other columns stay as they are. Every row then goes
through the same adapters and validation as a file's, with a location such as `hf:argilla/dpo-mix-7k/train: row 12`.

Mixtures (`weight` or `max_records` on several sources) are drawn without replacement, deterministically per
seed: `max_records: N` keeps N records of that source; the sources with a `weight` share the records their
weights give them, at the largest size that needs no record twice; a source with neither keeps all its records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from alignkit.data.loaders import load_records
from alignkit.data.source_spec import (  # noqa: F401  (the entry's spec and checks, re-exported: one import for callers)
    HUB_PREFIX, DataSource, apply_columns, as_source, check_source, iter_hub_rows, looks_local, parse_source, source_label,
)


# -- mixtures -----------------------------------------------------------------------------------------------------


@dataclass
class SourceReport:
    """How many records one source gave and how many the mixture used."""

    source: str
    loaded: int
    used: int
    weight: float | None = None
    max_records: int | None = None
    summary: str = ""

    def to_json(self) -> dict[str, Any]:
        """A plain dict for the run summary."""
        return {"source": self.source, "records": self.used, "loaded": self.loaded, "weight": self.weight,
                "max_records": self.max_records}


@dataclass
class Mixture:
    """Records of every source of one list (`data.train` or `data.eval`) after the mixture's selection."""

    records: list[Any]
    sources: list[SourceReport] = field(default_factory=list)
    seed: int = 0

    def summary(self) -> str:
        """The load summaries, and the mix (records per source) when there are several sources or a selection."""
        if len(self.sources) == 1 and self.sources[0].used == self.sources[0].loaded:
            return self.sources[0].summary
        loads = "; ".join(f"{s.source}: {s.summary}" for s in self.sources)
        return f"{loads}; mix (seed {self.seed}): {self.mix_line()}"

    def mix_line(self) -> str:
        """Records used per source, with their share of the whole."""
        total = sum(s.used for s in self.sources) or 1
        parts = []
        for s in self.sources:
            how = f", weight {s.weight:g}" if s.weight is not None else f", max_records {s.max_records}" if s.max_records else ""
            parts.append(f"{s.source} {s.used} of {s.loaded} ({100 * s.used / total:.0f}%{how})")
        return ", ".join(parts)


def mixture_counts(sizes: Sequence[int], weights: Sequence[float | None], limits: Sequence[int | None]) -> list[int]:
    """Records to take from each source: all of a plain source, `min(size, limit)` of a limited one, and for the
    weighted ones shares proportional to their weights at the largest total that repeats no record."""
    counts = [min(n, m) if m is not None else n for n, m in zip(sizes, limits)]
    weighted = [i for i, w in enumerate(weights) if w is not None]
    if weighted:
        total_weight = sum(weights[i] for i in weighted)
        total = min(sizes[i] * total_weight / weights[i] for i in weighted)
        for i in weighted:
            counts[i] = min(sizes[i], round(total * weights[i] / total_weight))
    return counts


def select_indices(size: int, count: int, seed: int, position: int) -> list[int]:
    """`count` of `range(size)` without replacement, in their original order; the same for the same seed."""
    if count >= size:
        return list(range(size))
    import numpy as np

    rng = np.random.default_rng([seed, position])
    return sorted(int(i) for i in rng.choice(size, count, replace=False))


def load_sources(entries: Sequence[str | DataSource], format: str | None, skip_invalid: bool = False, seed: int = 0,
                 default_split: str = "train") -> Mixture:
    """Load every source (each with its own format, counts and locations) and apply the mixture's selection."""
    loaded = []
    for entry in entries:
        src = entry if isinstance(entry, DataSource) else parse_source(entry, default_split)
        result = load_records([src], (src.format if isinstance(src, DataSource) else None) or format, skip_invalid=skip_invalid)
        loaded.append((src, result))
    sources = [s if isinstance(s, DataSource) else DataSource(path=s) for s, _ in loaded]
    counts = mixture_counts([len(r.records) for _, r in loaded], [s.weight for s in sources], [s.max_records for s in sources])
    mixture = Mixture(records=[], seed=seed)
    for position, ((_, result), src, count) in enumerate(zip(loaded, sources, counts)):
        keep = select_indices(len(result.records), count, seed, position)
        mixture.records += [result.records[i] for i in keep]
        mixture.sources.append(SourceReport(src.label(), len(result.records), len(keep), src.weight, src.max_records,
                                            result.summary()))
    return mixture
