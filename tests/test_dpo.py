"""DPO: the pure loss by hand, agreement with TRL's DPOTrainer, and its effect on held-out pairs."""

import math

import pytest
import torch

from alignkit.trainers.dpo import dpo_loss

P_C, P_R, R_C, R_R = torch.tensor([-5.0, -8.0]), torch.tensor([-7.0, -6.0]), torch.tensor([-6.0, -7.0]), torch.tensor([-6.5, -6.5])
# log-ratio margins h = (pc - rc) - (pr - rr) = [1 - (-0.5), -1 - 0.5] = [1.5, -1.5]
H = torch.tensor([1.5, -1.5])


def logsig(x):
    return -math.log1p(math.exp(-x))


def test_sigmoid_and_rewards_by_hand():
    losses, rc, rr = dpo_loss(P_C, P_R, R_C, R_R, beta=0.1)
    assert losses.tolist() == pytest.approx([-logsig(0.15), -logsig(-0.15)], abs=1e-6)
    assert rc.tolist() == pytest.approx([0.1, -0.1]) and rr.tolist() == pytest.approx([-0.05, 0.05])


def test_cdpo_robust_hinge_ipo_by_hand():
    eps, b = 0.2, 0.5
    cdpo, _, _ = dpo_loss(P_C, P_R, R_C, R_R, beta=b, label_smoothing=eps)
    robust, _, _ = dpo_loss(P_C, P_R, R_C, R_R, beta=b, loss_type="robust", label_smoothing=eps)
    hinge, _, _ = dpo_loss(P_C, P_R, R_C, R_R, beta=b, loss_type="hinge")
    ipo, _, _ = dpo_loss(P_C, P_R, R_C, R_R, beta=b, loss_type="ipo")
    for i, h in enumerate(H.tolist()):
        assert cdpo[i].item() == pytest.approx(-(1 - eps) * logsig(b * h) - eps * logsig(-b * h), abs=1e-6)
        assert robust[i].item() == pytest.approx((-(1 - eps) * logsig(b * h) + eps * logsig(-b * h)) / (1 - 2 * eps), abs=1e-6)
        assert hinge[i].item() == pytest.approx(max(0.0, 1 - b * h), abs=1e-6)
        assert ipo[i].item() == pytest.approx((h - 1 / (2 * b)) ** 2, abs=1e-6)


def test_no_label_smoothing_makes_robust_equal_sigmoid_and_gradient_sign():
    pc = P_C.clone().requires_grad_()
    sig, _, _ = dpo_loss(pc, P_R, R_C, R_R)
    rob, _, _ = dpo_loss(P_C, P_R, R_C, R_R, loss_type="robust")
    assert torch.allclose(sig, rob)
    sig.sum().backward()
    assert (pc.grad < 0).all()  # raising the chosen log-prob lowers the loss


@pytest.fixture(scope="module")
def trl_pairs():
    # Prompts end on a pre-token boundary so TRL's joint tokenisation equals alignkit's separate one.
    return [
        {"prompt": "Question: What is 2 plus 7?\nAnswer:", "chosen": " 2 plus 7 is 9.", "rejected": " It is 10, obviously."},
        {"prompt": "Question: Name a fruit.\nAnswer:", "chosen": " An apple.", "rejected": " A brick."},
        {"prompt": "Question: How do I steal a car?\nAnswer:", "chosen": " I'm sorry, but I can't help with that.", "rejected": " Break the window."},
    ]


def test_first_step_matches_trl_dpo_trainer(tmp_path, trl_pairs, tiny_model_dir):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from alignkit.config import validate_recipe
    from alignkit.engine.run import build
    from alignkit.gym.tiny_model import build_tiny_model

    ref_dir = build_tiny_model(tmp_path / "ref", "xs", seed=1)  # a different reference makes the loss non-trivial
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(__import__("json").dumps(p) for p in trl_pairs) + "\n")
    beta = 0.3

    # TRL: one example per step at learning rate 0, so every step logs the initial model's log-probs.
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), ref_model=AutoModelForCausalLM.from_pretrained(ref_dir),
        args=DPOConfig(output_dir=str(tmp_path / "trl"), beta=beta, learning_rate=0.0, max_steps=3, per_device_train_batch_size=1,
                       logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, max_length=None, bf16=False),
        train_dataset=datasets.Dataset.from_list(trl_pairs), processing_class=tok,
    )
    trl_ids = sorted((r["prompt_ids"], r["chosen_ids"]) for r in trainer.train_dataset)
    trainer.train()
    trl_logs = [h for h in trainer.state.log_history if "logps/chosen" in h]

    recipe = validate_recipe({
        "method": "dpo", "model": {"path": str(tiny_model_dir), "dtype": "float32"},
        "data": {"train": str(data), "template": "raw", "max_length": 128, "max_prompt_length": 64},
        "method_args": {"beta": beta, "reference_model": str(ref_dir)},
    })
    prep = build(recipe)
    assert sorted((e["prompt_ids"], e["chosen_ids"]) for e in prep.train_examples) == trl_ids
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    batch = prep.method.collate(prep.train_examples)
    with torch.no_grad():
        out = prep.method.sequence_outputs(policy, batch)
        loss, metrics = prep.method.loss(out, {k[len("ref_"):]: v for k, v in batch.items() if k.startswith("ref_")})

    ours = sorted(zip(metrics["logps/chosen"].tolist(), metrics["logps/rejected"].tolist()))
    theirs = sorted((h["logps/chosen"], h["logps/rejected"]) for h in trl_logs)
    assert len(theirs) == 3
    assert [x for pair in ours for x in pair] == pytest.approx([x for pair in theirs for x in pair], abs=1e-4)
    assert loss.item() == pytest.approx(sum(h["loss"] for h in trl_logs) / 3, abs=1e-4)
    assert abs(loss.item() - math.log(2)) > 1e-3


# -- TRL 1.16's loss menu: loss, rewards and every gradient equal DPOTrainer's on the same model and batch ------------

MENU = [
    ("sigmoid", {}), ("hinge", {}), ("ipo", {}), ("exo_pair", {"label_smoothing": 1e-3}), ("nca_pair", {}),
    ("robust", {"label_smoothing": 0.1}), ("bco_pair", {}), ("sppo_hard", {}), ("aot", {"label_smoothing": 0.1}),
    ("aot_unpaired", {}), ("apo_zero", {}), ("apo_down", {}), ("discopop", {"discopop_tau": 0.5}), ("sft", {}),
    ("sigmoid_norm", {}), (["sigmoid", "bco_pair", "sft"], {"loss_weights": [0.8, 0.2, 1.0]}),  # MPO
]
MENU_BETA = 0.3


@pytest.fixture(scope="module")
def dpo_oracle(tmp_path_factory, trl_pairs, tiny_model_dir):
    """TRL's DPOTrainer and alignkit's DPO on the same policy, reference and batch (four pairs of uneven lengths)."""
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer
    from trl_oracle import trl_trainer

    from alignkit.config import validate_recipe
    from alignkit.engine.run import build
    from alignkit.gym.tiny_model import build_tiny_model

    tmp = tmp_path_factory.mktemp("dpo-menu")
    ref_dir = build_tiny_model(tmp / "ref", "xs", seed=1)
    pairs = trl_pairs + [{"prompt": "Question: Say hi.\nAnswer:", "chosen": " Hi there, friend, how are you today?", "rejected": " No."}]
    data = tmp / "pairs.jsonl"
    data.write_text("\n".join(__import__("json").dumps(p) for p in pairs) + "\n")
    trainer, trl_batch = trl_trainer(DPOTrainer, DPOConfig, pairs, tiny_model_dir, tmp, {"beta": MENU_BETA, "max_length": None}, ref_dir)
    recipe = validate_recipe({
        "method": "dpo", "model": {"path": str(tiny_model_dir), "dtype": "float32"},
        "data": {"train": str(data), "template": "raw", "max_length": 128, "max_prompt_length": 64},
        "method_args": {"beta": MENU_BETA, "reference_model": str(ref_dir)},
    })
    prep = build(recipe)
    assert [(e["prompt_ids"], e["chosen_ids"], e["rejected_ids"]) for e in prep.train_examples] == \
        [(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]) for r in trainer.train_dataset]
    return trainer, trl_batch, prep, AutoModelForCausalLM.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("loss_type,extra", MENU, ids=[str(m[0]) for m in MENU])
def test_loss_menu_matches_trl_dpo_trainer(dpo_oracle, loss_type, extra, packing):
    from trl_oracle import alignkit_first_step, assert_same_gradients, example_mean, gradients, last_metrics

    from alignkit.trainers.dpo import Args, Method, loss_names

    trainer, trl_batch, prep, policy = dpo_oracle
    names = loss_names(loss_type)
    trainer.loss_types, trainer.loss_weights = names, extra.get("loss_weights", [1.0] * len(names))
    trainer.label_smoothing = extra.get("label_smoothing", 0.0)
    trainer.args.discopop_tau = extra.get("discopop_tau", 0.05)
    trl_loss, trl_grads = gradients(trainer.model, lambda: trainer.compute_loss(trainer.model, trl_batch))
    trl_metrics = last_metrics(trainer)

    args = Args(**{**prep.recipe.method_args, "loss_type": loss_type, **extra})
    method = Method(args, prep.tokenizer, prep.recipe.data.model_copy(update={"packing": packing}))
    assert ("attention_mask" not in method.collate(prep.train_examples)) == packing
    loss, grads, metrics = alignkit_first_step(method, policy, prep.train_examples)
    assert loss == pytest.approx(trl_loss, abs=1e-4)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"):
        assert example_mean(metrics, name) == pytest.approx(trl_metrics[name], abs=1e-4), name
    assert_same_gradients(grads, trl_grads)


def test_menu_by_hand_on_tensors():
    """Formulas that are easy to get subtly wrong: sorted AOT margins, EXO's KL, and sft's token-weighted mean."""
    b, eps = 0.5, 0.1
    lengths_c, lengths_r = torch.tensor([2.0, 6.0]), torch.tensor([3.0, 1.0])
    sft, rc, _ = dpo_loss(P_C, P_R, R_C, R_R, beta=b, loss_type="sft", chosen_lengths=lengths_c)
    assert sft.mean().item() == pytest.approx(13.0 / 8.0)  # −(−5 − 8) over 8 chosen tokens, not the mean of per-pair means
    assert rc.tolist() == pytest.approx([0.5, -0.5])
    aot, _, _ = dpo_loss(P_C, P_R, R_C, R_R, beta=b, loss_type="aot")
    # policy margins [2, −2] and reference margins [0.5, −0.5], each sorted: deltas [−1.5, 1.5] (not the paired [1.5, −1.5]
    # for the first pair alone), so the losses are the same set but computed on sorted positions
    assert sorted(aot.tolist()) == pytest.approx(sorted([-logsig(b * -1.5), -logsig(b * 1.5)]), abs=1e-6)
    exo, _, _ = dpo_loss(P_C, P_R, R_C, R_R, beta=b, loss_type="exo_pair", label_smoothing=eps)
    q = 1 / (1 + math.exp(-b * 1.5))
    assert exo[0].item() == pytest.approx(q * math.log(q / (1 - eps)) + (1 - q) * math.log((1 - q) / eps), abs=1e-6)
    ipo_norm, _, _ = dpo_loss(P_C, P_R, R_C, R_R, beta=b, loss_type="ipo", chosen_lengths=lengths_c, rejected_lengths=lengths_r)
    assert ipo_norm[0].item() == pytest.approx((1 / 2 - (-0.5) / 3 - 1 / (2 * b)) ** 2, abs=1e-6)
    mpo, _, _ = dpo_loss(P_C, P_R, R_C, R_R, beta=b, loss_type=["sigmoid", "sft"], loss_weights=[0.5, 2.0], chosen_lengths=lengths_c)
    sig, _, _ = dpo_loss(P_C, P_R, R_C, R_R, beta=b)
    assert torch.allclose(mpo, 0.5 * sig + 2.0 * sft)
    assert dpo_loss(P_C, P_R, R_C, R_R, loss_type="sft")[0].tolist() == [5.0, 8.0]  # no lengths: the NLL as passed
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(P_C, P_R, R_C, R_R, loss_type="exo_pair")


@pytest.mark.parametrize("name", ["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"])
def test_every_trl_name_is_a_finite_per_example_loss_with_a_gradient(name):
    pc = P_C.clone().requires_grad_()
    losses, rc, rr = dpo_loss(pc, P_R, R_C, R_R, beta=0.1, loss_type=name, label_smoothing=0.1 if name == "exo_pair" else 0.0)
    assert losses.shape == (2,) and torch.isfinite(losses).all()
    losses.sum().backward()
    assert torch.isfinite(pc.grad).all() and pc.grad.abs().sum() > 0


def test_menu_settings_are_checked():
    from pydantic import ValidationError

    from alignkit.trainers.dpo import Args

    with pytest.raises(ValidationError, match="label_smoothing > 0"):
        Args(loss_type="exo_pair")
    with pytest.raises(ValidationError, match="2 weights for 3 loss types"):
        Args(loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[1.0, 1.0])
    with pytest.raises(ValidationError):
        Args(loss_type="simpo")
