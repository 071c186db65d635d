"""Reward-model training (`method: reward`): the Bradley–Terry loss by hand, margins and centring, a short
run on the gym, and scoring with the trained model exactly as it was trained."""

import json

import pytest
import torch
import torch.nn.functional as F

from alignkit.config import load_recipe
from alignkit.trainers.reward import reward_loss


def test_bradley_terry_loss_by_hand():
    chosen, rejected = torch.tensor([1.0, -0.5]), torch.tensor([0.0, 0.5])
    assert torch.allclose(reward_loss(chosen, rejected), -F.logsigmoid(torch.tensor([1.0, -1.0])))
    assert torch.allclose(reward_loss(chosen, rejected, torch.tensor([0.5, 0.0])), -F.logsigmoid(torch.tensor([0.5, -1.0])))
    centred = reward_loss(chosen, rejected, 0.0, center_coefficient=0.01)
    assert torch.allclose(centred - reward_loss(chosen, rejected), 0.01 * (chosen + rejected) ** 2)
    # the gradient pushes chosen up and rejected down, equally
    c, r = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    reward_loss(c, r).sum().backward()
    assert c.grad.item() == pytest.approx(-0.5) and r.grad.item() == pytest.approx(0.5)


def test_a_pairs_own_margin_wins_over_the_fixed_one(tmp_path):
    from alignkit.engine.run import build

    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c", "margin": 2.0}) + "\n"
                    + json.dumps({"prompt": "a", "chosen": "b", "rejected": "d"}) + "\n")
    recipe = load_recipe("recipes/reward_tiny.yaml", ["model.path=tiny:xs", f"data.train={data}", "data.eval=[]",
                                                      "method_args.margin=0.25"])
    prep = build(recipe)
    assert [e["margin"] for e in prep.train_examples] == [2.0, 0.25]
    with pytest.raises(Exception, match="packing"):
        build(load_recipe("recipes/reward_tiny.yaml", ["model.path=tiny:xs", "data.packing=true"]))


def test_reward_model_trains_and_scores_as_trained(tmp_path):
    from alignkit.engine.run import train
    from alignkit.scoring import RewardModelScorer

    recipe = load_recipe("recipes/reward_tiny.yaml", ["model.path=tiny:xs", "training.max_steps=30", "training.learning_rate=3e-3",
                                                      f"training.output_dir={tmp_path}", "data.eval=[]", "data.max_length=160"])
    summary = train(recipe)
    assert summary.after["accuracy"] > summary.before["accuracy"] and summary.after["loss"] < summary.before["loss"]
    scorer = RewardModelScorer(summary.checkpoint)
    assert scorer.tokens.max_length == 160  # read from the recipe saved with the model
    # the scorer's rewards equal the trainer's on the same pairs
    from alignkit.engine.run import build
    from alignkit.modeling.loading import load_causal_lm

    prep = build(recipe)
    batch = prep.method.collate(prep.train_examples[:4])
    model = load_causal_lm(recipe.model.model_copy(update={"path": summary.checkpoint}), trainable=False, kind="sequence_classifier")
    with torch.no_grad():
        trained = prep.method.sequence_outputs(model, batch)["chosen"]
    pairs = [json.loads(line) for line in open(recipe.data.train[0])][:4]
    scored = scorer.score_batch([p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    assert torch.allclose(trained, torch.tensor(scored), atol=1e-4)
