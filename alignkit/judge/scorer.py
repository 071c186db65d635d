"""A pointwise LLM judge as a best-of-N scorer: ratings on the judge's scale mapped to [0, 1]."""

from __future__ import annotations

from typing import Any, Sequence

from alignkit.data.records import JudgeItem, Prompt


class JudgeScorer:
    """Score completions with `PointwiseJudge`; an unparsed rating scores NaN, which selection skips."""

    def __init__(self, model: str, template: str | None = None, backend: str = "auto", **options: Any) -> None:
        from alignkit.judge.run import make_judge

        url = model.startswith(("http://", "https://"))
        self.judge = make_judge("pointwise", model=None if url else model, endpoint=model if url else None,
                                template=template, backend=backend, **options)

    def score(self, prompt: Prompt, completions: Sequence[str]) -> list[float]:
        from alignkit.data.templates import as_messages

        question = as_messages(prompt)[-1]["content"]
        low, high = self.judge.scale
        verdicts = self.judge.judge([JudgeItem(question=question, answer=c) for c in completions])
        return [float("nan") if v.value is None else (v.value - low) / (high - low) for v in verdicts]
