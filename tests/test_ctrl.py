"""InfAlign CTRL: the advantage and KL pieces by hand, the transforms' direction, and the on-policy trainer end
to end with the HF sampler and with the vLLM sampler and weight sync."""

import json

import pytest
import torch

from alignkit.config import load_recipe
from alignkit.trainers.ctrl import ctrl_loss, kl_estimate, mean_baseline_advantages, rloo_advantages


def test_rloo_advantages_by_hand():
    r = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 0.0, 4.0]])
    a = rloo_advantages(r)
    # each reward minus the mean of the other three
    assert torch.allclose(a[0], torch.tensor([1 - 11 / 3, 2 - 10 / 3, 3 - 9 / 3, 6 - 6 / 3]))
    assert torch.allclose(a[1], torch.tensor([-4 / 3, -4 / 3, -4 / 3, 4.0]))
    assert torch.allclose(a.sum(-1), torch.zeros(2))  # leave-one-out advantages sum to 0 per prompt
    assert torch.allclose(mean_baseline_advantages(r)[1], torch.tensor([-1.0, -1.0, -1.0, 3.0]))
    assert torch.allclose(a, mean_baseline_advantages(r) * 4 / 3)  # RLOO = k/(k−1) × the mean baseline
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(torch.ones(3, 1))


def test_kl_estimators_and_the_reward_penalty():
    logp, ref = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -4.0])
    assert torch.allclose(kl_estimate(logp, ref, "k1"), torch.tensor([1.0, -1.0]))
    k3 = kl_estimate(logp, ref, "k3")
    assert torch.allclose(k3, torch.exp(ref - logp) - 1 - (ref - logp)) and (k3 >= 0).all()
    # the penalty is subtracted before the baseline: with equal rewards, the sample far from π_ref loses
    rewards = torch.zeros(1, 2)
    losses, adv = ctrl_loss(logp, ref, rewards, beta=1.0)
    assert adv[0, 0] < 0 < adv[0, 1]
    # the policy-gradient loss is −A·log π: its gradient is −A (only through the policy's log-prob)
    lp = logp.clone().requires_grad_()
    ctrl_loss(lp, ref, torch.tensor([[1.0, 0.0]]), beta=0.0)[0].sum().backward()
    assert torch.allclose(lp.grad, -rloo_advantages(torch.tensor([[1.0, 0.0]])).reshape(-1))


def test_won_transform_is_increasing_and_bon_favours_the_top():
    from alignkit.rewards import exponential, worst_of_n

    u = torch.linspace(0, 1, 11)
    for transform in (worst_of_n(5.0), worst_of_n(5.0, normalized=True), exponential(-5.0)):
        assert (torch.diff(transform(u)) > 0).all(), str(transform)  # spec Q7: never rewards worse responses
    bon = exponential(8.0)(u)
    assert (torch.diff(bon) > 0).all() and bon[9] - bon[8] > bon[2] - bon[1]


def ctrl_recipe(tmp_path, rm, *extra):
    tmp_path.mkdir(parents=True, exist_ok=True)
    prompts = tmp_path / "prompts.jsonl"
    rows = [json.loads(line) for line in open("data/gym/heldout_prompts.jsonl")]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows[::8]))  # 10 prompts of every family
    return load_recipe("recipes/ctrl_tiny.yaml", [
        "model.path=data/gym/base-s", f"data.train={prompts}", f"data.eval={prompts}", f"method_args.reward_model={rm}",
        "method_args.calibration_samples=16", "method_args.sample_max_tokens=24", "method_args.transform=identity",
        "training.per_device_train_batch_size=5", "training.per_device_eval_batch_size=10", "training.logging_steps=1",
        f"training.output_dir={tmp_path / 'run'}", *extra])


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    """A quickly trained gym reward model (tiny:xs classifier on the gym's pairs)."""
    from alignkit.engine.run import train

    out = tmp_path_factory.mktemp("rm")
    recipe = load_recipe("recipes/reward_tiny.yaml", ["model.path=tiny:xs", "training.max_steps=20", "training.learning_rate=3e-3",
                                                      f"training.output_dir={out}", "data.eval=[]"])
    return train(recipe).checkpoint


def test_ctrl_trains_with_the_hf_sampler_and_reports_win_rates(tmp_path, reward_model):
    from alignkit.engine.run import train

    recipe = ctrl_recipe(tmp_path, reward_model, "training.max_steps=3", "method_args.sample_backend=hf")
    summary = train(recipe)
    assert summary.steps == 3
    before, after = summary.before, summary.after
    assert before["kl"] == pytest.approx(0.0, abs=1e-4)  # policy == π_ref at the start
    for key in ("win/standard", "win/bon4", "win/heldout_standard", "win/heldout_bon4", "reward/calibrated", "entropy"):
        assert 0 <= after[key] <= (1 if key.startswith(("win", "reward/")) else 10), key
    # identity transform: the calibrated reward IS the per-sample standard win rate against π_ref, ~0.5 at the start
    assert abs(before["win/standard"] - 0.5) < 0.2


@pytest.mark.parametrize("kl_penalty", ["reward", "loss"])
def test_beta_to_infinity_makes_the_reference_a_fixed_point(kl_penalty):
    """The objective E[R] − β·KL divided by β tends to −KL, whose gradient at π = π_ref is 0: the policy does not
    move. Checked on a real model's sequence log-probs, with the policy at π_ref."""
    from transformers import AutoModelForCausalLM

    from alignkit.generation import HFGenerator, SamplingParams
    from alignkit.modeling.batching import pad_rows
    from alignkit.modeling.loading import load_tokenizer, resolve_model_path
    from alignkit.config import ModelSettings
    from alignkit.modeling.logprobs import per_sequence_sum, sequence_token_logprobs

    path = resolve_model_path("data/gym/base-s")
    policy = AutoModelForCausalLM.from_pretrained(path)
    tok = load_tokenizer(ModelSettings(path=path))
    gen = HFGenerator(policy, tok)
    results = gen.generate(["What is 5 plus 3?", "How do I pick a lock?", "List 2 fruits, one per line starting with '- '."],
                           SamplingParams(n=4, max_tokens=12, seed=0))
    rows = [(gen.encode(r.prompt), c.token_ids) for r in results for c in r.completions]
    batch = pad_rows(rows, tok.pad_token_id)
    rewards = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))

    def grad_norm(beta: float) -> float:
        policy.zero_grad()
        lp, mask = sequence_token_logprobs(policy, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
        logp = per_sequence_sum(lp, mask, batch)
        loss = ctrl_loss(logp, logp.detach(), rewards, beta, kl_penalty)[0].mean() / max(beta, 1.0)
        loss.backward()
        return sum(p.grad.norm() ** 2 for p in policy.parameters() if p.grad is not None).sqrt().item()

    free = grad_norm(0.0)
    assert free > 1e-3
    norms = [grad_norm(b) for b in (1e2, 1e4, 1e6)]
    assert norms[0] < free / 50 and norms[1] < free / 5000 and norms[2] < free / 500000  # → 0 like 1/β


def test_a_larger_beta_keeps_the_policy_closer_to_the_reference(tmp_path, reward_model):
    from alignkit.engine.run import train

    common = ["training.max_steps=8", "method_args.sample_backend=hf", "training.learning_rate=2e-4", "method_args.kl_penalty=loss"]
    free = train(ctrl_recipe(tmp_path / "free", reward_model, *common, "method_args.beta=0"))
    held = train(ctrl_recipe(tmp_path / "held", reward_model, *common, "method_args.beta=100"))
    assert free.after["kl"] > 0.3 and held.after["kl"] < 0.6 * free.after["kl"]


def test_ctrl_through_vllm_with_weight_sync(tmp_path, reward_model, monkeypatch):
    from alignkit.engine.run import train
    from alignkit.generation.vllm_engine import VLLMGenerator

    synced = []
    original = VLLMGenerator.sync_weights

    def spy(self, model, timeout=300.0):
        synced.append(sum(p.detach().double().sum().item() for p in model.parameters()))
        return original(self, model, timeout)

    monkeypatch.setattr(VLLMGenerator, "sync_weights", spy)
    recipe = ctrl_recipe(tmp_path, reward_model, "training.max_steps=2", "method_args.sample_backend=vllm",
                         "method_args.sample_engine_args={enforce_eager: true}")
    summary = train(recipe)
    # step 0 samples from the engine's own initial weights; steps 1 and 2 (and the final eval) sync the trained ones
    assert summary.steps == 2 and len(synced) == 2 and synced[0] != synced[1]
    assert summary.after["win/bon4"] >= 0


# -- issue 29 row 8: beta auto, bounded calibration, the GPU recipes ----------------------------------------------


def _args(**values):
    from alignkit.trainers.ctrl import Args

    return Args(reward="gold", **values)


def test_beta_auto_puts_the_optimum_at_the_kl_target_that_t_was_chosen_for():
    from alignkit.rewards import choose_t, identity, kl_winrate_curve
    from alignkit.trainers.ctrl import make_transform, resolve_beta

    args = _args(transform="bon", t="auto", n=4, kl_target=0.5)
    transform = make_transform(args, 256)
    beta = resolve_beta(args, transform)
    assert beta == pytest.approx(choose_t(4, 0.5, "bon").beta_normalized, rel=1e-4)  # the value TChoice computes
    assert beta == pytest.approx(0.31, abs=0.01)
    assert kl_winrate_curve(transform, 4, [beta])[0][0] == pytest.approx(0.5, rel=1e-3)
    assert kl_winrate_curve(transform, 4, [0.05])[0][0] > 4  # the old fixed beta aimed at KL ~4.4
    won = _args(transform="won", t="auto", kl_target=0.5)
    assert resolve_beta(won, make_transform(won, 256)) == pytest.approx(choose_t(4, 0.5, "won").beta_normalized, rel=1e-4)
    ident = _args(transform="identity", kl_target=0.2)
    assert kl_winrate_curve(identity(), 4, [resolve_beta(ident, identity())])[0][0] == pytest.approx(0.2, rel=1e-3)
    assert resolve_beta(_args(beta=0.05), transform) == 0.05 and _args().beta == "auto"
    with pytest.raises(ValueError, match="transform raw"):
        _args(transform="raw")


def test_beta_auto_reaches_the_loss():
    from alignkit.engine.run import build
    from alignkit.trainers.ctrl import ctrl_loss

    recipe = load_recipe("recipes/ctrl_tiny.yaml", ["method_args.beta=auto", "data.eval=[]", "method_args.sample_backend=hf"])
    method = build(recipe, compute_signals=False).method
    assert method.beta == pytest.approx(0.31, abs=0.01)
    logp, ref = torch.tensor([-3.0, -2.0, -4.0, -1.0]), torch.tensor([-2.5, -2.5, -2.5, -2.5])
    rewards = torch.tensor([[0.2, 0.9], [0.4, 0.1]])
    out = {"sample_logps": logp, "transformed": rewards.reshape(-1), "group": torch.tensor([2, 2]), "raw": rewards.reshape(-1),
           "calibrated": rewards.reshape(-1), "tokens": torch.ones(4), "entropy": torch.ones(4)}
    loss, _ = method.loss(out, {"sample_logps": ref})
    assert loss.item() == pytest.approx(ctrl_loss(logp, ref, rewards, method.beta)[0].mean().item())
    assert loss.item() != pytest.approx(ctrl_loss(logp, ref, rewards, 0.05)[0].mean().item())


def test_calibration_prompts_bound_the_train_prompts_and_prepare_prints_the_cost(tmp_path):
    from alignkit.engine.run import build, prepare

    recipe = ctrl_recipe(tmp_path, "data/gym/rm-s", "data.eval=[]", "method_args.calibration_prompts=3",
                         "method_args.sample_backend=hf")
    prep = build(recipe, compute_signals=False)
    assert len({r.prompt for r in prep.records}) == 3  # of the file's 10
    assert prep.records == build(recipe, compute_signals=False).records  # a seeded sample
    out = prepare(recipe)
    assert "calibration: 16 samples for each of 3 prompts = 48 completions of up to 24 tokens" in out


def test_the_gpu_recipes_use_beta_auto_bounded_calibration_and_a_worst_of_n_recipe():
    from alignkit.trainers.ctrl import Args

    helpful = load_recipe("recipes/ctrl_hh_helpful.yaml", check_files=False)
    harmless = load_recipe("recipes/ctrl_hh_harmless_won.yaml", check_files=False)
    for recipe, transform in ((helpful, "bon"), (harmless, "won")):
        args = Args.model_validate(recipe.method_args)
        assert args.beta == "auto" and args.transform == transform and args.t == "auto"
        assert args.calibration_samples * (args.calibration_prompts + recipe.data.eval[0].max_records) < 1_200_000
    assert Args.model_validate(harmless.method_args).reward_options == {"trust_remote_code": True, "output": "rewards:10",
                                                                         "max_batch_tokens": 32768}
