"""What one `data.train` / `data.eval` entry is (a file, a dataset repository, or a mapping with a column map,
weight or record count: `DataSource`), how it is checked before anything loads, and how a repository's rows are
read. `alignkit.data.sources` builds mixtures of several entries on top of this (see its docstring)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from alignkit.data.errors import DataError

HUB_PREFIX = "hf:"
_SHORT_FORM = re.compile(r"^(?P<repo>[^/:@\s]+/[^/:@\s]+)(?::(?P<config>[^/@\s]+))?(?:@(?P<revision>[^/\s]+))?(?:/(?P<split>[^/\s]+))?$")
_HUB_FIELDS = ("config", "revision", "split", "data_dir")


class DataSource(BaseModel):
    """One `data.train` / `data.eval` entry in mapping form."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="a data file or saved datasets folder, or hf:ORG/NAME (a hub dataset repository) "
                      "or hf:FOLDER (a local folder laid out like one); hf: names take the short form "
                      "hf:ORG/NAME[:CONFIG][@REVISION][/SPLIT]")
    config: str | None = Field(None, description="the dataset's configuration (subset) name (hf: only)")
    split: str | None = Field(None, description="the split to read (hf: only); default train for data.train, test for data.eval")
    revision: str | None = Field(None, description="a branch, tag or commit of the repository (hf: only); pin one for reproducible data")
    data_dir: str | None = Field(None, description="a folder inside the repository, e.g. helpful-base of Anthropic/hh-rlhf (hf: only)")
    columns: dict[str, str] = Field(default_factory=dict, description="{field the format reads: the dataset's column}; "
                                    "other columns are kept")
    format: str | None = Field(None, description="this source's data format, when it differs from data.format")
    weight: float | None = Field(None, gt=0, description="relative share of the mixture among the weighted sources")
    max_records: int | None = Field(None, gt=0, description="use this many of the source's records (a seeded random subset)")

    @model_validator(mode="after")
    def _consistent(self) -> "DataSource":
        if self.weight is not None and self.max_records is not None:
            raise ValueError("give a source either weight or max_records, not both")
        if not self.is_hub:
            given = [f for f in _HUB_FIELDS if getattr(self, f) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} apply to dataset repositories (hf:...) only, not to the file {self.path}")
        elif self.repo_is_local and self.revision is not None:
            raise ValueError(f"revision applies to hub repositories, not to the local folder {self.repo}")
        if self.format is not None:
            from alignkit.data.adapters import ADAPTERS

            if self.format not in ADAPTERS:
                raise ValueError(f"unknown data format {self.format!r}; known: {', '.join(sorted(ADAPTERS))}")
        return self

    @model_serializer(mode="wrap")
    def _compact(self, handler: Any) -> dict[str, Any]:
        # Only what the entry sets: `recipes show` and the saved recipe stay as short as the recipe was written.
        return {k: v for k, v in handler(self).items() if v is not None and v != {}}

    @property
    def is_hub(self) -> bool:
        """Whether this source is a dataset repository (read with `datasets.load_dataset`)."""
        return self.path.startswith(HUB_PREFIX)

    @property
    def repo(self) -> str:
        """The repository id or local folder after `hf:`."""
        return self.path[len(HUB_PREFIX):]

    @property
    def repo_is_local(self) -> bool:
        """Whether the repository is a local folder (not a hub id)."""
        return looks_local(self.repo)

    @property
    def has_selection(self) -> bool:
        """Whether only part of this source's records is used (a weight or a record count)."""
        return self.weight is not None or self.max_records is not None

    def label(self) -> str:
        """The source as a short name in messages: hf:ORG/NAME:CONFIG@REVISION[data_dir]/SPLIT, or the file path."""
        if not self.is_hub:
            return self.path
        text = self.path + (f":{self.config}" if self.config else "") + (f"@{self.revision}" if self.revision else "")
        return text + (f"[{self.data_dir}]" if self.data_dir else "") + (f"/{self.split}" if self.split else "")


def looks_local(path: str) -> bool:
    """Whether a name after `hf:` is a local folder rather than a hub id (ORG/NAME)."""
    return path.startswith((".", "/", "~")) or Path(path).expanduser().is_dir()


def parse_source(entry: str | DataSource | dict[str, Any], default_split: str | None = None) -> str | DataSource:
    """A recipe entry in its resolved form: a plain file path stays a string; an `hf:` short form becomes a
    `DataSource` with its config, revision and split as fields (the split defaulting to `default_split`)."""
    if isinstance(entry, dict):
        entry = DataSource.model_validate(entry)
    if isinstance(entry, str):
        if not entry.startswith(HUB_PREFIX):
            return entry
        entry = DataSource(path=entry)
    if not entry.is_hub:
        return entry
    parts: dict[str, Any] = {}
    if not entry.repo_is_local:
        match = _SHORT_FORM.match(entry.repo)
        if match is None:
            raise ValueError(f"{entry.path!r} is not a dataset name: expected hf:ORG/NAME[:CONFIG][@REVISION][/SPLIT] "
                             "or hf:FOLDER (a local folder)")
        for key in ("config", "revision", "split"):
            short, given = match.group(key), getattr(entry, key)
            if short is not None and given is not None and short != given:
                raise ValueError(f"{entry.path!r} names {key} {short!r} but the entry also says {key}: {given!r}")
            if short is not None:
                parts[key] = short
        parts["path"] = HUB_PREFIX + match.group("repo")
    if entry.split is None and "split" not in parts and default_split:
        parts["split"] = default_split
    return entry.model_copy(update=parts) if parts else entry


def as_source(entry: str | Path | DataSource, default_split: str = "train") -> DataSource:
    """Any entry as a `DataSource` (a plain path too)."""
    if isinstance(entry, Path):
        entry = str(entry)
    resolved = parse_source(entry, default_split)
    return resolved if isinstance(resolved, DataSource) else DataSource(path=resolved)


def source_label(entry: str | Path | DataSource) -> str:
    """A source's name in messages and reports."""
    if isinstance(entry, DataSource):
        return entry.label()
    return str(entry) if not str(entry).startswith(HUB_PREFIX) else as_source(entry).label()


# -- reading a dataset repository ----------------------------------------------------------------------------


def _load_kwargs(src: DataSource) -> dict[str, Any]:
    return {"name": src.config, "revision": src.revision, "data_dir": src.data_dir}


def _repo_path(src: DataSource) -> str:
    return str(Path(src.repo).expanduser()) if src.repo_is_local else src.repo


def iter_hub_rows(src: DataSource) -> Any:
    """Yield (location, row) pairs of one split of a dataset repository, read with `datasets.load_dataset`."""
    label = src.label()
    if src.repo_is_local and not Path(src.repo).expanduser().is_dir():
        raise DataError(f"{label}: folder not found: {src.repo}")
    split = src.split or "train"
    dataset = _load_split(src, split, label)
    missing = [f"{column!r} (for field {name!r})" for name, column in src.columns.items() if column not in dataset.column_names]
    if missing:
        raise DataError(f"{label}: column {', '.join(missing)} not in the dataset; its columns: {', '.join(dataset.column_names)}")
    for i, row in enumerate(dataset, start=1):
        yield f"{label}: row {i}", row


def _load_split(src: DataSource, split: str, label: str) -> Any:
    import datasets

    try:
        return datasets.load_dataset(_repo_path(src), split=split, **_load_kwargs(src))
    except ValueError as err:
        text = str(err)
        if "Unknown split" in text:
            raise DataError(f"{label}: no split {split!r} in the dataset ({text.split('.', 1)[-1].strip()})") from None
        raise DataError(f"{label}: {text}") from None
    except (ConnectionError, OSError) as err:  # offline without a cached copy, a missing or gated repository
        why = (" The hub is offline (HF_HUB_OFFLINE): only a copy in the datasets cache loads; run once with hub "
               "access, or point the entry at a local copy") if _offline() else ""
        raise DataError(f"{label}: could not load the dataset: {err}.{why}") from None
    except Exception as err:  # noqa: BLE001 - datasets' own errors (DatasetNotFoundError, ...) as one clean message
        raise DataError(f"{label}: could not load the dataset: {type(err).__name__}: {err}") from None


def apply_columns(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """The row with each mapped field set from its column (other columns kept)."""
    if not columns or not isinstance(row, dict) or getattr(row, "reason", None) is not None:
        return row
    out = dict(row)
    for name, column in columns.items():
        if column in row:
            out[name] = row[column]
    return out


# -- checking a source before anything loads -------------------------------------------------------------------


def _offline() -> bool:
    return any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _in_cache(repo: str) -> bool:
    """Whether a copy of a hub dataset may be in the local caches (the datasets cache or the hub download cache)."""
    import datasets
    from huggingface_hub import constants

    return ((Path(datasets.config.HF_DATASETS_CACHE) / repo.replace("/", "___")).is_dir()
            or (Path(constants.HF_HUB_CACHE) / f"datasets--{repo.replace('/', '--')}").is_dir())


def _known_splits(src: DataSource) -> list[str] | None:
    """The split names of a repository from its builder (no data read), or None when they are not known."""
    import datasets

    builder = datasets.load_dataset_builder(_repo_path(src), **_load_kwargs(src))
    files = getattr(builder.config, "data_files", None)
    if files:
        return sorted(files)
    splits = builder.info.splits
    return sorted(splits) if splits else None


def check_source(entry: str | DataSource) -> tuple[str | None, str | None]:
    """(problem, note) for one recipe entry, before anything loads: a missing file or folder, an invalid name or a
    split the repository lacks is a problem; what cannot be checked here (a hub dataset while the hub is offline,
    its columns) is a note."""
    src = entry if isinstance(entry, DataSource) else as_source(entry)
    if not src.is_hub:
        return (None, None) if Path(src.path).exists() else (f"file not found: {src.path}", None)
    label = src.label()
    if src.repo_is_local:
        if not Path(src.repo).expanduser().is_dir():
            return f"{label}: folder not found: {src.repo}", None
    else:
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(src.repo)
        except HFValidationError as err:
            return f"{label}: {src.repo!r} is not a valid dataset id (ORG/NAME): {err}", None
        if _offline() and not _in_cache(src.repo):
            return None, (f"{label}: hub dataset, not checked: the hub is offline (HF_HUB_OFFLINE) and the datasets cache "
                          "holds no copy; `alignkit train` loads it with hub access (its split and columns are checked then, "
                          "before any model loads)")
    try:
        splits = _known_splits(src)
    except Exception as err:  # noqa: BLE001 - offline, gated, not found...: the load reports it with its own error
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if type(err).__name__ in ("DatasetNotFoundError", "RepositoryNotFoundError") and not _offline():
            return f"{label}: dataset not found on the hub ({first}); a gated or private one needs `hf auth login`", None
        return None, f"{label}: not checked ({type(err).__name__}: {first}); it is checked when the data loads"
    split = src.split or "train"
    if splits is not None and split not in splits:
        return f"{label}: no split {split!r} in the dataset; its splits: {', '.join(splits)}", None
    return None, None
