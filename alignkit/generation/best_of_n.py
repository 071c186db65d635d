"""Best-of-N (and worst-of-N) selection: score each prompt's N samples, keep the argmax (argmin).

Scorers map (prompt, completions) to one float per completion:
- `RewardModelScorer`: a sequence-classification reward model (one logit) on the prompt rendered by the
  chat template followed by the completion.
- `GoldScorer`: the gym's gold reward (only for gym prompts; for tests and gym experiments).
- `JudgeScorer`: a pointwise LLM judge (`alignkit.judge`), its score scale normalised to [0, 1].
Ties go to the lowest index, so selection is deterministic.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, Sequence

from alignkit.data.records import Prompt

SCORERS = ("reward-model", "judge", "gold")


class Scorer(Protocol):
    def score(self, prompt: Prompt, completions: Sequence[str]) -> list[float]: ...


class RewardModelScorer:
    """Score with a sequence-classification reward model (num_labels=1)."""

    def __init__(self, path: str, template: str = "chat", batch_size: int = 32, max_length: int = 1024) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        from alignkit.config import ModelSettings
        from alignkit.engine.model_loading import load_tokenizer, resolve_model_path

        self.tokenizer = load_tokenizer(ModelSettings(path=path))
        self.model = AutoModelForSequenceClassification.from_pretrained(resolve_model_path(path), dtype=torch.float32).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(f"{path} has {self.model.config.num_labels} labels; a reward model has exactly 1")
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.template, self.batch_size, self.max_length = template, batch_size, max_length

    def score(self, prompt: Prompt, completions: Sequence[str]) -> list[float]:
        import torch

        from alignkit.data.templates import render_prompt

        head = render_prompt(prompt, self.template, self.tokenizer)
        texts = [head + c for c in completions]
        out: list[float] = []
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "right"  # the classifier reads the last non-pad token
        try:
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[i : i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                                     max_length=self.max_length, add_special_tokens=self.template != "chat")
                with torch.no_grad():
                    out += self.model(**enc).logits[:, 0].float().tolist()
        finally:
            self.tokenizer.padding_side = side
        return out


class GoldScorer:
    """The gym's gold reward (prompts must be gym prompts)."""

    def score(self, prompt: Prompt, completions: Sequence[str]) -> list[float]:
        from alignkit.data.templates import as_messages
        from alignkit.gym.world import gold, task_for_prompt

        task = task_for_prompt(as_messages(prompt)[-1]["content"])
        return [gold(task, c).reward for c in completions]


def select(scores: Sequence[float], worst: bool = False) -> int:
    """Index of the best (or worst) score; the first one on ties. NaN scores (an unparsed judge rating)
    are never selected unless every score is NaN, then the first completion is."""
    if not scores:
        raise ValueError("no completions to select from")
    valid = [(s, i) for i, s in enumerate(scores) if not math.isnan(s)]
    if not valid:
        return 0
    target = (min if worst else max)(s for s, _ in valid)
    return next(i for s, i in valid if s == target)


def best_of_n(rows: Sequence[dict[str, Any]], scorer: Scorer, worst: bool = False) -> list[dict[str, Any]]:
    """Per rollout row (`prompt` + `completions`), the selected completion, its score and all scores."""
    from tqdm.auto import tqdm

    out = []
    for row in tqdm(rows, desc="worst-of-n" if worst else "best-of-n", unit="prompt"):
        texts = [c["text"] for c in row["completions"]]
        scores = scorer.score(row["prompt"], texts)
        i = select(scores, worst)
        extras = {k: v for k, v in row.items() if k not in ("prompt", "completions")}
        out.append({"prompt": row["prompt"], **extras, "selected": texts[i], "selected_index": i, "score": scores[i],
                    "scores": scores, "completions": texts, "n": len(texts), "mode": "worst" if worst else "best"})
    return out


def make_scorer(kind: str, path: str | None = None, template: str = "chat", **options: Any) -> Scorer:
    """A scorer by name: `reward-model` (needs a model path), `judge` (a judge config or model), `gold`."""
    if kind == "reward-model":
        if not path:
            raise ValueError("--scorer reward-model needs --reward-model PATH")
        return RewardModelScorer(path, template)
    if kind == "gold":
        return GoldScorer()
    if kind == "judge":
        from alignkit.judge.scorer import JudgeScorer

        if not path:
            raise ValueError("--scorer judge needs --judge-model MODEL (a model folder or an endpoint URL)")
        return JudgeScorer(path, **options)  # template/backend options go to the judge
    raise ValueError(f"unknown scorer {kind!r}; known: {', '.join(SCORERS)}")
