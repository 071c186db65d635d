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


def preference_pairs(selected: Sequence[dict[str, Any]], min_margin: float = 0.0) -> list[dict[str, Any]]:
    """On-policy preference rows from `best_of_n` output: the highest-scoring completion as `chosen`, the
    lowest as `rejected` (blank completions are left out). A prompt whose best and worst differ by no more than `min_margin` (all samples
    tied, or only NaN scores) gives no pair. The rows are the `preference` data format, so DPO trains on
    them directly (iterative / on-policy DPO)."""
    if min_margin < 0:
        raise ValueError(f"min_margin must be >= 0, got {min_margin}")
    pairs = []
    for row in selected:
        # blank completions cannot be a preference row's side (the data format refuses them), so they
        # take no part: the worst non-blank sample is the rejected one
        kept = [(s, c) for s, c in zip(row["scores"], row["completions"]) if c.strip()]
        if len(kept) < 2:
            continue
        scores, completions = [s for s, _ in kept], [c for _, c in kept]
        best, worst = select(scores), select(scores, worst=True)
        if math.isnan(scores[best]) or scores[best] - scores[worst] <= min_margin:
            continue
        extras = {k: v for k, v in row.items()
                  if k not in ("prompt", "selected", "selected_index", "score", "scores", "completions", "n", "mode")}
        pairs.append({"prompt": row["prompt"], **extras, "chosen": completions[best], "rejected": completions[worst],
                      "score_chosen": scores[best], "score_rejected": scores[worst]})
    return pairs
