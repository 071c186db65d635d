"""Reward transforms API: calibration, transforms, win-rate estimators vs Monte Carlo, choosing t."""

import numpy as np
import pytest
import torch
from scipy import stats

from alignkit.rewards import (
    Calibrator, best_of_n, calibrate, choose_t, exponential, identity, inference_win_rate, kl_winrate_curve, log,
    unbiased_win_rate, winrate_at_kl, worst_of_n,
)

RNG = np.random.default_rng(0)


# -- calibration --------------------------------------------------------------------------------


def test_reference_against_itself_is_uniform():
    ref = RNG.normal(size=(8, 500)) * RNG.uniform(0.1, 10, size=(8, 1)) + RNG.normal(size=(8, 1)) * 5
    u = calibrate(ref, ref)
    assert u.shape == (8, 500)
    for row in u:
        assert stats.kstest(row, "uniform").pvalue > 0.01
    assert abs(u.mean() - 0.5) < 1e-12  # mid-rank ties: E_ref[C] = 1/2 exactly


def test_calibration_is_invariant_to_increasing_transforms():
    r, ref = RNG.normal(size=(3, 20)), RNG.normal(size=(3, 50))
    assert np.allclose(calibrate(r, ref), calibrate(np.exp(3 * r) + 7, np.exp(3 * ref) + 7))


def test_tie_rules():
    r, ref = [1.0, 2.0, 2.0, 3.0], [2.0, 2.0]
    assert calibrate(r, ref).tolist() == [0.0, 0.5, 0.5, 1.0]
    assert calibrate(r, ref, ties="lower").tolist() == [0.0, 0.0, 0.0, 1.0]
    assert calibrate(r, ref, ties="upper").tolist() == [0.0, 1.0, 1.0, 1.0]
    assert calibrate([1, 2, 3], [2], ties="half").tolist() == [0.0, 0.5, 1.0]  # K = 1
    with pytest.raises(ValueError, match="ties must be one of"):
        calibrate(r, ref, ties="mid")


def test_shapes_kinds_and_errors():
    r32 = torch.tensor([[0.1, 0.9], [0.5, 0.2]], dtype=torch.float32)
    out = calibrate(r32, torch.tensor([[0.0, 1.0], [0.3, 0.4]]))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.tolist() == [[0.5, 0.5], [1.0, 0.0]]
    assert isinstance(calibrate(np.array([0.1]), np.array([0.0])), np.ndarray)
    assert calibrate(np.array([[0.5], [2.0]]), np.array([1.0, 0.0])).tolist() == [[0.5], [1.0]]  # one reference for all prompts
    with pytest.raises(ValueError, match="rewards is empty"):
        calibrate([], [1.0])
    with pytest.raises(ValueError, match="reference_rewards is empty"):
        calibrate([1.0], np.empty((0,)))
    with pytest.raises(ValueError, match=r"rewards contains NaN at index \(1,\)"):
        calibrate([1.0, float("nan")], [1.0])
    with pytest.raises(ValueError, match="reference_rewards contains NaN"):
        calibrate([1.0], [float("nan")])
    with pytest.raises(ValueError, match="reference_rewards has 2 prompts"):
        calibrate(np.zeros((3, 4)), np.zeros((2, 5)))


def test_calibrator_matches_calibrate_with_ragged_references():
    refs = {"a": RNG.normal(size=30), "b": RNG.normal(size=7), 3: RNG.normal(size=1)}
    cal = Calibrator().fit(refs.keys(), refs.values())
    ids = ["a", "b", 3, "a", "b"]
    rewards = RNG.normal(size=5)
    expected = [calibrate(rewards[i : i + 1], refs[p])[0] for i, p in enumerate(ids)]
    assert np.allclose(cal(ids, rewards), expected)
    assert cal.reference_size("b") == 7 and len(cal) == 3
    with pytest.raises(KeyError, match="no reference rewards for prompt ids \\['zz'\\]"):
        cal(["zz"], [1.0])
    with pytest.raises(ValueError, match="2 prompt ids but 1 rewards"):
        cal(["a", "b"], [1.0])


# -- transforms -----------------------------------------------------------------------------------


@pytest.mark.parametrize("transform", [identity(), log(1e-3), best_of_n(5.0), best_of_n(300, normalized=True), worst_of_n(6.0),
                                       worst_of_n(300, normalized=True), exponential(-4.0), exponential(0.0)])
def test_transforms_are_finite_and_increasing(transform):
    u = np.linspace(0, 1, 1001)
    phi = transform(u)
    assert np.isfinite(phi).all()
    assert (np.diff(phi) >= 0).all() and phi[-1] > phi[0]


def test_transform_values():
    u = np.array([0.0, 0.5, 1.0])
    assert np.allclose(best_of_n(2.0)(u), np.exp([0, 1, 2]))
    assert np.allclose(worst_of_n(2.0)(u), -np.exp([0, -1, -2]))  # negative exponent, with the minus sign
    assert np.allclose(best_of_n(2.0, normalized=True)(u), np.expm1([0, 1, 2]) / np.expm1(2))
    assert np.allclose(exponential(2.0)(u), best_of_n(2.0, normalized=True)(u))
    assert np.allclose(exponential(-2.0)(u), worst_of_n(2.0, normalized=True)(u))
    assert np.allclose(exponential(1e-9)(u), u, atol=1e-6)
    assert np.allclose(best_of_n(500, normalized=True)(u), [0, np.exp(-250), 1])
    assert log(0.01)(np.array([0.0]))[0] == pytest.approx(np.log(0.01))
    composed = best_of_n(3.0)(calibrate(torch.tensor([2.0]), torch.tensor([1.0, 3.0])))
    assert isinstance(composed, torch.Tensor) and composed.item() == pytest.approx(np.exp(1.5))
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
        identity()([1.5])
    with pytest.raises(ValueError, match="t > 0"):
        best_of_n(-1.0)
    assert str(best_of_n(4.5)) == "best_of_n(t=4.5)"


# -- win-rate estimators against brute-force Monte Carlo -------------------------------------------

DISTRIBUTIONS = {
    "gaussian shift": (lambda n: RNG.normal(0.5, 1.0, n), lambda n: RNG.normal(0.0, 1.0, n)),
    "discrete with ties": (lambda n: RNG.poisson(3.0, n).astype(float), lambda n: RNG.poisson(2.5, n).astype(float)),
    "skewed, wider policy": (lambda n: RNG.lognormal(0.0, 1.0, n), lambda n: RNG.exponential(1.2, n)),
}


def monte_carlo(policy, reference, procedure, n, duels=400_000):
    k = 1 if procedure == "standard" else n
    p, q = policy(duels * k).reshape(duels, k), reference(duels * k).reshape(duels, k)
    a, b = (p.max(1), q.max(1)) if procedure != "won" else (p.min(1), q.min(1))
    wins = (a > b) + 0.5 * (a == b)
    return wins.mean(), wins.std() / np.sqrt(duels)


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
@pytest.mark.parametrize("procedure, n", [("standard", 1), ("bon", 4), ("won", 4), ("bon", 2)])
def test_plugin_estimator_agrees_with_monte_carlo(name, procedure, n):
    policy, reference = DISTRIBUTIONS[name]
    truth, mc_se = monte_carlo(policy, reference, procedure, n)
    est = inference_win_rate(policy(80 * 400).reshape(80, 400), reference(80 * 400).reshape(80, 400), procedure, n)
    assert abs(est.estimate - truth) < 3 * np.hypot(est.standard_error, mc_se), (est, truth)


def test_single_prompt_uses_bootstrap_standard_error():
    policy, reference = DISTRIBUTIONS["gaussian shift"]
    truth, _ = monte_carlo(policy, reference, "bon", 4)
    est = inference_win_rate(policy(2000), reference(2000), "bon", 4)
    assert len(est.per_prompt) == 1 and 0 < est.standard_error < 0.05
    assert abs(est.estimate - truth) < 3 * est.standard_error


@pytest.mark.parametrize("procedure, n", [("standard", 1), ("bon", 4), ("won", 4), ("bon", 8)])
def test_unbiased_estimator_agrees_with_monte_carlo(procedure, n):
    policy, reference = DISTRIBUTIONS["gaussian shift"]
    truth, mc_se = monte_carlo(policy, reference, procedure, n)
    calibrated = stats.norm.cdf(policy(60 * 50).reshape(60, 50))  # exact calibration against N(0, 1)
    est = unbiased_win_rate(calibrated, procedure, n)
    assert abs(est.estimate - truth) < 3 * np.hypot(est.standard_error, mc_se), (est, truth)


def test_estimator_edge_cases():
    same = np.arange(10.0)
    assert inference_win_rate(same, same, "bon", 4).estimate == pytest.approx(0.5)  # identical samples: a fair coin
    assert inference_win_rate([5.0], [1.0, 2.0], "won", 3).estimate == 1.0
    with pytest.raises(ValueError, match="cover 2 prompts but reference rewards cover 3"):
        inference_win_rate(np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="procedure must be one of"):
        inference_win_rate([1.0], [1.0], "best")
    with pytest.raises(ValueError, match="needs at least n=4 samples"):
        unbiased_win_rate([0.1, 0.2], "bon", 4)


# -- the model-free KL / win-rate tool -----------------------------------------------------------


@pytest.mark.parametrize("n", [2, 4, 8])
def test_bon_policy_closed_forms(n):
    kl, win = kl_winrate_curve(log(1e-12), 1, [1 / (n - 1)], mode="standard")
    assert kl[0] == pytest.approx(np.log(n) - (n - 1) / n, abs=1e-4)
    assert win[0] == pytest.approx(n / (n + 1), abs=1e-4)


# The spec's derived table (§B.6): best t at KL 0.5 and 1.0, with its win rate and the identity's.
SPEC = [
    ("bon", 2, 0.5, 4.5, 0.816, 0.792), ("bon", 2, 1.0, 5.5, 0.897, 0.873),
    ("bon", 4, 0.5, 12.5, 0.873, 0.800), ("bon", 4, 1.0, 17.5, 0.940, 0.877),
    ("won", 2, 0.5, 3.5, 0.860, 0.840), ("won", 2, 1.0, 6.0, 0.948, 0.937),
    ("won", 4, 0.5, 9.5, 0.948, 0.886), ("won", 4, 1.0, 16.0, 0.993, 0.975),
]


@pytest.mark.parametrize("mode, n, kl, t, win, identity_win", SPEC)
def test_choose_t_reproduces_the_spec_table(mode, n, kl, t, win, identity_win):
    choice = choose_t(n, kl, mode)
    assert abs(choice.t - t) <= 0.5  # the spec's sweep used steps of 0.5
    assert choice.winrate == pytest.approx(win, abs=2e-3)
    assert choice.identity_winrate == pytest.approx(identity_win, abs=2e-3)
    assert choice.winrate > choice.identity_winrate
    # the chosen transform really sits at the budget, in raw and normalised scales
    assert winrate_at_kl(choice.transform, n, kl, mode) == pytest.approx(choice.winrate, abs=1e-9)
    normalised = exponential(choice.t if mode == "bon" else -choice.t)
    kl_norm, _ = kl_winrate_curve(normalised, n, [choice.beta_normalized], mode)
    assert kl_norm[0] == pytest.approx(kl, abs=1e-6)


@pytest.mark.parametrize("procedure", ["standard", "bon", "won"])
def test_ustat_win_rate_is_unbiased_with_few_policy_samples_and_ties(procedure):
    """k = 4 policy samples against m = 200 reference samples of discrete rewards: the U-statistic averages to
    the true win rate (Monte Carlo), where the plug-in shrinks best-of-N."""
    rng = np.random.default_rng(0)
    values = np.array([0.0, 1.0, 2.0, 3.0])
    p_policy, p_ref = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.3, 0.3, 0.2, 0.2])
    n = 1 if procedure == "standard" else 4
    # truth by Monte Carlo on the two distributions, ties ½
    a = rng.choice(values, size=(200000, n), p=p_policy)
    b = rng.choice(values, size=(200000, n), p=p_ref)
    pick = (lambda x: x.min(-1)) if procedure == "won" else (lambda x: x.max(-1))
    truth = np.mean((pick(a) > pick(b)) + 0.5 * (pick(a) == pick(b)))
    policy = rng.choice(values, size=(4000, 4), p=p_policy)
    reference = rng.choice(values, size=(4000, 200), p=p_ref)
    ustat = inference_win_rate(policy, reference, procedure, 4, estimator="ustat")
    assert abs(ustat.estimate - truth) < 4 * ustat.standard_error + 0.003
    if procedure == "bon":
        plugin = inference_win_rate(policy, reference, procedure, 4)
        assert plugin.estimate < truth - 0.03  # the plug-in's small-sample shrinkage the U-statistic avoids
    # the same distribution on both sides: 0.5
    same = inference_win_rate(rng.choice(values, size=(4000, 4), p=p_ref), reference, procedure, 4, estimator="ustat")
    assert abs(same.estimate - 0.5) < 4 * same.standard_error + 0.003
