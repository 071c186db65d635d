"""Online CUT: rounds of sample -> judge -> train, each starting from the last; data and checkpoints kept;
a rerun continues where it stopped."""

import json

import pytest


def test_two_rounds_end_to_end_and_resume(tmp_path, capsys):
    from alignkit.cli import main

    out = tmp_path / "online"
    args = ["train", "recipes/cut_online_tiny.yaml", "--set", "online.rounds=2", "--set", "online.prompts_per_round=6",
            "--set", "online.samples_per_prompt=2", "--set", f"online.output_dir={out}", "--set", "training.num_train_epochs=1",
            "--set", "data.eval=[]"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "round 0: 12 judged samples" in first and "round 1: 12 judged samples" in first
    for r in (0, 1):
        rows = [json.loads(line) for line in (out / f"round-{r}" / "judged.jsonl").read_text().splitlines()]
        assert len(rows) == 12 and all(set(row) == {"instruction", "input", "output", "judgment"} for row in rows)
        # a row is positive exactly when the gym's gold judgment finds nothing wrong
        from alignkit.gym.world import gold, task_for_prompt

        for row in rows:
            assert (row["judgment"] is None) == (gold(task_for_prompt(row["instruction"]), row["output"]).judgment is None)
        assert (out / f"round-{r}" / "final" / "model.safetensors").is_file()
    recipe = (out / "round-1" / "round_recipe.yaml").read_text()
    assert str(out / "round-0" / "final") in recipe  # round 1 started from round 0's model
    # the two rounds sampled different prompts
    prompts = [{json.loads(line)["instruction"] for line in (out / f"round-{r}" / "judged.jsonl").read_text().splitlines()}
               for r in (0, 1)]
    assert not prompts[0] & prompts[1]
    # rerun: both rounds complete, nothing is sampled or trained again
    stamp = (out / "round-1" / "final" / "model.safetensors").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "round-1" / "final" / "model.safetensors").stat().st_mtime_ns == stamp
    # an interrupted third round resumes at its round
    assert main([a.replace("online.rounds=2", "online.rounds=3") for a in args]) == 0
    assert "round 2:" in capsys.readouterr().out and (out / "round-2" / "final" / "model.safetensors").is_file()


def test_a_critic_judge_needs_its_model(tmp_path):
    from alignkit.config import RecipeError
    from alignkit.engine.rounds import load_online

    with pytest.raises(RecipeError, match="online.judge.model is required"):
        load_online("recipes/cut_online_tiny.yaml", ["online.judge={kind: critic}"])
