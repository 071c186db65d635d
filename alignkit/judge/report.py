"""The judge report: per-model scores, agreement with human labels (with bootstrap CIs), parse failures,
position-bias inconsistency, ranking correlation; as a dict (JSON), Markdown, and a confusion-matrix PNG.

Binary (reference) verdicts are compared with human labels over the items that have one, coded as the
official Judging the Judges code codes them (`llm_eval/analysis/import_data.py::collect_results`): a judge
verdict is ±1 when it parsed, hedged ("maybe correct") or not, and 0 (`NO_VERDICT`) when it did not; a human
label is ±1, and 0 when the human was not confident ("maybe correct"). `low_confidence="separate"` (judge)
and `human_low_confidence="fold"` (human) are the other conventions. `NO_VERDICT` is a label of its own in the
agreement statistics (so Cohen's κ equals scikit-learn's on the ±1/0 codes), is left out of the confusion
matrix, precision/recall and leniency, which need correct/incorrect on both sides, and in judge accuracy
counts as "incorrect" (the official convention) or is excluded; both accuracies are reported.
Gwet's AC1 sits beside κ and π, and the ranking of models comes with its stability over model subsets.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from alignkit.judge import agreement as ag
from alignkit.judge.verdict import CORRECT, INCORRECT, Verdict
from alignkit.judge.report_format import plot_confusion, to_markdown  # noqa: F401  (re-exported: part of this module's API)
from alignkit.judge.winrate import alpaca_win_rate, length_controlled_win_rate, pairwise_win_rate

_TRUE = {"correct", "true", "yes", "1", "+1", "1.0"}
_FALSE = {"incorrect", "false", "no", "0", "-1", "0.0", "-1.0"}
_HEDGED = {"maybe correct": CORRECT, "maybe incorrect": INCORRECT}  # a human's low-confidence labels


def human_label(value: Any) -> tuple[str | None, bool]:
    """(label, confident) of a human label: "correct"/"incorrect" (None when missing), and False for a hedged,
    low-confidence label ("maybe correct", "maybe incorrect"); raises on anything else."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, True
    key = " ".join(str(value).strip().lower().split())
    if key in _HEDGED:
        return _HEDGED[key], False
    if key in _TRUE:
        return CORRECT, True
    if key in _FALSE:
        return INCORRECT, True
    raise ValueError(f"human label {value!r} is not a correct/incorrect label (correct/incorrect, true/false, 1/0/-1, "
                     "maybe correct/maybe incorrect)")


def binary_label(value: Any) -> str | None:
    """A human label as "correct"/"incorrect" (None when missing; a hedged one as its label); raises on anything else."""
    return human_label(value)[0]


def pairwise_label(value: Any) -> float | None:
    """A human pairwise label as P(candidate wins): A/candidate/win → 1, B/baseline/loss → 0, tie/draw → 0.5,
    or an AlpacaEval preference in [1, 2] (1 = baseline, 1.5 = tie, 2 = candidate)."""
    if value is None:
        return None
    key = str(value).strip().lower()
    words = {"a": 1.0, "candidate": 1.0, "win": 1.0, "b": 0.0, "baseline": 0.0, "loss": 0.0, "tie": 0.5, "draw": 0.5}
    if key in words:
        return words[key]
    try:
        number = float(key)
    except ValueError:
        number = float("nan")
    if not 1 <= number <= 2:
        raise ValueError(f"pairwise human label {value!r} is neither A/B/tie nor an AlpacaEval preference in [1, 2]")
    return number - 1


BINARY_LABELS = "correct/incorrect, true/false, yes/no, 1/0 (or -1 for incorrect), maybe correct/maybe incorrect (low confidence)"
PAIRWISE_LABELS = "A/B/tie (also candidate/baseline, win/loss, draw) or an AlpacaEval preference in [1, 2]"


def check_human_labels(rows: Sequence[dict[str, Any]], locations: Sequence[str], field: str, kind: str) -> None:
    """Fail on the first human label outside the label set of a `kind` report, naming file:line and the allowed labels.

    Binary reports take correct/incorrect labels, pairwise reports A/B/tie labels, score reports either
    correct/incorrect labels or numbers for every labelled row (not a mix).
    """
    from alignkit.data.loaders import DataError

    labelled = [(loc, r[field]) for loc, r in zip(locations, rows) if r.get(field) is not None]
    if kind == "score":
        numeric = labelled and all(_is_number(v) for _, v in labelled)
        parse, allowed = (float, "numbers") if numeric else (binary_label, f"{BINARY_LABELS}; or numbers in every labelled row")
    else:
        parse, allowed = (pairwise_label, PAIRWISE_LABELS) if kind == "pairwise" else (binary_label, BINARY_LABELS)
    for loc, value in labelled:
        try:
            parse(value)
        except (ValueError, TypeError):
            raise DataError(f"{loc}: field {field!r}: human label {value!r} is not a label of a {kind} judge; "
                            f"allowed: {allowed}") from None


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _with_ci(stat: Callable[..., float], *arrays: Any, n_resamples: int, seed: int) -> dict[str, Any]:
    try:
        value = stat(*arrays)
    except ValueError as err:
        return {"value": None, "ci": None, "note": str(err)}
    try:
        ci = list(ag.bootstrap_ci(stat, *arrays, n_resamples=n_resamples, seed=seed))
    except ValueError as err:
        return {"value": value, "ci": None, "note": str(err)}
    return {"value": value, "ci": ci}


def _groups(rows: Sequence[dict[str, Any]], field: str | None) -> list[str]:
    return [str(r.get(field, "all")) if field else "all" for r in rows]


def _mean_se(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "standard_error": se, "n": int(len(v))}


STABILITY_SUBSET = 6  # Judging the Judges, appendix L: subsets of 6 of its 9 exam-takers


def _ranking(judge: dict[str, float], human: dict[str, float], threshold: float = 0.9) -> dict[str, Any]:
    models = [m for m in judge if m in human and judge[m] is not None and human[m] is not None]
    if len(models) < 3:
        return {"note": f"ranking correlation needs at least 3 models, got {len(models)}"}
    j, h = [judge[m] for m in models], [human[m] for m in models]
    try:
        out: dict[str, Any] = {"models": models, **ag.ranking_correlation(j, h)}
    except ValueError as err:
        return {"models": models, "note": str(err)}
    # Subsets of 6 models as in the paper; with fewer models, subsets of one model fewer (at least 3), said so.
    k = STABILITY_SUBSET if len(models) >= STABILITY_SUBSET else len(models) - 1
    if k < 3:
        out["stability"] = {"note": f"needs at least 4 models, got {len(models)}"}
        return out
    try:
        out["stability"] = ag.ranking_stability(j, h, k, threshold)
    except ValueError as err:
        out["stability"] = {"note": str(err)}
        return out
    if k < STABILITY_SUBSET:
        out["stability"]["note"] = f"only {len(models)} models: subsets of {k}, not {STABILITY_SUBSET} as in the paper"
    return out


NO_VERDICT = "no verdict"
LOW_CONFIDENCE = ("separate", "fold")
UNPARSED = ("incorrect", "exclude")


def verdict_label(verdict: Verdict, low_confidence: str = "fold") -> str:
    """The label a binary verdict brings to the statistics: "correct", "incorrect", or `NO_VERDICT` for an
    unparsed one and, with `low_confidence="separate"`, a hedged one ("maybe correct"). The default, "fold", is
    the official code's: a parsed verdict keeps its label, hedged or not."""
    if low_confidence not in LOW_CONFIDENCE:
        raise ValueError(f"low_confidence must be one of {', '.join(LOW_CONFIDENCE)}, got {low_confidence!r}")
    if not verdict.parsed or (verdict.status == "low_confidence" and low_confidence == "separate"):
        return NO_VERDICT
    return verdict.value


def _share_correct(labels: Sequence[str], unparsed: str) -> float | None:
    """Share of "correct" among judge labels; NO_VERDICT counts as incorrect or is left out."""
    kept = [x for x in labels if unparsed == "incorrect" or x != NO_VERDICT]
    return sum(x == CORRECT for x in kept) / len(kept) if kept else None


def binary_report(verdicts: Sequence[Verdict], rows: Sequence[dict[str, Any]], human_field: str | None,
                  group_field: str | None = "model", n_resamples: int = 2000, seed: int = 0,
                  low_confidence: str = "fold", unparsed: str = "incorrect", ranking_threshold: float = 0.9,
                  human_low_confidence: str = "separate") -> dict[str, Any]:
    """Report for correct/incorrect verdicts.

    The defaults code verdicts and labels as the official Judging the Judges code does (module docstring).
    `low_confidence`: "fold" (default; official: a parsed judge verdict is ±1, hedged or not) takes a "maybe
    correct" verdict's label; "separate" makes it a `NO_VERDICT`, like an unparsed one.
    `human_low_confidence`: "separate" (default; official: a human who was not confident is coded 0) makes a
    human "maybe correct" label a `NO_VERDICT` in the agreement statistics; "fold" takes its label. Human
    accuracy counts a hedged human label by its label either way (the official score adds the human's verdict).
    `unparsed`: how a judge's `NO_VERDICT` enters judge accuracy (the judge-assigned score of each model and the
    judge's accuracy against human labels): "incorrect" (default; the official code's `_parse_eval`
    returns False) or "exclude". Both conventions are always reported; the option picks the headline
    `judge_accuracy`, which the score delta and the ranking use. In the chance-corrected statistics
    (κ, π, AC1, α) and percent agreement, `NO_VERDICT` is a label of its own, as the official code's 0.
    """
    if unparsed not in UNPARSED:
        raise ValueError(f"unparsed must be one of {', '.join(UNPARSED)}, got {unparsed!r}")
    if human_low_confidence not in LOW_CONFIDENCE:
        raise ValueError(f"human_low_confidence must be one of {', '.join(LOW_CONFIDENCE)}, got {human_low_confidence!r}")
    groups = _groups(rows, group_field)
    judge = [verdict_label(v, low_confidence) for v in verdicts]
    labelled = [human_label(r.get(human_field)) for r in rows] if human_field else [(None, True)] * len(rows)
    human_scores = [label for label, _ in labelled]  # a hedged human label counts by its label in human accuracy
    human = [NO_VERDICT if label is not None and not sure and human_low_confidence == "separate" else label
             for label, sure in labelled]
    report: dict[str, Any] = {"kind": "binary", "n": len(verdicts), **_parse_counts(verdicts, rows),
                              "no_verdict": judge.count(NO_VERDICT), "parse_rate": sum(v.parsed for v in verdicts) / len(verdicts),
                              "human_low_confidence": sum(1 for label, sure in labelled if label is not None and not sure),
                              "conventions": {"low_confidence": low_confidence, "unparsed": unparsed,
                                              "human_low_confidence": human_low_confidence}}
    per_model: dict[str, dict[str, Any]] = {}
    for g in sorted(set(groups)):
        idx = [i for i, x in enumerate(groups) if x == g]
        labels = [judge[i] for i in idx]
        both = {"unparsed_incorrect": _share_correct(labels, "incorrect"), "parsed_only": _share_correct(labels, "exclude")}
        entry: dict[str, Any] = {"n": len(idx), "judge_accuracy": both["unparsed_incorrect" if unparsed == "incorrect" else "parsed_only"],
                                 "judge_accuracy_conventions": both, "no_verdict": labels.count(NO_VERDICT)}
        scored = [human_scores[i] for i in idx if human_scores[i] is not None]
        if scored:
            entry["human_accuracy"] = sum(h == CORRECT for h in scored) / len(scored)
            if entry["judge_accuracy"] is not None:
                entry["score_delta"] = entry["judge_accuracy"] - entry["human_accuracy"]
            pairs = [(human[i], judge[i]) for i in idx if human[i] is not None]
            h, j = zip(*pairs)
            entry["percent_agreement"] = ag.percent_agreement(h, j)
            try:
                entry["scott_pi"] = ag.scott_pi(h, j)
            except ValueError:
                entry["scott_pi"] = None
        per_model[g] = entry
    report["per_model"] = per_model
    pairs = [(h, j) for h, j in zip(human, judge) if h is not None]
    if not pairs:
        return report
    h, j = (np.array(x, dtype=object) for x in zip(*pairs))
    categories = sorted(set(h.tolist()) | set(j.tolist()))  # fixed, so a resample that misses a label keeps AC1's q
    stats = {"percent_agreement": ag.percent_agreement, "cohen_kappa": ag.cohen_kappa, "scott_pi": ag.scott_pi,
             "gwet_ac1": lambda a, b: ag.gwet_ac1(a, b, categories),
             "krippendorff_alpha": lambda a, b: ag.krippendorff_alpha(np.stack([a, b], axis=1), "nominal")}
    report["agreement"] = {name: _with_ci(fn, h, j, n_resamples=n_resamples, seed=seed) for name, fn in stats.items()}
    report["agreement"]["n"] = len(h)
    ok = j != NO_VERDICT
    sure = h != NO_VERDICT  # the judge's accuracy is measured against confident human labels
    as_incorrect = np.where(ok, j, INCORRECT)
    both = ok & sure  # correct/incorrect on both sides
    report["accuracy"] = {
        "headline": "unparsed_incorrect" if unparsed == "incorrect" else "parsed_only",
        "unparsed_incorrect": ({**_with_ci(ag.percent_agreement, h[sure], as_incorrect[sure], n_resamples=n_resamples, seed=seed),
                                "n": int(sure.sum())} if sure.any() else {"value": None, "ci": None, "n": 0, "note": "no confident human label"}),
        "parsed_only": ({**_with_ci(ag.percent_agreement, h[both], j[both], n_resamples=n_resamples, seed=seed), "n": int(both.sum())}
                        if both.any() else {"value": None, "ci": None, "n": 0, "note": "no verdict to score"}),
    }
    pis = [e["scott_pi"] for e in per_model.values() if e.get("scott_pi") is not None]
    if len(pis) > 1:
        report["agreement"]["scott_pi_across_models"] = {"mean": float(np.mean(pis)), "std": float(np.std(pis, ddof=1))}
    hp, jp = h[both], j[both]
    if not both.any():
        report["confusion_note"] = "no correct/incorrect verdict: no confusion matrix, precision, recall or leniency"
        return report
    matrix, labels = ag.confusion_matrix(hp, jp, labels=[CORRECT, INCORRECT])
    report["confusion"] = {"rows": "human", "columns": "judge", "labels": labels, "matrix": matrix.tolist()}
    tp, fn, fp = matrix[0, 0], matrix[0, 1], matrix[1, 0]
    report["precision"] = float(tp / (tp + fp)) if tp + fp else None
    report["recall"] = float(tp / (tp + fn)) if tp + fn else None
    try:
        report["leniency"] = ag.leniency(hp, jp)
    except ValueError as err:
        report["leniency"] = {"note": str(err)}
    report["ranking"] = _ranking({m: e["judge_accuracy"] for m, e in per_model.items()},
                                 {m: e.get("human_accuracy") for m, e in per_model.items()}, ranking_threshold)
    return report


def score_report(verdicts: Sequence[Verdict], rows: Sequence[dict[str, Any]], human_field: str | None,
                 group_field: str | None = "model", n_resamples: int = 2000, seed: int = 0,
                 ranking_threshold: float = 0.9) -> dict[str, Any]:
    """Report for numeric verdicts (pointwise ratings, rewards)."""
    groups = _groups(rows, group_field)
    report: dict[str, Any] = {"kind": "score", "n": len(verdicts), **_parse_counts(verdicts, rows)}
    per_model = {}
    for g in sorted(set(groups)):
        values = [v.value for v, x in zip(verdicts, groups) if x == g and v.parsed]
        per_model[g] = _mean_se(values) if values else {"mean": None, "n": 0}
    report["per_model"] = per_model
    if not human_field:
        return report
    pairs = [(v.value, r.get(human_field)) for v, r in zip(verdicts, rows) if v.parsed and r.get(human_field) is not None]
    if not pairs:
        return report
    scores = np.array([p[0] for p in pairs], dtype=float)
    raw_h = [p[1] for p in pairs]
    try:  # binary human labels: how well the score separates correct from incorrect answers
        hb = np.array([binary_label(x) == CORRECT for x in raw_h])
        from sklearn.metrics import roc_auc_score

        report["human_binary"] = {"mean_score_correct": float(scores[hb].mean()) if hb.any() else None,
                                  "mean_score_incorrect": float(scores[~hb].mean()) if (~hb).any() else None,
                                  "auc": float(roc_auc_score(hb, scores)) if 0 < hb.sum() < len(hb) else None}
        human_by_model = {}
        for g in per_model:
            labels = [binary_label(r.get(human_field)) for r, x in zip(rows, groups) if x == g and r.get(human_field) is not None]
            human_by_model[g] = sum(lab == CORRECT for lab in labels) / len(labels) if labels else None
    except ValueError:
        hn = np.array(raw_h, dtype=float)
        from scipy import stats

        report["human_numeric"] = {
            "spearman": float(stats.spearmanr(scores, hn).statistic) if np.ptp(scores) and np.ptp(hn) else None,
            "krippendorff_alpha_interval": _with_ci(lambda a, b: ag.krippendorff_alpha(np.stack([a, b], 1).astype(float), "interval"),
                                                    scores, hn, n_resamples=n_resamples, seed=seed)}
        human_by_model = {}
        for g in per_model:
            vals = [float(r[human_field]) for r, x in zip(rows, groups) if x == g and r.get(human_field) is not None]
            human_by_model[g] = float(np.mean(vals)) if vals else None
    report["ranking"] = _ranking({m: e["mean"] for m, e in per_model.items()}, human_by_model, ranking_threshold)
    return report


def pairwise_report(verdicts: Sequence[Verdict], rows: Sequence[dict[str, Any]], human_field: str | None,
                    group_field: str | None = "model", n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Report for pairwise verdicts (candidate `answer` vs baseline `reference`)."""
    groups = _groups(rows, group_field)
    report: dict[str, Any] = {"kind": "pairwise", "n": len(verdicts), **_parse_counts(verdicts, rows)}
    parsed = [v for v in verdicts if v.parsed]
    inconsistent = sum(v.status == "inconsistent" for v in verdicts)
    report["inconsistent"] = inconsistent
    report["inconsistency_rate"] = inconsistent / len(parsed) if parsed else None
    positions = [v.detail["preferred_position"] for v in verdicts if v.status == "inconsistent" and "preferred_position" in v.detail]
    if positions:
        report["inconsistent_preferred_position"] = {p: positions.count(p) for p in sorted(set(positions))}
    per_model = {}
    for g in sorted(set(groups)):
        idx = [i for i, x in enumerate(groups) if x == g and verdicts[i].parsed]
        if not idx:
            per_model[g] = {"n_total": 0}
            continue
        values = [verdicts[i].value for i in idx]
        entry = {**pairwise_win_rate(values), "ties_judged": sum(verdicts[i].detail.get("tie", False) for i in idx),
                 "ties_inconsistent": sum(verdicts[i].status == "inconsistent" and verdicts[i].value == 0.5 for i in idx),
                 "alpaca": alpaca_win_rate([1 + v for v in values])}
        if len(idx) >= 10:
            import warnings

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                entry["length_controlled"] = length_controlled_win_rate(
                    [1 + v for v in values], [len(rows[i]["answer"]) for i in idx], [len(rows[i]["reference"]) for i in idx])
            if caught:
                entry["length_controlled"]["warning"] = str(caught[-1].message)
        per_model[g] = entry
    report["per_model"] = per_model
    if human_field:
        pairs = [(pairwise_label(r.get(human_field)), v.value if v.parsed else "unparsed")
                 for v, r in zip(verdicts, rows) if r.get(human_field) is not None]
        if pairs:
            h, j = (np.array([str(x) for x in col], dtype=object) for col in zip(*pairs))
            report["agreement"] = {"percent_agreement": _with_ci(ag.percent_agreement, h, j, n_resamples=n_resamples, seed=seed),
                                   "cohen_kappa": _with_ci(ag.cohen_kappa, h, j, n_resamples=n_resamples, seed=seed),
                                   "n": len(h)}
            matrix, labels = ag.confusion_matrix(h, j)
            report["confusion"] = {"rows": "human", "columns": "judge", "labels": labels, "matrix": matrix.tolist()}
    return report


def _parse_counts(verdicts: Sequence[Verdict], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    unparsed = [{"index": i, "question": rows[i].get("question"), "model": rows[i].get("model"), "raw": v.raw}
                for i, v in enumerate(verdicts) if not v.parsed]
    return {"unparsed": len(unparsed), "unparsed_items": unparsed,
            "low_confidence": sum(v.status == "low_confidence" for v in verdicts)}


REPORTS = {"binary": binary_report, "score": score_report, "pairwise": pairwise_report}
