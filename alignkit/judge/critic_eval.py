"""`alignkit gym eval-critic`: ask a critic model for judgments of responses and compare them with gold judgments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignkit.data.errors import DataError

FIELDS = ("instruction", "output", "judgment")


def read_judgment_triples(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Judgment triples (instruction, output, judgment) of a data file; a missing field fails naming the row."""
    from alignkit.data.loaders import iter_rows

    if not Path(path).exists():
        raise DataError(f"data file {path} does not exist")
    rows = []
    for location, row in iter_rows(path):
        missing = [k for k in FIELDS if k not in row]
        if missing:
            raise DataError(f"{location}: missing field {missing[0]!r} (judgment triples need instruction, output, judgment)")
        rows.append(row)
    return rows[:limit] if limit else rows


def evaluate_critic(model: str, rows: list[dict[str, Any]], backend: str = "auto") -> tuple[dict[str, Any], list[str]]:
    """The critic's judgment of every row's output, and its agreement with the rows' gold judgments
    (`alignkit.judge.gym_judge.critic_agreement`). `model` is a model folder or an endpoint URL."""
    from alignkit.judge.critic import Critic
    from alignkit.judge.gym_judge import critic_agreement
    from alignkit.judge.run import load_judge_model

    url = model.startswith(("http://", "https://"))
    generator, model_id = load_judge_model(None if url else model, model if url else None, backend)
    critiques = Critic(generator, model_id=model_id).critiques([r["instruction"] for r in rows], [r["output"] for r in rows])
    return critic_agreement(critiques, [r["judgment"] for r in rows]), critiques


def write_critic_report(out: str | Path, model: str, data: str | Path, rows: list[dict[str, Any]], report: dict[str, Any],
                        critiques: list[str]) -> Path:
    """The critiques with the gold judgments and the agreement report, as one JSON file (written atomically)."""
    from alignkit.cache import write_atomic

    items = [{"instruction": r["instruction"], "output": r["output"], "gold": r["judgment"], "critique": c} for r, c in zip(rows, critiques)]
    text = json.dumps({"model": model, "data": str(data), **report, "items": items}, indent=2) + "\n"
    write_atomic(out, lambda fh: fh.write(text))
    return Path(out)
