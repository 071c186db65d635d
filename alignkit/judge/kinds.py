"""Which report a judge's verdicts need (`report_kind`), and `FieldJudge`, whose verdicts are already in the data.

Both `alignkit.judge.run` (running a judge over a file) and `alignkit.judge.server` (serving one) read them."""

from __future__ import annotations

from typing import Any, Sequence

from alignkit.data.records import JudgeItem
from alignkit.judge.verdict import Verdict


class FieldJudge:
    """Verdicts already in the data (another judge's or an annotator's labels, in `field`), so any
    label column can be compared with the human labels (e.g. the gym's simulated annotators)."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.name = f"field:{field}"
        self.rows: Sequence[dict[str, Any]] = ()

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        from alignkit.judge.report import human_label

        if len(self.rows) != len(items):
            raise ValueError("FieldJudge reads labels from the raw rows: run it through run_judge")
        out = []
        for row in self.rows:
            if self.field not in row:
                raise ValueError(f"field {self.field!r} missing from a row with keys {sorted(row)}")
            value = row[self.field]
            try:
                label, confident = human_label(value)
                out.append(Verdict(label, "ok" if confident else "low_confidence", [str(value)]))
            except ValueError:
                out.append(Verdict(value, "unparsed", [str(value)]))
        return out


def report_kind(judge: Any) -> str:
    """Which report a judge's verdicts need: binary, score or pairwise."""
    from alignkit.judge.lexical import LexicalJudge
    from alignkit.judge.llm import PairwiseJudge, PointwiseJudge, ReferenceJudge

    if isinstance(judge, (ReferenceJudge, LexicalJudge, FieldJudge)):
        return "binary"
    if isinstance(judge, PairwiseJudge) or getattr(judge, "mode", None) == "pairwise":
        return "pairwise"
    if isinstance(judge, PointwiseJudge) or getattr(judge, "mode", None) == "pointwise":
        return "score"
    return getattr(judge, "report_kind", "binary")
