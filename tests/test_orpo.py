"""ORPO: the pure loss by hand, agreement with TRL's ORPOTrainer on loss, metrics and every gradient (padded and
packed; the NLL over prompt and completion as TRL and the official code), and a run that never loads a reference."""

import math

import pytest
import torch

from alignkit.trainers.orpo import log1mexp, orpo_loss

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
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    from trl_oracle import reference_free_oracle

    return reference_free_oracle(tmp_path_factory.mktemp("orpo"), tiny_model_dir, ORPOConfig, ORPOTrainer, {"beta": 0.25},
                                 "orpo", {"beta": 0.25})


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_first_step_matches_trl_orpo_trainer(orpo_oracle, packing):
    from trl_oracle import alignkit_first_step, assert_same_gradients, example_mean, trl_pair_step

    from alignkit.trainers.orpo import Args, Method

    trainer, trl_batch, prep, policy = orpo_oracle
    trl_loss, trl_grads, trl_metrics = trl_pair_step(trainer, trl_batch)
    method = Method(Args(beta=0.25), prep.tokenizer, prep.recipe.data.model_copy(update={"packing": packing}))
    assert ("attention_mask" not in method.collate(prep.train_examples)) == packing
    loss, grads, metrics = alignkit_first_step(method, policy, prep.train_examples)
    assert loss == pytest.approx(trl_loss, abs=1e-4)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected",
                 "nll_loss", "log_odds_ratio", "log_odds_chosen"):
        assert example_mean(metrics, name) == pytest.approx(trl_metrics[name], abs=1e-4), name
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
    with pytest.raises(ValueError, match="share_prompts is not supported"):  # a chosen row that scores its prompt owns it
        Method(Args(), prep.tokenizer, prep.recipe.data.model_copy(update={"share_prompts": True}))


def test_orpo_recipe_never_loads_or_computes_a_reference(tmp_path, monkeypatch):
    from model_loads import assert_trains_with_the_policy_alone

    assert_trains_with_the_policy_alone("recipes/orpo_tiny.yaml", tmp_path, monkeypatch)
