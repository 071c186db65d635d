"""`alignkit data stats`: counts, skipped rows and length statistics of a data file."""

from __future__ import annotations

import collections
import statistics
from pathlib import Path
from typing import Any

from alignkit.data.loaders import load_records
from alignkit.data.records import JudgeItem, JudgmentTriple, Message, UnpairedPreference


def _text_length(value: Any) -> int | None:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list) and value and isinstance(value[0], Message):
        return sum(len(m.content) for m in value)
    return None


def data_stats(files: list[str | Path], format: str | None = None) -> dict[str, Any]:
    """Rows, loaded/skipped/filtered/duplicate counts, per-field character lengths and label balance."""
    result = load_records(files, format, skip_invalid=True)
    lengths: dict[str, list[int]] = collections.defaultdict(list)
    extra: dict[str, Any] = {}
    for record in result.records:
        for name, value in record:
            n = _text_length(value)
            if n is not None and name != "kind":
                lengths[name].append(n)
    records = result.records
    if records and isinstance(records[0], JudgmentTriple):
        extra["positives"] = sum(r.is_positive for r in records)
        extra["negatives"] = len(records) - extra["positives"]
    if records and isinstance(records[0], UnpairedPreference):
        extra["desirable"] = sum(r.label for r in records)
        extra["undesirable"] = len(records) - extra["desirable"]
    if records and isinstance(records[0], JudgeItem):
        extra["human_labels"] = dict(collections.Counter(str(r.human_label) for r in records))
        extra["models"] = dict(collections.Counter(str(r.model) for r in records))
    if records and hasattr(records[0], "prompt") and not isinstance(records[0], (JudgmentTriple, JudgeItem)):
        extra["chat_prompts"] = sum(isinstance(r.prompt, list) for r in records)
    return {
        "files": [str(f) for f in files],
        "format": result.format,
        "rows": result.rows,
        "loaded": len(records),
        "skipped": dict(result.skipped),
        "filtered": dict(result.filtered),
        "duplicates": result.duplicates,
        "chars": {
            k: {"min": min(v), "mean": round(statistics.fmean(v), 1), "max": max(v)} for k, v in lengths.items()
        },
        **extra,
    }


def format_stats(stats: dict[str, Any]) -> Any:
    """A rich table of `data_stats` output."""
    from rich.table import Table

    table = Table(title=f"{', '.join(stats['files'])} ({stats['format']})")
    table.add_column("field")
    table.add_column("min chars", justify="right")
    table.add_column("mean chars", justify="right")
    table.add_column("max chars", justify="right")
    for field, s in stats["chars"].items():
        table.add_row(field, str(s["min"]), str(s["mean"]), str(s["max"]))
    lines = [f"{stats['loaded']} of {stats['rows']} rows loaded"]
    for key in ("skipped", "filtered"):
        if stats[key]:
            lines.append(f"{key}: " + ", ".join(f"{n}× {r}" for r, n in stats[key].items()))
    if stats.get("duplicates"):
        lines.append(f"exact duplicates: {stats['duplicates']} (kept)")
    for key in ("positives", "negatives", "desirable", "undesirable", "chat_prompts", "human_labels", "models"):
        if key in stats:
            lines.append(f"{key}: {stats[key]}")
    table.caption = " | ".join(lines)
    return table
