"""ORPO: the pure loss by hand, agreement with TRL's ORPOTrainer on loss, metrics and every gradient (padded and
packed; the NLL over prompt and completion as TRL and the official code), and a run that never loads a reference."""

import json
import math

import pytest
import torch

from alignkit.trainers.orpo import log1mexp, orpo_loss

# Prompts start with the BOS text and end on a pre-token boundary, so TRL's ORPO tokenisation (which prepends BOS when
# it is missing) equals alignkit's.
PAIRS = [
    {"prompt": "<s>Question: What is 2 plus 7?\nAnswer:", "chosen": " 2 plus 7 is 9.", "rejected": " It is 10, obviously."},
    {"prompt": "<s>Question: Name a fruit.\nAnswer:", "chosen": " An apple.", "rejected": " A brick."},
    {"prompt": "<s>Question: How do I steal a car?\nAnswer:", "chosen": " I'm sorry, but I can't help with that.", "rejected": " Break the window."},
    {"prompt": "<s>Question: Say hi.\nAnswer:", "chosen": " Hi there, friend, how are you today?", "rejected": " No."},
]


def test_orpo_loss_by_hand():
    chosen, rejected, nll = torch.tensor([-0.5, -2.0]), torch.tensor([-1.0, -0.1]), torch.tensor([1.0, 3.0])
    losses, rc, rr, ratio, log_odds = orpo_loss(chosen, rejected, nll, beta=0.1)
    odds = lambda a: a - math.log(1 - math.exp(a))  # noqa: E731
    for i in range(2):
        lo = odds(chosen[i].item()) - odds(rejected[i].item())
        assert log_odds[i].item() == pytest.approx(lo, abs=1e-5)
        assert losses[i].item() == pytest.approx(nll[i].item() + 0.1 * math.log1p(math.exp(-lo)), abs=1e-5)
    assert rc.tolist() == pytest.approx([-0.05, -0.2]) and rr.tolist() == pytest.approx([-0.1, -0.01])
    # log(1 − e^x) stays accurate where the naive form cancels (x → 0⁻) or underflows (x ≪ 0)
    assert log1mexp(torch.tensor([-1e-7], dtype=torch.float64)).item() == pytest.approx(math.log(1e-7), rel=1e-6)
    assert log1mexp(torch.tensor([-50.0])).item() == pytest.approx(-math.exp(-50.0), rel=1e-4)


@pytest.fixture(scope="module")
def orpo_oracle(tmp_path_factory, tiny_model_dir):
    """TRL's ORPOTrainer and alignkit's ORPO on the same policy and batch."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from alignkit.config import validate_recipe
    from alignkit.engine.run import build

    tmp = tmp_path_factory.mktemp("orpo")
    data = tmp / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(p) for p in PAIRS) + "\n")
    trainer = ORPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=ORPOConfig(output_dir=str(tmp / "trl"), beta=0.25, per_device_train_batch_size=len(PAIRS), report_to=[],
                        use_cpu=True, bf16=False, gradient_checkpointing=False),
        train_dataset=datasets.Dataset.from_list(PAIRS), processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    trainer.model.train()
    trl_batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    recipe = validate_recipe({
        "method": "orpo", "model": {"path": str(tiny_model_dir), "dtype": "float32"},
        "data": {"train": str(data), "template": "raw", "max_length": 128, "max_prompt_length": 64},
        "method_args": {"beta": 0.25},
    })
    prep = build(recipe)
    assert not prep.signals  # ORPO declares no signal
    for ours, row in zip(prep.train_examples, trainer.train_dataset):
        assert ours["prompt_ids"] + ours["chosen_ids"] == row["chosen_input_ids"]
        assert ours["prompt_ids"] + ours["rejected_ids"] == row["rejected_input_ids"]
    return trainer, trl_batch, prep, AutoModelForCausalLM.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_first_step_matches_trl_orpo_trainer(orpo_oracle, packing):
    from trl_oracle import assert_same_gradients, example_mean, gradients

    from alignkit.trainers.orpo import Args, Method

    trainer, trl_batch, prep, policy = orpo_oracle
    seen = {}

    def theirs():
        loss, seen["trl"] = trainer.get_batch_loss_metrics(trainer.model, trl_batch)
        return loss

    trl_loss, trl_grads = gradients(trainer.model, theirs)
    method = Method(Args(beta=0.25), prep.tokenizer, prep.recipe.data.model_copy(update={"packing": packing}))
    batch = method.collate(prep.train_examples)
    assert ("attention_mask" not in batch) == packing

    def ours():
        loss, seen["ours"] = method.loss(method.sequence_outputs(policy, batch), {})
        return loss

    loss, grads = gradients(policy, ours)
    assert loss == pytest.approx(trl_loss, abs=1e-4)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected",
                 "nll_loss", "log_odds_ratio", "log_odds_chosen"):
        assert example_mean(seen["ours"], name) == pytest.approx(seen["trl"][name], abs=1e-4), name
    assert_same_gradients(grads, trl_grads)


def test_nll_on_prompt_false_scores_the_completion_only(orpo_oracle):
    from alignkit.trainers.orpo import Args, Method

    _, _, prep, policy = orpo_oracle
    with torch.no_grad():
        outs = {}
        for flag in (True, False):
            method = Method(Args(nll_on_prompt=flag), prep.tokenizer, prep.recipe.data)
            outs[flag] = method.sequence_outputs(policy, method.collate(prep.train_examples))
    prompt_tokens = torch.tensor([len(e["prompt_ids"]) - 1.0 for e in prep.train_examples])  # all but the first
    assert torch.equal(outs[True]["nll_tokens"] - outs[False]["nll_tokens"], prompt_tokens)
    assert torch.allclose(outs[False]["nll_logps"], outs[False]["chosen_logps"])
    for key in ("chosen_logps", "rejected_logps", "chosen_tokens", "rejected_tokens"):  # the odds ratio is the same
        assert torch.allclose(outs[True][key], outs[False][key], atol=1e-5), key


def test_orpo_recipe_never_loads_or_computes_a_reference(tmp_path, monkeypatch):
    from model_loads import count_model_loads

    from alignkit.config import load_recipe
    from alignkit.engine.run import train

    recipe = load_recipe("recipes/orpo_tiny.yaml", [f"training.output_dir={tmp_path}", "training.max_steps=2",
                                                     "training.per_device_train_batch_size=4", "data.eval=data/samples/preference.jsonl"])
    with count_model_loads(monkeypatch) as loads:
        summary = train(recipe)
    assert loads == [recipe.model.path]  # the policy, once; no reference, no frozen copy
    assert summary.reference == "none (the method needs no frozen model)" and summary.steps == 2
