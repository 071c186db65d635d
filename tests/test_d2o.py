"""D²O: the loss against DPO, NPO and hand-computed values; samples and reference cached by prepare; a short run."""

import math

import pytest
import torch
import torch.nn.functional as F

from alignkit.config import load_recipe
from alignkit.trainers.d2o import d2o_loss
from alignkit.trainers.dpo import dpo_loss

QUICK = ["model.path=data/gym/base-s", "method_args.num_samples=3", "method_args.sample_max_tokens=16",
         "training.num_train_epochs=1", "training.logging_steps=3"]


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 5 - 20


def test_k1_and_equal_weights_is_dpo_with_the_sample_as_chosen():
    ps, rs, pn, rn = rand(6, 1, seed=1), rand(6, 1, seed=2), rand(6, seed=3), rand(6, seed=4)
    d2o, _ = d2o_loss(ps, rs, pn, rn, alpha=0.3, beta=0.3)
    dpo, _, _ = dpo_loss(ps[:, 0], pn, rs[:, 0], rn, beta=0.3)
    assert torch.allclose(d2o, dpo, atol=1e-6)


def test_beta_zero_is_the_npo_form():
    pn, rn = rand(5, seed=3), rand(5, seed=4)
    alpha = 0.2
    d2o, _ = d2o_loss(rand(5, 4, seed=1), rand(5, 4, seed=2), pn, rn, alpha=alpha, beta=0.0)
    assert torch.allclose(d2o, -F.logsigmoid(-alpha * (pn - rn)), atol=1e-6)
    # NPO with beta_npo = alpha: (2/alpha)·log(1 + (pi/ref)^alpha); D²O is alpha/2 of it.
    npo = (2 / alpha) * torch.log1p(torch.exp(alpha * (pn - rn)))
    assert torch.allclose(d2o, alpha / 2 * npo, atol=1e-5)


def test_k3_by_hand_and_metrics():
    ps = torch.tensor([[-10.0, -12.0, -9.0]])
    rs = torch.tensor([[-11.0, -11.0, -11.0]])
    pn, rn = torch.tensor([-30.0]), torch.tensor([-25.0])
    losses, m = d2o_loss(ps, rs, pn, rn, alpha=0.1, beta=0.1)
    sample_term = 0.1 / 3 * ((1.0) + (-1.0) + (2.0))  # 0.0333
    negative_term = 0.1 * (-5.0)  # -0.5
    assert m["rewards/samples"].item() == pytest.approx(sample_term)
    assert m["rewards/negative"].item() == pytest.approx(negative_term)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-(sample_term - negative_term))), rel=1e-6)
    assert m["rewards/accuracies"].item() == 1.0


def test_jensen_bound_permutation_and_sample_gradient_scale():
    ps, rs, pn, rn = rand(8, 5, seed=1).requires_grad_(), rand(8, 5, seed=2), rand(8, seed=3), rand(8, seed=4)
    beta = 0.1
    d2o, _ = d2o_loss(ps, rs, pn, rn, alpha=beta, beta=beta)
    per_sample_dpo = torch.stack([dpo_loss(ps[:, i], pn, rs[:, i], rn, beta=beta)[0] for i in range(5)]).mean(0)
    assert (d2o <= per_sample_dpo + 1e-6).all()  # log σ is concave: D²O bounds the mean instance-level DPO loss
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(d2o_loss(ps[:, perm], rs[:, perm], pn, rn, beta, beta)[0], d2o)
    d2o.sum().backward()
    # d loss / d logp(y_i) = −σ(−margin)·β/K for every sample of an example
    margin = d2o_loss(ps, rs, pn, rn, beta, beta)[1]["rewards/margins"]
    expected = -torch.sigmoid(-margin)[:, None] * beta / 5
    assert torch.allclose(ps.grad, expected.expand(8, 5), atol=1e-6)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        d2o_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(3))


def test_prepare_draws_and_caches_samples_and_reference(tmp_path, caplog):
    from alignkit.engine.run import build, prepare

    recipe = load_recipe("recipes/d2o_tiny.yaml", [*QUICK, f"training.output_dir={tmp_path}"])
    first = prepare(recipe)
    assert "samples: 3 samples for each of 48 prompts" in first and ": computed for" in first
    prep = build(recipe)  # samples come from the rollout cache: no generator is loaded
    ex = prep.train_examples[0]
    assert len(ex["sample_ids"]) == 3 and all(len(s) <= 16 for s in ex["sample_ids"])
    same_prompt = [e for e in prep.train_examples if e["prompt_ids"] == ex["prompt_ids"]]
    assert len(same_prompt) == 2 and same_prompt[0]["sample_ids"] == same_prompt[1]["sample_ids"]  # sampled once per prompt
    second = prepare(recipe)
    assert ": reused" in second and ": computed" not in second


def test_rollout_cache_hit_loads_no_generator(tmp_path, monkeypatch):
    from alignkit.engine.run import build
    from alignkit.generation import backends

    recipe = load_recipe("recipes/d2o_tiny.yaml", [*QUICK, f"training.output_dir={tmp_path}"])
    build(recipe)
    monkeypatch.setattr(backends, "load_generator", lambda *a, **k: pytest.fail("sampled again despite the cache"))
    build(recipe)


def test_short_d2o_run_pushes_negatives_below_samples(tmp_path):
    from alignkit.engine.run import train

    recipe = load_recipe("recipes/d2o_tiny.yaml", [*QUICK, "training.num_train_epochs=2", f"training.output_dir={tmp_path}"])
    summary = train(recipe)
    assert summary.after["loss"] < summary.before["loss"]
    assert summary.after["rewards/margins"] > summary.before["rewards/margins"]
    assert summary.after["logps/rejected"] < summary.before["logps/rejected"]


def test_online_variant_redraws_samples_from_the_policy(tmp_path):
    from alignkit.engine.run import train

    with pytest.raises(ValueError, match="cannot be precomputed"):
        load_recipe("recipes/d2o_tiny.yaml", ["method_args.resample_every=2"])
    recipe = load_recipe("recipes/d2o_tiny.yaml", [*QUICK, "method_args.resample_every=4", "method_args.reference=model",
                                                     "training.max_steps=9", f"training.output_dir={tmp_path}"])
    import alignkit.trainers.d2o as d2o

    seen = []
    original = d2o.Method.resample

    def spy(self, model, step):
        before = dict(self.fresh)
        seconds = original(self, model, step)
        seen.append((step, len(self.fresh), before != self.fresh))
        return seconds

    d2o.Method.resample = spy
    try:
        summary = train(recipe)
    finally:
        d2o.Method.resample = original
    assert [s for s, _, _ in seen] == [4, 8]
    assert all(n == 36 and changed for _, n, changed in seen)  # every distinct train prompt, new samples each time
    assert summary.steps == 9


def test_online_variant_through_a_weight_synced_vllm_engine(tmp_path, monkeypatch):
    import alignkit.trainers.d2o as d2o
    from alignkit.engine.run import train

    recipe = load_recipe("recipes/d2o_tiny.yaml", [*QUICK, "method_args.resample_every=4", "method_args.reference=model",
                                                     "method_args.sample_backend=vllm", "training.max_steps=5",
                                                     "method_args.sample_engine_args={enforce_eager: true}",
                                                     f"training.output_dir={tmp_path}"])
    seen = []
    original = d2o.Method.resample

    def spy(self, model, step):
        before = dict(self.fresh)
        seconds = original(self, model, step)
        seen.append((step, type(self.sampler.engine).__name__, before != self.fresh, len(self.fresh)))
        return seconds

    monkeypatch.setattr(d2o.Method, "resample", spy)
    train(recipe)
    assert seen == [(4, "VLLMGenerator", True, 36)]
