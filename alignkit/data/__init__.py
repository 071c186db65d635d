"""Canonical records, loaders for JSONL/JSON/Parquet/CSV/datasets folders, public-format adapters, templates."""

from alignkit.data.adapters import ADAPTERS, detect_format
from alignkit.data.loaders import DataError, LoadResult, iter_rows, load_records
from alignkit.data.records import (
    JudgeItem,
    JudgmentTriple,
    Message,
    NegativeOnly,
    PreferencePair,
    PromptOnly,
    Record,
    SFTExample,
    UnpairedPreference,
    to_negative,
    to_prompt,
)
from alignkit.data.templates import render_prompt

__all__ = [
    "ADAPTERS", "DataError", "JudgeItem", "JudgmentTriple", "LoadResult", "Message", "NegativeOnly",
    "PreferencePair", "PromptOnly", "Record", "SFTExample", "UnpairedPreference", "detect_format", "iter_rows", "load_records",
    "render_prompt", "to_negative", "to_prompt",
]
