"""Agreement statistics between raters (an LLM judge and human labels, or several annotators).

Pure functions on label arrays. Labels may be strings, booleans or numbers; they are compared as
categories (sorted order matters only for weighted κ and Krippendorff's ordinal/interval levels).
Degenerate inputs never yield a silent NaN: empty or mismatched arrays, missing values where none are
allowed, and statistics that are undefined (e.g. κ when both raters use one identical label, so
chance agreement is 1) raise `ValueError` with the reason.

Definitions follow "Judging the Judges" (spec §2.4): Cohen's κ uses the separate marginals of the
two raters; Scott's π pools them (= Fleiss' κ with 2 raters); Gwet's AC1 pools them too but spreads
chance over the categories (matched to irrCAC); leniency is P_c = TPR + TNR − 1 (Youden's J) and
P₊ = FPR / (1 − P_c); the ranking of evaluated models is compared by Spearman ρ / Kendall τ, and its
stability over every subset of 6 models (spec §2.4, appendix L).
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Sequence

import numpy as np

Weights = Literal["linear", "quadratic"] | None


def _labels(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=object).reshape(-1) if not isinstance(x, np.ndarray) else x.reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    for i, v in enumerate(arr):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            raise ValueError(f"{name}[{i}] is missing (None/NaN); use krippendorff_alpha for ratings with gaps")
    return arr


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _labels(a, "a"), _labels(b, "b")
    if len(x) != len(y):
        raise ValueError(f"a and b rate different numbers of items: {len(x)} vs {len(y)}")
    return x, y


def _categories(*arrays: np.ndarray) -> list[Any]:
    values = {v for arr in arrays for v in arr.tolist()}
    try:
        return sorted(values)
    except TypeError:  # mixed types: order by text
        return sorted(values, key=str)


def confusion_matrix(a: Any, b: Any, labels: Sequence[Any] | None = None) -> tuple[np.ndarray, list[Any]]:
    """Counts [i, j] of items rated labels[i] by `a` and labels[j] by `b`, and the label order."""
    x, y = _pair(a, b)
    cats = list(labels) if labels is not None else _categories(x, y)
    index = {c: i for i, c in enumerate(cats)}
    unknown = {v for v in x.tolist() + y.tolist() if v not in index}
    if unknown:
        raise ValueError(f"labels {sorted(map(str, unknown))} are not in the given label list")
    m = np.zeros((len(cats), len(cats)), dtype=np.int64)
    np.add.at(m, ([index[v] for v in x.tolist()], [index[v] for v in y.tolist()]), 1)
    return m, cats


def percent_agreement(a: Any, b: Any) -> float:
    """Share of items on which the two raters agree."""
    x, y = _pair(a, b)
    return float(np.mean([u == v for u, v in zip(x.tolist(), y.tolist())]))


def cohen_kappa(a: Any, b: Any, weights: Weights = None) -> float:
    """Cohen's κ (separate marginals); `weights` "linear"/"quadratic" penalise distant categories more."""
    m, cats = confusion_matrix(a, b)
    k = len(cats)
    observed = m / m.sum()
    expected = np.outer(observed.sum(1), observed.sum(0))
    i, j = np.indices((k, k))
    if weights is None:
        w = (i != j).astype(float)
    elif weights == "linear":
        w = np.abs(i - j).astype(float)
    elif weights == "quadratic":
        w = ((i - j) ** 2).astype(float)
    else:
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    disagreement_by_chance = (w * expected).sum()
    if disagreement_by_chance == 0:
        raise ValueError("Cohen's kappa is undefined: both raters used one and the same label for every item")
    return float(1 - (w * observed).sum() / disagreement_by_chance)


def scott_pi(a: Any, b: Any) -> float:
    """Scott's π: chance agreement from the pooled marginals of both raters."""
    m, _ = confusion_matrix(a, b)
    n = m.sum()
    p_o = np.trace(m) / n
    pooled = (m.sum(0) + m.sum(1)) / (2 * n)
    p_e = float((pooled**2).sum())
    if p_e == 1:
        raise ValueError("Scott's pi is undefined: both raters used one and the same label for every item")
    return float((p_o - p_e) / (1 - p_e))


def gwet_ac1(a: Any, b: Any, categories: Sequence[Any] | None = None) -> float:
    """Gwet's AC1 of two raters on nominal labels: chance agreement from the pooled marginals, spread over categories.

    AC1 = (p_a − p_e) / (1 − p_e), with p_a the share of agreeing items and
    p_e = Σ_k π_k (1 − π_k) / (q − 1), where π_k is the share of all 2N ratings in category k and q the
    number of categories. Unlike κ and π it stays near p_a when one category dominates (the "κ paradox").

    Parameters
    ----------
    a, b : array-like of shape (n_items,)
        Labels of the two raters (strings, booleans or numbers compared as categories).
    categories : sequence, optional
        The category set. q counts unused categories too, so pass it when a label set is fixed (e.g.
        correct / incorrect / no verdict) and a sample may not use all of them; default: the labels seen.

    Returns
    -------
    float
        AC1, in [−1, 1].

    Raises
    ------
    ValueError
        Empty or mismatched inputs, a label outside `categories`, or fewer than 2 categories (AC1 undefined).

    Examples
    --------
    >>> round(gwet_ac1(["c", "c", "i", "c", "i", "c"], ["c", "i", "i", "c", "c", "c"]), 6)  # p_a = 2/3, p_e = 4/9
    0.4
    """
    m, cats = confusion_matrix(a, b, categories)
    q = len(cats)
    if q < 2:
        raise ValueError("Gwet's AC1 is undefined with fewer than 2 categories; pass the label set as `categories`")
    n = m.sum()
    p_a = np.trace(m) / n
    pooled = (m.sum(0) + m.sum(1)) / (2 * n)
    p_e = float((pooled * (1 - pooled)).sum() / (q - 1))
    return float((p_a - p_e) / (1 - p_e))


def fleiss_kappa(ratings: Any) -> float:
    """Fleiss' κ for ratings [items, raters], every item rated by every rater (no missing values)."""
    r = np.asarray(ratings, dtype=object)
    if r.ndim != 2 or r.shape[0] == 0 or r.shape[1] < 2:
        raise ValueError(f"ratings must be [items, raters] with at least 2 raters, got shape {r.shape}")
    _labels(r, "ratings")
    cats = _categories(r.reshape(-1))
    index = {c: i for i, c in enumerate(cats)}
    counts = np.zeros((r.shape[0], len(cats)))
    for i, row in enumerate(r):
        for v in row:
            counts[i, index[v]] += 1
    n = r.shape[1]
    p_item = ((counts**2).sum(1) - n) / (n * (n - 1))
    p_cat = counts.sum(0) / counts.sum()
    p_e = float((p_cat**2).sum())
    if p_e == 1:
        raise ValueError("Fleiss' kappa is undefined: every rating is the same label")
    return float((p_item.mean() - p_e) / (1 - p_e))


def krippendorff_alpha(ratings: Any, level: Literal["nominal", "ordinal", "interval"] = "nominal") -> float:
    """Krippendorff's α for ratings [items, raters] with missing values as None/NaN.

    Items with fewer than two ratings are not pairable and are ignored. `level` sets the distance:
    nominal (different or not), ordinal (rank distance by category frequencies), interval (squared
    difference; numeric labels).
    """
    r = np.asarray(ratings, dtype=object)
    if r.ndim != 2:
        raise ValueError(f"ratings must be [items, raters], got shape {r.shape}")
    missing = np.vectorize(lambda v: v is None or (isinstance(v, float) and np.isnan(v)), otypes=[bool])(r) if r.size else np.zeros(r.shape, bool)
    present = [v for v, miss in zip(r.reshape(-1).tolist(), missing.reshape(-1).tolist()) if not miss]
    if not present:
        raise ValueError("ratings has no values")
    cats = _categories(np.asarray(present, dtype=object))
    index = {c: i for i, c in enumerate(cats)}
    k = len(cats)
    coincidence = np.zeros((k, k))
    for row, miss in zip(r, missing):
        values = [index[v] for v, m in zip(row.tolist(), miss.tolist()) if not m]
        if len(values) < 2:
            continue
        counts = np.bincount(values, minlength=k).astype(float)
        coincidence += (np.outer(counts, counts) - np.diag(counts)) / (len(values) - 1)
    n_c = coincidence.sum(1)
    n = n_c.sum()
    if n == 0:
        raise ValueError("Krippendorff's alpha is undefined: no item has two or more ratings")
    i, j = np.indices((k, k))
    if level == "nominal":
        delta = (i != j).astype(float)
    elif level == "interval":
        try:
            values = np.asarray(cats, dtype=float)
        except (TypeError, ValueError):
            raise ValueError("level 'interval' needs numeric ratings") from None
        delta = (values[:, None] - values[None, :]) ** 2
    elif level == "ordinal":
        cum = np.concatenate([[0.0], np.cumsum(n_c)])
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        delta = (cum[hi + 1] - cum[lo] - (n_c[i] + n_c[j]) / 2) ** 2
    else:
        raise ValueError(f"level must be 'nominal', 'ordinal' or 'interval', got {level!r}")
    expected = (np.outer(n_c, n_c) * delta).sum() / (n - 1)
    if expected == 0:
        raise ValueError("Krippendorff's alpha is undefined: all pairable ratings are the same value")
    return float(1 - (coincidence * delta).sum() / expected)


def bootstrap_ci(stat: Callable[..., float], *arrays: Any, n_resamples: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of `stat(*arrays)`, resampling items (the same indices for every array).

    Resamples on which the statistic is undefined (it raises ValueError) are dropped; if more than
    half are, the CI is undefined and this raises.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    data = [np.asarray(a, dtype=object) for a in arrays]
    n = len(data[0])
    if n == 0 or any(len(d) != n for d in data):
        raise ValueError(f"arrays must be non-empty and of equal length, got {[len(d) for d in data]}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        try:
            values.append(stat(*(d[idx] for d in data)))
        except ValueError:
            continue
    if len(values) < n_resamples / 2:
        raise ValueError(f"the statistic is undefined on {n_resamples - len(values)} of {n_resamples} resamples")
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def sensitivity_specificity(human: Any, judge: Any, positive: Any = "correct") -> tuple[float, float]:
    """(TPR, TNR) of the judge against human labels, for the `positive` label."""
    h, j = _pair(human, judge)
    hp, jp = np.array([v == positive for v in h.tolist()]), np.array([v == positive for v in j.tolist()])
    if hp.all() or not hp.any():
        raise ValueError(f"sensitivity/specificity need human labels of both kinds (positive = {positive!r})")
    return float((jp & hp).sum() / hp.sum()), float((~jp & ~hp).sum() / (~hp).sum())


def leniency(human: Any, judge: Any, positive: Any = "correct") -> dict[str, float]:
    """Judging the Judges' leniency model: P_c (applies the criteria) and P₊ (says 'correct' when guessing).

    P_c = TPR + TNR − 1 (Youden's J); P₊ = FPR / (1 − P_c). P₊ > 0.5 marks a lenient judge.
    """
    tpr, tnr = sensitivity_specificity(human, judge, positive)
    p_c = tpr + tnr - 1
    if p_c >= 1:
        raise ValueError("the judge is perfect (P_c = 1), so its guessing rate P+ is undefined")
    return {"p_correct_application": p_c, "p_lenient_guess": (1 - tnr) / (1 - p_c), "tpr": tpr, "tnr": tnr}


def ranking_correlation(judge_scores: Any, human_scores: Any) -> dict[str, float]:
    """Spearman ρ and Kendall τ between judge-based and human-based scores of the evaluated models."""
    from scipy import stats

    j, h = np.asarray(judge_scores, dtype=float), np.asarray(human_scores, dtype=float)
    if len(j) != len(h) or len(j) < 2:
        raise ValueError(f"need two equally long score lists of at least 2 models, got {len(j)} and {len(h)}")
    if np.isnan(j).any() or np.isnan(h).any():
        raise ValueError("scores contain NaN")
    if np.ptp(j) == 0 or np.ptp(h) == 0:
        raise ValueError("rank correlation is undefined when all models get the same score")
    return {"spearman": float(stats.spearmanr(j, h).statistic), "kendall": float(stats.kendalltau(j, h).statistic)}


def ranking_stability(judge_scores: Any, human_scores: Any, subset_size: int = 6, threshold: float = 0.9) -> dict[str, Any]:
    """Stability of the judge-vs-human ranking correlation over every subset of `subset_size` models.

    Judging the Judges (appendix L) samples 6 of its 9 exam-takers 5 times and reports the mean Spearman ρ
    and its σ; this enumerates all C(n, k) subsets instead, so the result is deterministic.

    Parameters
    ----------
    judge_scores, human_scores : array-like of shape (n_models,)
        The score of each evaluated model by the judge and by humans (e.g. assigned accuracy).
    subset_size : int, default 6
        Models per subset (k); at least 3 and at most n.
    threshold : float, default 0.9
        `share_above` counts subsets whose correlation is at least this.

    Returns
    -------
    dict
        `subset_size`, `n_models`, `n_subsets` (defined ones), `n_undefined` (subsets where a correlation
        is undefined because all its models tie), and for "spearman" and "kendall" each: `mean`, `std`
        (population), `min`, `max`, `share_above`; `threshold`.

    Raises
    ------
    ValueError
        Unequal or too short score lists, `subset_size` outside [3, n], or no subset with a defined correlation.

    Examples
    --------
    >>> ranking_stability([1, 2, 3, 4], [1, 2, 3, 4], subset_size=3)["spearman"]["min"]
    1.0
    """
    from itertools import combinations

    j, h = np.asarray(judge_scores, dtype=float), np.asarray(human_scores, dtype=float)
    if len(j) != len(h):
        raise ValueError(f"need one judge and one human score per model, got {len(j)} and {len(h)}")
    if not 3 <= subset_size <= len(j):
        raise ValueError(f"subset_size must be between 3 and the number of models ({len(j)}), got {subset_size}")
    values: dict[str, list[float]] = {"spearman": [], "kendall": []}
    undefined = 0
    for subset in combinations(range(len(j)), subset_size):
        idx = list(subset)
        try:
            corr = ranking_correlation(j[idx], h[idx])
        except ValueError:
            undefined += 1
            continue
        for name in values:
            values[name].append(corr[name])
    if not values["spearman"]:
        raise ValueError(f"the rank correlation is undefined on every subset of {subset_size} models")
    out: dict[str, Any] = {"subset_size": subset_size, "n_models": len(j), "n_subsets": len(values["spearman"]),
                           "n_undefined": undefined, "threshold": threshold}
    for name, v in values.items():
        arr = np.asarray(v)
        out[name] = {"mean": float(arr.mean()), "std": float(arr.std()), "min": float(arr.min()), "max": float(arr.max()),
                     "share_above": float((arr >= threshold).mean())}
    return out
