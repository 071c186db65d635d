"""Best-of-N (and worst-of-N) selection: score each prompt's N samples, keep the argmax (argmin).

Any `alignkit.scoring.Scorer` selects: a reward model, the gym's gold reward, or a pointwise LLM judge
(`alignkit.judge.scorer.make_scorer` builds one by name). Ties go to the lowest index, so selection is
deterministic.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from alignkit.data.records import prompt_json
from alignkit.scoring.base import Scorer, score_groups


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
    texts = [[c["text"] for c in row["completions"]] for row in rows]
    all_scores = score_groups(scorer, [row["prompt"] for row in rows], texts, progress=True,
                              desc="worst-of-n" if worst else "best-of-n")
    out = []
    for row, completions, scores in zip(rows, texts, all_scores):
        i = select(scores, worst)
        extras = {k: v for k, v in row.items() if k not in ("prompt", "completions")}
        out.append({"prompt": prompt_json(row["prompt"]), **extras, "selected": completions[i], "selected_index": i,
                    "score": scores[i], "scores": scores, "completions": completions, "n": len(completions),
                    "mode": "worst" if worst else "best"})
    return out
