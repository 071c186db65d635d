"""Read JSONL, JSON, Parquet, CSV, saved `datasets` folders and dataset repositories (`hf:ORG/NAME`, see
`alignkit.data.sources`) into validated records.

Every row keeps its location (file and line for JSONL/CSV, file or dataset split and row for the others) so a
bad record fails with a message naming the source, the line, the field and what was expected. With
`skip_invalid=True` bad rows are skipped instead, and counted by reason.
"""

from __future__ import annotations

import collections
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from pydantic import ValidationError

from alignkit.data.adapters import ADAPTERS, detect_format
from alignkit.data.errors import DataError
from alignkit.data.records import Record
from alignkit.data.source_spec import HUB_PREFIX, DataSource, apply_columns, as_source, iter_hub_rows, source_label

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


@dataclass
class LoadResult:
    """Records that loaded, plus counts of rows skipped (invalid) and filtered (by the adapter's rule).

    Exact-duplicate records are kept (a dataset may repeat a pair on purpose) but counted in
    `duplicates`, with the first repeat's location in `examples["duplicate"]`.
    """

    records: list[Record]
    format: str
    rows: int = 0
    skipped: collections.Counter = field(default_factory=collections.Counter)
    filtered: collections.Counter = field(default_factory=collections.Counter)
    examples: dict[str, str] = field(default_factory=dict)
    duplicates: int = 0
    split: int = 0  # rows the adapter turned into several records (a preference pair into its two halves)

    def summary(self) -> str:
        """One line: how many rows loaded, were skipped (and why), were filtered, and repeat an earlier record."""
        parts = [f"{len(self.records)} of {self.rows} rows loaded as {self.format}"]
        if self.split:
            parts = [f"{len(self.records)} records from {self.rows} rows as {self.format} ({self.split} rows split into several records)"]
        if self.skipped:
            parts.append(f"{sum(self.skipped.values())} invalid skipped ({self.skip_reasons()})")
        if self.filtered:
            parts.append("filtered: " + "; ".join(f"{n}× {r}" for r, n in self.filtered.most_common()))
        if self.duplicates:
            parts.append(f"{self.duplicates} exact duplicates of earlier records (kept)")
        return ", ".join(parts)

    def skip_reasons(self) -> str:
        """The skip reasons with their counts, most common first."""
        return "; ".join(f"{n}× {r}" for r, n in self.skipped.most_common())


def iter_rows(path: str | Path | DataSource) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (location, row) pairs from one file, saved `datasets` folder or dataset repository (`hf:...` or a
    `DataSource`, whose column mapping is applied)."""
    if isinstance(path, DataSource) or str(path).startswith(HUB_PREFIX):
        src = as_source(path)
        rows = iter_hub_rows(src) if src.is_hub else iter_rows(src.path)
        for loc, row in rows:
            yield loc, apply_columns(row, src.columns)
        return
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        yield from _iter_dataset_folder(path)
        return
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _iter_jsonl(path)
    elif suffix == ".json":
        yield from _iter_json(path)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield f"{path}: row {i}", row
    elif suffix == ".csv":
        yield from _iter_csv(path)
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(SUFFIXES)} or a saved datasets folder")


def _not_utf8(err: UnicodeDecodeError, column_offset: int = 0) -> str:
    byte = err.object[err.start : err.start + 1].hex()
    return f"not valid UTF-8 (byte 0x{byte} at column {column_offset + err.start + 1}); re-encode the file as UTF-8"


def _read_text(path: Path) -> str:
    """The whole file as text; a UTF-8 BOM is dropped, invalid UTF-8 is a DataError naming the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        lineno = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}:{lineno}: {_not_utf8(err, -line_start)}") from None


def _iter_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    # Read bytes and decode line by line, so a bad byte names its line (and skip_invalid can skip it).
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            loc = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield loc, _Unreadable(_not_utf8(err))
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield loc, _Unreadable(f"not valid JSON ({err.msg} at column {err.colno})")
                continue
            yield loc, row if isinstance(row, dict) else _Unreadable(f"expected a JSON object, got {type(row).__name__}")


def _iter_json(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of objects, got {type(data).__name__}")
    for i, row in enumerate(data, start=1):
        yield f"{path}: item {i}", row if isinstance(row, dict) else _Unreadable(f"expected a JSON object, got {type(row).__name__}")


def _iter_csv(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    # csv.DictReader files cells beyond the header under the key None: such a row is invalid, never trimmed.
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    for row in reader:
        loc = f"{path}:{reader.line_num}"
        if None in row:
            extra = len(row[None])
            yield loc, _Unreadable(f"{len(reader.fieldnames or ()) + extra} cells but the header has "
                                   f"{len(reader.fieldnames or ())} columns (an unquoted comma?)")
            continue
        # Structured cells (message lists, nulls) are stored as JSON text in CSV.
        yield loc, {k: _csv_cell(v) for k, v in row.items()}


def _csv_cell(value: str | None) -> Any:
    if value is None or value == "":
        return None
    if value[:1] in "[{" or value in ("null", "true", "false"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _iter_dataset_folder(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise DataError(f"{path}: not a saved datasets folder ({err})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise DataError(f"{path}: a DatasetDict needs a 'train' split, found {list(ds)}")
        ds = ds["train"]
    for i, row in enumerate(ds, start=1):
        yield f"{path}: row {i}", row


class _Unreadable(dict):
    """A row that could not be parsed; carries the reason to the validation step."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


def describe_error(err: Exception) -> str:
    """A short 'field X: what was expected' text for a validation failure."""
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            msg = "required field is missing"
        return f"field {where!r}: {msg}" if first["loc"] else msg
    return str(err)


def load_records(paths: str | Path | DataSource | list[str | Path | DataSource], format: str | None = None,
                 skip_invalid: bool = False) -> LoadResult:
    """Load and validate records from one or more files or dataset repositories in the given (or detected) format."""
    if not isinstance(paths, (list, tuple)):
        paths = [paths]
    result = LoadResult(records=[], format=format or "")
    adapter = ADAPTERS.get(format) if format else None
    if format and adapter is None:
        raise DataError(f"unknown data format {format!r}; known: {', '.join(sorted(ADAPTERS))}")
    seen: set[str] = set()
    for path in paths:
        for loc, row in iter_rows(path):
            result.rows += 1
            try:
                if isinstance(row, _Unreadable):
                    raise ValueError(row.reason)
                if adapter is None:
                    adapter = ADAPTERS[detect_format(row)]
                    result.format = adapter.name
                record = adapter.convert(row)
            except (ValueError, TypeError) as err:
                reason = describe_error(err)
                if "required field is missing" in reason and row:  # a column mapping or format mismatch: show what is there
                    reason += f"; the row has {', '.join(map(str, row))}"
                if not skip_invalid:
                    raise DataError(f"{loc}: {reason} (format {adapter.name if adapter else format})") from None
                key = reason.split(":")[0] if reason.startswith("field") else reason
                result.skipped[key] += 1
                result.examples.setdefault(key, f"{loc}: {reason}")
                continue
            if record is None:
                result.filtered[adapter.filter_reason or "filtered"] += 1
                continue
            if isinstance(record, list) and len(record) > 1:
                result.split += 1
            for one in record if isinstance(record, list) else [record]:  # an adapter may split a row (a pair into halves)
                identity = one.model_dump_json()
                if identity in seen:
                    result.duplicates += 1
                    result.examples.setdefault("duplicate", f"{loc}: exact duplicate of an earlier record")
                seen.add(identity)
                result.records.append(one)
    names = ", ".join(source_label(p) for p in paths)
    if result.rows == 0:
        raise DataError(f"{names}: no rows found")
    if not result.records:  # fail here, not in a trainer's empty batch much later
        why = []
        if result.skipped:
            why.append(f"{sum(result.skipped.values())} invalid: {result.skip_reasons()}")
        if result.filtered:
            why.append(f"{sum(result.filtered.values())} filtered: " + "; ".join(f"{n}× {r}" for r, n in result.filtered.most_common()))
        example = next((e for k, e in result.examples.items() if k != "duplicate"), None)
        raise DataError(f"no valid records in {names}: {result.rows} rows, {', '.join(why)}"
                        + (f" (e.g. {example})" if example else ""))
    return result
