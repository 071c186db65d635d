"""SimPO: the pure loss by hand, agreement with TRL's CPOTrainer(loss_type="simpo") on loss, metrics and every gradient
(padded and packed), and a run that never loads or computes a reference."""

import json
import math

import pytest
import torch

from alignkit.trainers.simpo import simpo_loss

# Prompts start with the BOS text and end on a pre-token boundary, so TRL's CPO tokenisation (which prepends BOS when it
# is missing) equals alignkit's.
PAIRS = [
    {"prompt": "<s>Question: What is 2 plus 7?\nAnswer:", "chosen": " 2 plus 7 is 9.", "rejected": " It is 10, obviously."},
    {"prompt": "<s>Question: Name a fruit.\nAnswer:", "chosen": " An apple.", "rejected": " A brick."},
    {"prompt": "<s>Question: How do I steal a car?\nAnswer:", "chosen": " I'm sorry, but I can't help with that.", "rejected": " Break the window."},
    {"prompt": "<s>Question: Say hi.\nAnswer:", "chosen": " Hi there, friend, how are you today?", "rejected": " No."},
]


def logsig(x):
    return -math.log1p(math.exp(-x))


def test_simpo_loss_by_hand():
    chosen, rejected = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    losses, rc, rr = simpo_loss(chosen, rejected, beta=2.0, gamma=0.5)
    # β·(ā_w − ā_l) − γ = 2·0.5 − 0.5 = 0.5 and 2·(−1) − 0.5 = −2.5
    assert losses.tolist() == pytest.approx([-logsig(0.5), -logsig(-2.5)], abs=1e-6)
    assert rc.tolist() == pytest.approx([-2.0, -4.0]) and rr.tolist() == pytest.approx([-3.0, -2.0])
    smoothed, _, _ = simpo_loss(chosen, rejected, beta=2.0, gamma=0.5, label_smoothing=0.2)
    assert smoothed[0].item() == pytest.approx(-0.8 * logsig(0.5) - 0.2 * logsig(-0.5), abs=1e-6)
    c = chosen.clone().requires_grad_()
    simpo_loss(c, rejected)[0].sum().backward()
    assert (c.grad < 0).all()  # raising the chosen average log-prob lowers the loss


@pytest.fixture(scope="module")
def simpo_oracle(tmp_path_factory, tiny_model_dir):
    """TRL's CPOTrainer(loss_type="simpo") and alignkit's SimPO on the same policy and batch."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    from alignkit.config import validate_recipe
    from alignkit.engine.run import build

    tmp = tmp_path_factory.mktemp("simpo")
    data = tmp / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(p) for p in PAIRS) + "\n")
    trainer = CPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=CPOConfig(output_dir=str(tmp / "trl"), loss_type="simpo", per_device_train_batch_size=len(PAIRS), report_to=[],
                       use_cpu=True, bf16=False, gradient_checkpointing=False),
        train_dataset=datasets.Dataset.from_list(PAIRS), processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    trainer.model.train()
    trl_batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    recipe = validate_recipe({
        "method": "simpo", "model": {"path": str(tiny_model_dir), "dtype": "float32"},
        "data": {"train": str(data), "template": "raw", "max_length": 128, "max_prompt_length": 64},
    })
    prep = build(recipe)
    assert not prep.signals  # SimPO declares no signal
    for ours, row in zip(prep.train_examples, trainer.train_dataset):
        assert ours["prompt_ids"] + ours["chosen_ids"] == row["chosen_input_ids"]
        assert ours["prompt_ids"] + ours["rejected_ids"] == row["rejected_input_ids"]
    return trainer, trl_batch, prep, AutoModelForCausalLM.from_pretrained(tiny_model_dir)


SETTINGS = [  # alignkit method_args, and TRL's CPO attributes for the same loss
    ({}, {"beta": 2.0, "simpo_gamma": 0.5, "label_smoothing": 0.0, "cpo_alpha": 0.0}),
    ({"beta": 0.7, "gamma": 0.3, "label_smoothing": 0.1, "sft_weight": 1.0},
     {"beta": 0.7, "simpo_gamma": 0.3, "label_smoothing": 0.1, "cpo_alpha": 1.0}),  # CPO-SimPO: TRL's default NLL term
]


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("ours_args,trl_attrs", SETTINGS, ids=["official-defaults", "cpo-simpo"])
def test_first_step_matches_trl_cpo_simpo(simpo_oracle, ours_args, trl_attrs, packing):
    from trl_oracle import assert_same_gradients, example_mean, gradients

    from alignkit.trainers.simpo import Args, Method

    trainer, trl_batch, prep, policy = simpo_oracle
    for name, value in trl_attrs.items():
        setattr(trainer, name, value)
    seen = {}

    def theirs():
        loss, seen["trl"] = trainer.get_batch_loss_metrics(trainer.model, trl_batch)
        return loss

    trl_loss, trl_grads = gradients(trainer.model, theirs)
    method = Method(Args(**ours_args), prep.tokenizer, prep.recipe.data.model_copy(update={"packing": packing}))
    batch = method.collate(prep.train_examples)

    def ours():
        loss, seen["ours"] = method.loss(method.sequence_outputs(policy, batch), {})
        return loss

    loss, grads = gradients(policy, ours)
    assert loss == pytest.approx(trl_loss, abs=1e-4)
    names = ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"]
    for name in names + (["nll_loss"] if trl_attrs["cpo_alpha"] else []):  # TRL logs 0 as the NLL when it is off
        assert example_mean(seen["ours"], name) == pytest.approx(seen["trl"][name], abs=1e-4), name
    assert_same_gradients(grads, trl_grads)


def test_simpo_recipe_never_loads_or_computes_a_reference(tmp_path, monkeypatch):
    from model_loads import count_model_loads

    from alignkit.config import load_recipe
    from alignkit.engine.run import train

    recipe = load_recipe("recipes/simpo_tiny.yaml", [f"training.output_dir={tmp_path}", "training.max_steps=2",
                                                      "training.per_device_train_batch_size=4", "data.eval=data/samples/preference.jsonl"])
    with count_model_loads(monkeypatch) as loads:
        summary = train(recipe)
    assert loads == [recipe.model.path]  # the policy, once; no reference, no frozen copy
    assert summary.reference == "none (the method needs no frozen model)" and summary.steps == 2
