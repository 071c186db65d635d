"""Reward-model judge: a sequence-classification model scores each answer; pairs are compared by score."""

from __future__ import annotations

from typing import Any, Sequence

from alignkit.data.records import JudgeItem
from alignkit.judge.verdict import Verdict


class RewardModelJudge:
    """`mode="pointwise"`: value = the reward of the answer. `mode="pairwise"`: the answer against the
    item's `reference` (the baseline's output): 1 if it scores higher, 0 if lower, 0.5 on an exact tie."""

    def __init__(self, path: str, mode: str = "pointwise", template: str = "chat", batch_size: int = 32, **options: Any) -> None:
        from alignkit.scoring.reward_model import RewardModelScorer, check_options

        if mode not in ("pointwise", "pairwise"):
            raise ValueError(f"reward-model judge mode must be pointwise or pairwise, not {mode!r}")
        check_options(options)  # trust_remote_code, output, device, ... (alignkit.scoring.reward_model.OPTIONS)
        self.scorer = RewardModelScorer(path, template, batch_size, **options)
        self.mode = mode
        self.name = f"reward-{mode}"

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        out = []
        for it in items:
            if self.mode == "pointwise":
                (score,) = self.scorer.score(it.question, [it.answer])
                out.append(Verdict(score, "ok", [f"{score:.6g}"]))
                continue
            if not isinstance(it.reference, str) or not it.reference:
                raise ValueError(f"pairwise judging needs the baseline's output in `reference`; item {it.question!r} has none")
            cand, base = self.scorer.score(it.question, [it.answer, it.reference])
            value = 1.0 if cand > base else 0.0 if cand < base else 0.5
            out.append(Verdict(value, "ok", [f"{cand:.6g}", f"{base:.6g}"], {"margin": cand - base}))
        return out
