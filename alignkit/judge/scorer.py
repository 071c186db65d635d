"""A pointwise LLM judge as a scorer (ratings on the judge's scale mapped to [0, 1]), and `make_scorer`,
which builds any scorer by name: a reward model (`reward-model`, or `rm`), the gym's gold reward, or such a judge."""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

from alignkit.data.records import JudgeItem, Prompt
from alignkit.scoring.base import Scorer

SCORERS = ("reward-model", "judge", "gold")
SCORER_ALIASES = {"rm": "reward-model"}


class JudgeScorer:
    """Score completions with `PointwiseJudge`; an unparsed rating scores NaN, which selection skips."""

    def __init__(self, model: str, template: str | None = None, backend: str = "auto", **options: Any) -> None:
        from alignkit.judge.run import make_judge

        url = model.startswith(("http://", "https://"))
        self.judge = make_judge("pointwise", model=None if url else model, endpoint=model if url else None,
                                template=template, backend=backend, **options)
        template_digest = hashlib.sha256(self.judge.template.encode()).hexdigest()[:16]
        self.identity = f"judge:{self.judge.model_id}|{template_digest}|{self.judge.max_tokens}"

    def score(self, prompt: Prompt, completions: Sequence[str]) -> list[float]:
        """The judge's rating of each completion, on [0, 1] (NaN when unparsed)."""
        from alignkit.data.templates import as_messages

        question = as_messages(prompt)[-1]["content"]
        low, high = self.judge.scale
        verdicts = self.judge.judge([JudgeItem(question=question, answer=c) for c in completions])
        return [float("nan") if v.value is None else (v.value - low) / (high - low) for v in verdicts]


def scorer_identity(kind: str, path: str | None = None, template: str = "chat", **options: Any) -> str | None:
    """`make_scorer(kind, path, template, **options).identity` without loading a model where that is possible
    (a reward model's weights are hashed, not loaded; gold needs no model); None for a judge, whose identity
    depends on the template and model it loads."""
    kind = SCORER_ALIASES.get(kind, kind)
    if kind == "reward-model" and path:
        from alignkit.scoring.reward_model import check_options, reward_model_identity

        check_options(options)
        return reward_model_identity(path, template, **options)
    if kind == "gold":
        from alignkit.scoring.gold import gold_identity

        return gold_identity()
    return None


def make_scorer(kind: str, path: str | None = None, template: str = "chat", **options: Any) -> Scorer:
    """A scorer by name: `reward-model` (alias `rm`; needs a model path), `judge` (a judge model folder or
    endpoint), `gold`. A reward model's options (`trust_remote_code`, `output`, `device`, `dtype`,
    `max_batch_tokens`, ...: `alignkit.scoring.reward_model.OPTIONS`) are checked before it loads."""
    kind = SCORER_ALIASES.get(kind, kind)
    if kind == "reward-model":
        from alignkit.scoring.reward_model import RewardModelScorer, check_options

        if not path:
            raise ValueError("--scorer reward-model needs --reward-model PATH")
        check_options(options)
        return RewardModelScorer(path, template, **options)
    if kind == "gold":
        from alignkit.scoring.gold import GoldScorer

        return GoldScorer()
    if kind == "judge":
        if not path:
            raise ValueError("--scorer judge needs --judge-model MODEL (a model folder or an endpoint URL)")
        return JudgeScorer(path, **options)  # template/backend options go to the judge
    raise ValueError(f"unknown scorer {kind!r}; known: {', '.join(SCORERS)} (or rm for reward-model)")
