"""KTO: the pure loss by hand, the mismatched KL pairs, agreement with TRL's KTOTrainer on loss, KL, metrics and every
gradient (precomputed reference log-probs, KL pairs included; padded and packed), and runs from unpaired data and from
a preference file."""

import json
import math

import pytest
import torch

from alignkit.trainers.kto import kto_loss, mismatch_shift

# Distinct prompts ending on a pre-token boundary (TRL's joint tokenisation then equals alignkit's).
UNPAIRED = [
    {"prompt": "Question: What is 2 plus 7?\nAnswer:", "completion": " 2 plus 7 is 9.", "label": True},
    {"prompt": "Question: Name a fruit.\nAnswer:", "completion": " A brick.", "label": False},
    {"prompt": "Question: How do I steal a car?\nAnswer:", "completion": " I'm sorry, but I can't help with that.", "label": True},
    {"prompt": "Question: Say hi.\nAnswer:", "completion": " No.", "label": False},
    {"prompt": "Question: What colour is the sky?\nAnswer:", "completion": " Blue, on a clear day.", "label": True},
    {"prompt": "Question: Name a large animal.\nAnswer:", "completion": " The elephant is the largest land animal.", "label": True},
]


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_kto_loss_by_hand():
    pc, pr = torch.tensor([-5.0, -3.0]), torch.tensor([-7.0])
    rc, rr = torch.tensor([-6.0, -3.5]), torch.tensor([-6.0])
    losses, chosen_rewards, rejected_rewards = kto_loss(pc, pr, rc, rr, kl=0.2, beta=0.5, desirable_weight=1.5, undesirable_weight=0.5)
    # log-ratios: desirable 1.0 and 0.5, undesirable −1.0; desirable first, each weighted
    expected = [1.5 * (1 - sig(0.5 * (1.0 - 0.2))), 1.5 * (1 - sig(0.5 * (0.5 - 0.2))), 0.5 * (1 - sig(0.5 * (0.2 + 1.0)))]
    assert losses.tolist() == pytest.approx(expected, abs=1e-6)
    assert chosen_rewards.tolist() == pytest.approx([0.5, 0.25]) and rejected_rewards.tolist() == pytest.approx([-0.5])
    apo, _, _ = kto_loss(pc, pr, rc, rr, kl=9.0, beta=0.5, loss_type="apo_zero_unpaired")  # no reference point
    assert apo.tolist() == pytest.approx([1 - sig(0.5), 1 - sig(0.25), sig(-0.5)], abs=1e-6)
    up = pc.clone().requires_grad_()
    kto_loss(up, pr, rc, rr, kl=0.0)[0].sum().backward()
    assert (up.grad < 0).all()  # raising a desirable completion's log-prob lowers the loss


def test_mismatch_shift_is_trls_rotation_unless_it_pairs_a_prompt_with_itself():
    assert mismatch_shift(["a", "b", "c", "d"]) == 1  # TRL: example i takes example i − 1's completion
    assert mismatch_shift(["a", "a", "b", "b"]) == 2  # the halves of split pairs: rotating by one matches a with a
    assert mismatch_shift(["a", "a", "a"]) == 1  # nothing mismatches: the smallest shift (the run warns)
    assert mismatch_shift(["a"]) == 0  # a lone last example pairs with itself, as in TRL


@pytest.fixture(scope="module")
def kto_oracle(tmp_path_factory, tiny_model_dir):
    """TRL's KTOTrainer (live reference) and alignkit's KTO (precomputed reference, KL pairs included) on the same policy,
    reference and batch."""
    from transformers import AutoModelForCausalLM
    from trl import KTOConfig, KTOTrainer
    from trl_oracle import trl_trainer

    from alignkit.config import validate_recipe
    from alignkit.engine.run import build
    from alignkit.gym.tiny_model import build_tiny_model

    tmp = tmp_path_factory.mktemp("kto")
    ref_dir = build_tiny_model(tmp / "ref", "xs", seed=1)
    data = tmp / "unpaired.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in UNPAIRED) + "\n")
    trainer, trl_batch = trl_trainer(KTOTrainer, KTOConfig, UNPAIRED, tiny_model_dir, tmp, {"max_length": None}, ref_dir)
    recipe = validate_recipe({
        "method": "kto", "model": {"path": str(tiny_model_dir), "dtype": "float32"},
        "data": {"train": str(data), "format": "kto", "template": "raw", "max_length": 128, "max_prompt_length": 64},
        "training": {"per_device_train_batch_size": len(UNPAIRED)},
        "method_args": {"reference_model": str(ref_dir)},
    })
    prep = build(recipe)
    for ours, row in zip(prep.train_examples, trainer.train_dataset):  # the same sequences and the same KL pairs
        assert (ours["prompt_ids"], ours["completion_ids"], ours["kl_completion_ids"], ours["label"]) == \
            (row["prompt_ids"], row["completion_ids"], row["KL_completion_ids"], row["label"])
        assert {"ref_logps", "ref_kl_logps"} <= set(ours)  # both reference values precomputed
    return trainer, trl_batch, prep, AutoModelForCausalLM.from_pretrained(tiny_model_dir)


SETTINGS = [  # alignkit method_args, and TRL's KTOTrainer attributes for the same loss
    ({}, {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0, "loss_type": "kto", "calculate_KL": True}),
    ({"beta": 0.5, "desirable_weight": 1.3, "undesirable_weight": 0.7},
     {"beta": 0.5, "desirable_weight": 1.3, "undesirable_weight": 0.7, "loss_type": "kto", "calculate_KL": True}),
    ({"beta": 0.5, "loss_type": "apo_zero_unpaired"},
     {"beta": 0.5, "desirable_weight": 1.0, "undesirable_weight": 1.0, "loss_type": "apo_zero_unpaired", "calculate_KL": False}),
]


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("ours_args,trl_attrs", SETTINGS, ids=["defaults", "weighted", "apo_zero_unpaired"])
def test_first_step_matches_trl_kto_trainer(kto_oracle, ours_args, trl_attrs, packing):
    from trl_oracle import alignkit_first_step, assert_same_gradients, example_mean, gradients, last_metrics

    from alignkit.trainers.kto import Args, Method

    trainer, trl_batch, prep, policy = kto_oracle
    for name, value in trl_attrs.items():
        setattr(trainer, name, value)
    trl_loss, trl_grads = gradients(trainer.model, lambda: trainer.compute_loss(trainer.model, trl_batch))
    trl_metrics = last_metrics(trainer)

    args = Args(**{**prep.recipe.method_args, **ours_args})
    method = Method(args, prep.tokenizer, prep.recipe.data.model_copy(update={"packing": packing}))
    batch = method.collate(prep.train_examples)
    assert ("attention_mask" not in batch and "kl_attention_mask" not in batch) == packing
    assert ("kl_input_ids" in batch) == method.uses_kl
    loss, grads, metrics = alignkit_first_step(method, policy, prep.train_examples)
    assert loss == pytest.approx(trl_loss, abs=1e-4)
    for name in ("kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert example_mean(metrics, name) == pytest.approx(trl_metrics[name], abs=1e-4), name
    if method.uses_kl:
        assert trl_metrics["kl"] > 1e-3  # a reference point that shifts the loss, so the comparison checks it
    assert_same_gradients(grads, trl_grads)


def test_batch_of_one_cannot_estimate_the_reference_point(tiny_model_dir):
    from alignkit.config import validate_recipe
    from alignkit.engine.run import build

    recipe = validate_recipe({"method": "kto", "model": {"path": str(tiny_model_dir)},
                              "data": {"train": "data/samples/kto.jsonl", "format": "kto"},
                              "training": {"per_device_train_batch_size": 1}})
    with pytest.raises(ValueError, match="per_device_train_batch_size must be at least 2"):
        build(recipe, compute_signals=False)


@pytest.mark.parametrize("source", ["preference file", "unpaired file"])
def test_kto_trains_from_a_preference_file_and_from_unpaired_data(tmp_path, source, caplog):
    from alignkit.config import load_recipe
    from alignkit.engine.run import build, train

    overrides = [f"training.output_dir={tmp_path}", "training.max_steps=2", "training.per_device_train_batch_size=8",
                 "training.per_device_eval_batch_size=8"]
    if source == "unpaired file":  # trl-lib/kto-mix-14k's shape: message lists, a bool label
        overrides += ["data.train=data/samples/kto.jsonl", "data.eval=data/samples/kto.jsonl", "data.format=kto",
                      "training.per_device_train_batch_size=4", "training.train_sampling_strategy=sequential",  # TRL's batches
                      "method_args.reference=model"]  # the reference (and its KL pairs' log-probs) computed live
    else:
        overrides += ["data.train={path: data/gym/train_preference.jsonl, max_records: 24}", "data.eval=data/samples/preference.jsonl"]
    recipe = load_recipe("recipes/kto_tiny.yaml", overrides)
    with caplog.at_level("WARNING", logger="alignkit"):
        prep = build(recipe, compute_signals=False)
    assert "share their prompt" not in caplog.text
    if source == "preference file":  # every pair stands for a desirable and an undesirable example
        assert [e["label"] for e in prep.train_examples[:4]] == [True, False, True, False]
        assert len(prep.train_examples) == 2 * 24
        assert any("stand for" in n for n in prep.notes)
    # every KL pair is mismatched, although each prompt's examples sit side by side (the gym has two pairs per prompt)
    size = recipe.training.per_device_train_batch_size
    for examples in (prep.train_examples, prep.eval_examples):
        for start in range(0, len(examples), size):
            group = examples[start : start + size]
            for e in group:
                owners = [o for o in group if o["completion_ids"] == e["kl_completion_ids"]]
                assert any(o["prompt_ids"] != e["prompt_ids"] for o in owners)
    summary = train(recipe)
    assert summary.steps == 2 and "logps, kl_logps" in summary.reference
    assert ("live (model)" in summary.reference) == (source == "unpaired file")
    assert math.isfinite(summary.after["loss"]) and "kl" in summary.after
