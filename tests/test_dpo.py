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
