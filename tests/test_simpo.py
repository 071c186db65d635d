"""SimPO: the pure loss by hand, agreement with TRL's CPOTrainer(loss_type="simpo") on loss, metrics and every gradient
(padded and packed), and a run that never loads or computes a reference."""

import math

import pytest
import torch

from alignkit.trainers.simpo import simpo_loss

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
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    from trl_oracle import reference_free_oracle

    return reference_free_oracle(tmp_path_factory.mktemp("simpo"), tiny_model_dir, CPOConfig, CPOTrainer,
                                 {"loss_type": "simpo"}, "simpo", {})


SETTINGS = [  # alignkit method_args, and TRL's CPO attributes for the same loss
    ({}, {"beta": 2.0, "simpo_gamma": 0.5, "label_smoothing": 0.0, "cpo_alpha": 0.0}),
    ({"beta": 0.7, "gamma": 0.3, "label_smoothing": 0.1, "sft_weight": 1.0},
     {"beta": 0.7, "simpo_gamma": 0.3, "label_smoothing": 0.1, "cpo_alpha": 1.0}),  # CPO-SimPO: TRL's default NLL term
]


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("ours_args,trl_attrs", SETTINGS, ids=["official-defaults", "cpo-simpo"])
def test_first_step_matches_trl_cpo_simpo(simpo_oracle, ours_args, trl_attrs, packing):
    from trl_oracle import alignkit_first_step, assert_same_gradients, example_mean, trl_pair_step

    from alignkit.trainers.simpo import Args, Method

    trainer, trl_batch, prep, policy = simpo_oracle
    for name, value in trl_attrs.items():
        setattr(trainer, name, value)
    trl_loss, trl_grads, trl_metrics = trl_pair_step(trainer, trl_batch)
    method = Method(Args(**ours_args), prep.tokenizer, prep.recipe.data.model_copy(update={"packing": packing}))
    loss, grads, metrics = alignkit_first_step(method, policy, prep.train_examples)
    assert loss == pytest.approx(trl_loss, abs=1e-4)
    names = ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"]
    for name in names + (["nll_loss"] if trl_attrs["cpo_alpha"] else []):  # TRL logs 0 as the NLL when it is off
        assert example_mean(metrics, name) == pytest.approx(trl_metrics[name], abs=1e-4), name
    assert_same_gradients(grads, trl_grads)


def test_simpo_recipe_never_loads_or_computes_a_reference(tmp_path, monkeypatch):
    from model_loads import assert_trains_with_the_policy_alone

    assert_trains_with_the_policy_alone("recipes/simpo_tiny.yaml", tmp_path, monkeypatch)
