"""Win rates from judge preferences: pairwise (ties ½), AlpacaEval-style, and length-controlled.

(`alignkit.rewards.winrate` is different: InfAlign's win-rate math on calibrated rewards.)

Conventions:
- pairwise values are P(candidate wins) per item in [0, 1]: 1 win, 0 loss, 0.5 tie (or a soft probability);
- AlpacaEval preferences are in [1, 2]: 1 = the baseline (output_1) wins, 2 = the model (output_2) wins,
  1.5 = draw; `preference = 1 + value` converts.

The length-controlled win rate re-implements AlpacaEval's `length_controlled_v1` GLM locally (no
downloads): soft-label logistic regression without intercept on `tanh(std_delta_len)` (character
lengths, baseline minus model, standardised), a `not_gamed_baseline` column of ones, and, when given, a
per-instruction difficulty covariate; L1 penalty, liblinear, 5-fold grouped CV. The LC win rate is the
mean predicted P(model wins) with the length term set to 0. AlpacaEval's regularisation toward two
"gamed" baselines needs their annotations, which are not available offline, so it is skipped (as in its
`length_controlled_minimal` variant); say so when comparing with leaderboard numbers.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np


def _values(values: Sequence[float], low: float, high: float, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError(f"{name}: need a non-empty 1-D sequence")
    if np.isnan(v).any():
        raise ValueError(f"{name}: contains NaN (drop unparsed verdicts first)")
    if (v < low).any() or (v > high).any():
        raise ValueError(f"{name}: values must lie in [{low}, {high}]")
    return v


def _sem(v: np.ndarray) -> float:
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def pairwise_win_rate(values: Sequence[float]) -> dict[str, Any]:
    """Win rate (ties count ½) with its standard error, on the 0-1 scale, and the win / tie / loss counts and
    shares (MT-Bench's win_rate, 1 - win - loss and loss_rate: a value above ½ is a win, below a loss)."""
    v = _values(values, 0, 1, "pairwise_win_rate")
    wins, losses, ties = int((v > 0.5).sum()), int((v < 0.5).sum()), int((v == 0.5).sum())
    return {"win_rate": float(v.mean()), "standard_error": _sem(v), "n_wins": wins, "n_losses": losses, "n_ties": ties,
            "n_total": int(len(v)), "win_share": wins / len(v), "tie_share": ties / len(v), "loss_share": losses / len(v)}


def alpaca_win_rate(preferences: Sequence[float]) -> dict[str, Any]:
    """AlpacaEval's head-to-head figures, in percent: win_rate = 100·mean(preference − 1) with its
    standard error, and the discrete win rate (each preference rounded to win/loss, draws kept as ½)."""
    p = _values(preferences, 1, 2, "alpaca_win_rate") - 1
    wins, losses = int((p > 0.5).sum()), int((p < 0.5).sum())
    draws = len(p) - wins - losses
    return {"win_rate": 100 * float(p.mean()), "standard_error": 100 * _sem(p), "discrete_win_rate": 100 * (wins + draws / 2) / len(p),
            "n_wins": wins, "n_wins_base": losses, "n_draws": draws, "n_total": int(len(p))}


def length_controlled_win_rate(preferences: Sequence[float], model_lengths: Sequence[int], baseline_lengths: Sequence[int],
                               difficulty: Sequence[float] | None = None, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """AlpacaEval-style length-controlled win rate (percent) from preferences in [1, 2] and character lengths."""
    from sklearn import config_context
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import GroupKFold

    y = _values(preferences, 1, 2, "length_controlled_win_rate") - 1
    lm, lb = np.asarray(model_lengths, dtype=float), np.asarray(baseline_lengths, dtype=float)
    if not len(lm) == len(lb) == len(y):
        raise ValueError(f"preferences, model_lengths and baseline_lengths differ in length: {len(y)}, {len(lm)}, {len(lb)}")
    if len(y) < 2 * folds:
        raise ValueError(f"the length-controlled win rate needs at least {2 * folds} items, got {len(y)}")
    delta = lb - lm
    scale = delta.std()
    length_term = np.tanh(delta / scale) if scale > 0 else np.zeros_like(delta)
    columns = [length_term, np.ones_like(y)]
    if difficulty is not None:
        d = np.asarray(difficulty, dtype=float)
        if len(d) != len(y):
            raise ValueError("difficulty must have one value per preference")
        columns.append(d)
    x = np.stack(columns, axis=1)
    # Soft labels: each item twice, labelled 1 with weight p and 0 with weight 1 - p, grouped for the CV.
    xx = np.concatenate([x, x])
    yy = np.concatenate([np.ones_like(y), np.zeros_like(y)])
    ww = np.concatenate([y, 1 - y])
    groups = np.concatenate([np.arange(len(y)), np.arange(len(y))])
    keep = ww > 0
    if len(np.unique(yy[keep])) < 2:  # all wins or all losses: the GLM is degenerate, LC equals the raw rate
        lc = np.full(len(y), float(y.mean()))
        weights = {"length": 0.0, "not_gamed_baseline": float("inf") if y.mean() == 1 else float("-inf")}
    else:
        splits = list(GroupKFold(n_splits=folds).split(xx[keep], yy[keep], groups[keep]))  # an item's two rows stay together
        model = LogisticRegressionCV(penalty="l1", solver="liblinear", fit_intercept=False, scoring="neg_log_loss",
                                     cv=splits, random_state=seed)
        # Process-wide metadata routing (alpaca_eval switches it on) would make fit() refuse the sample weights
        # unless requested; routing off here keeps the fit independent of that global setting.
        with warnings.catch_warnings(), config_context(enable_metadata_routing=False):
            warnings.simplefilter("ignore", category=FutureWarning)
            model.fit(xx[keep], yy[keep], sample_weight=ww[keep])
        neutral = x.copy()
        neutral[:, 0] = 0.0
        lc = model.predict_proba(neutral)[:, 1]
        coef = model.coef_[0]
        weights = {"length": float(coef[0]), "not_gamed_baseline": float(coef[1])}
        if difficulty is not None:
            weights["difficulty"] = float(coef[2])
    raw = 100 * float(y.mean())
    value = 100 * float(lc.mean())
    bound = 100.0 if value > raw else 0.0
    if abs(value - raw) > max(10.0, abs(bound - raw) / 4):
        warnings.warn(f"the length-controlled win rate {value:.1f} deviates strongly from the raw win rate {raw:.1f}", stacklevel=2)
    return {"length_controlled_win_rate": value, "lc_standard_error": 100 * _sem(lc), "win_rate": raw, "weights": weights,
            "n_total": int(len(y))}
