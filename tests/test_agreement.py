"""Agreement statistics against scikit-learn / statsmodels / krippendorff, textbook values, degenerate inputs."""

import json

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss

from alignkit.judge import (
    bootstrap_ci, cohen_kappa, confusion_matrix, fleiss_kappa, krippendorff_alpha, leniency, percent_agreement,
    ranking_correlation, scott_pi, sensitivity_specificity,
)

RNG = np.random.default_rng(0)


def noisy_pair(n, k, noise):
    a = RNG.integers(0, k, n)
    b = np.where(RNG.random(n) < noise, RNG.integers(0, k, n), a)
    return a, b


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_cohen_kappa_matches_sklearn(seed, weights):
    a, b = noisy_pair(200 + seed, 2 + seed, 0.4)
    assert cohen_kappa(a, b, weights) == pytest.approx(cohen_kappa_score(a, b, weights=weights), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_fleiss_matches_statsmodels_and_two_raters_is_scott_pi(seed):
    base = RNG.integers(0, 3, 150)
    ratings = np.stack([np.where(RNG.random(150) < 0.3, RNG.integers(0, 3, 150), base) for _ in range(2 + seed)], axis=1)
    assert fleiss_kappa(ratings) == pytest.approx(sm_fleiss(aggregate_raters(ratings)[0]), abs=1e-12)
    assert fleiss_kappa(ratings[:, :2]) == pytest.approx(scott_pi(ratings[:, 0], ratings[:, 1]), abs=1e-12)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
@pytest.mark.parametrize("seed", range(4))
def test_krippendorff_matches_the_package_with_missing_values(level, seed):
    base = RNG.integers(1, 6, 80).astype(float)
    ratings = np.stack([np.where(RNG.random(80) < 0.35, RNG.integers(1, 6, 80), base) for _ in range(3 + seed)], axis=1)
    ratings[RNG.random(ratings.shape) < 0.2] = np.nan
    expected = krippendorff.alpha(reliability_data=ratings.T, level_of_measurement=level)
    assert krippendorff_alpha(ratings, level) == pytest.approx(expected, abs=1e-10)


def test_textbook_example():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15: p_o = 0.7, p_e = 0.5, kappa = 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert percent_agreement(a, b) == pytest.approx(0.7)
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert scott_pi(a, b) == pytest.approx((0.7 - (0.55**2 + 0.45**2)) / (1 - (0.55**2 + 0.45**2)))
    m, labels = confusion_matrix(a, b)
    assert labels == ["no", "yes"] and m.tolist() == [[15, 10], [5, 20]]
    assert krippendorff_alpha(np.stack([a, b], 1)) == pytest.approx(krippendorff.alpha(
        reliability_data=np.array([[a == "yes" for a in a], [x == "yes" for x in b]], dtype=float), level_of_measurement="nominal"))


def test_scott_pi_below_kappa_for_a_lenient_judge():
    human = ["correct"] * 50 + ["incorrect"] * 50
    judge = ["correct"] * 50 + ["correct"] * 20 + ["incorrect"] * 30  # says "correct" too often
    assert scott_pi(human, judge) < cohen_kappa(human, judge)


def test_leniency_recovers_the_generating_parameters():
    n, s, p_c, p_plus = 200_000, 0.6, 0.7, 0.8
    human = np.where(RNG.random(n) < s, "correct", "incorrect")
    applies = RNG.random(n) < p_c
    guess = np.where(RNG.random(n) < p_plus, "correct", "incorrect")
    judge = np.where(applies, human, guess)
    est = leniency(human, judge)
    assert est["p_correct_application"] == pytest.approx(p_c, abs=0.01)
    assert est["p_lenient_guess"] == pytest.approx(p_plus, abs=0.01)
    tpr, tnr = sensitivity_specificity(human, judge)
    assert tpr == pytest.approx(p_c + (1 - p_c) * p_plus, abs=0.01) and tnr == pytest.approx(p_c + (1 - p_c) * (1 - p_plus), abs=0.01)


@pytest.mark.parametrize("call, message", [
    (lambda: cohen_kappa([], []), "a is empty"),
    (lambda: cohen_kappa([1, 2], [1]), "different numbers of items: 2 vs 1"),
    (lambda: cohen_kappa([1, None], [1, 2]), r"a\[1\] is missing"),
    (lambda: cohen_kappa([1.0, float("nan")], [1, 2]), r"a\[1\] is missing"),
    (lambda: cohen_kappa(["x", "x"], ["x", "x"]), "both raters used one and the same label"),
    (lambda: scott_pi(["x"], ["x"]), "both raters used one and the same label"),
    (lambda: fleiss_kappa([[1, 1], [1, 1]]), "every rating is the same label"),
    (lambda: fleiss_kappa([[1], [2]]), "at least 2 raters"),
    (lambda: krippendorff_alpha([[1, np.nan], [np.nan, 2]]), "no item has two or more ratings"),
    (lambda: krippendorff_alpha([["a", "b"]], "interval"), "needs numeric ratings"),
    (lambda: cohen_kappa([1, 2], [2, 1], weights="cubic"), "weights must be"),
    (lambda: leniency(["correct"] * 3, ["correct"] * 3), "need human labels of both kinds"),
    (lambda: ranking_correlation([1, 1], [1, 2]), "same score"),
    (lambda: bootstrap_ci(percent_agreement, [1, 2], [1]), "equal length"),
])
def test_degenerate_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_one_class_with_disagreement_is_defined():
    assert cohen_kappa(["x", "x", "x"], ["x", "y", "x"]) == 0.0  # one rater constant: no agreement beyond chance


def test_ranking_correlation():
    corr = ranking_correlation([0.9, 0.5, 0.7, 0.1], [0.8, 0.4, 0.75, 0.2])
    assert corr["spearman"] == pytest.approx(1.0) and corr["kendall"] == pytest.approx(1.0)


def test_bootstrap_ci_is_deterministic_and_brackets_the_estimate():
    a, b = noisy_pair(300, 2, 0.3)
    low, high = bootstrap_ci(cohen_kappa, a, b, n_resamples=500)
    assert low < cohen_kappa(a, b) < high
    assert (low, high) == bootstrap_ci(cohen_kappa, a, b, n_resamples=500)


def test_gym_annotators_kappa_falls_with_noise_and_cis_cover_the_expected_value():
    items = [json.loads(line) for line in open("data/gym/train_judge.jsonl")]
    human = np.array([i["human_label"] for i in items])
    p = np.mean(human == "correct")
    kappas = []
    for k, noise in enumerate((0.05, 0.15, 0.30), start=1):
        annotator = np.array([i[f"annotator_{k}"] for i in items])
        kappa = cohen_kappa(human, annotator)
        # Binary labels flipped with probability e: p_o = 1 - e, the annotator's "correct" rate q = p(1-e) + (1-p)e.
        q = p * (1 - noise) + (1 - p) * noise
        expected = ((1 - noise) - (p * q + (1 - p) * (1 - q))) / (1 - (p * q + (1 - p) * (1 - q)))
        low, high = bootstrap_ci(cohen_kappa, human, annotator, n_resamples=1000, seed=k)
        assert low <= expected <= high, (noise, low, expected, high)
        kappas.append(kappa)
    assert kappas[0] > kappas[1] > kappas[2]
