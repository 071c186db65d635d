"""Red team, checkpoints and resume: an interrupted save must never be resumed from as if whole, and the
summary must say how many steps this run did (issue #14)."""

import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import save_file

from alignkit.config import load_recipe
from alignkit.engine.checkpoints import CheckpointError, checkpoint_problems, latest_complete_checkpoint, resolve_resume


def fake_checkpoint(folder, step, *, drop=(), truncate=None):
    """A checkpoint folder with the files transformers' Trainer writes (small but real formats)."""
    folder.mkdir(parents=True)
    save_file({"w": torch.zeros(64, 64)}, folder / "model.safetensors")
    torch.save({"state": {}}, folder / "optimizer.pt")
    torch.save({"last_epoch": step}, folder / "scheduler.pt")
    torch.save({"cpu": torch.random.get_rng_state()}, folder / "rng_state.pth")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    for name in drop:
        (folder / name).unlink()
    if truncate:
        data = (folder / truncate).read_bytes()
        (folder / truncate).write_bytes(data[: len(data) // 2])
    return folder


def test_complete_checkpoint_has_no_problems(tmp_path):
    assert checkpoint_problems(fake_checkpoint(tmp_path / "checkpoint-2", 2)) == []


@pytest.mark.parametrize("drop, truncate, problem", [
    (("optimizer.pt",), None, "optimizer.pt missing"),  # before: resumed with a fresh optimizer, no warning
    (("scheduler.pt",), None, "scheduler.pt missing"),
    (("model.safetensors",), None, "model weights missing"),  # before: crashed
    (("trainer_state.json",), None, "trainer_state.json missing"),  # before: crashed
    ((), "model.safetensors", "model.safetensors is truncated"),  # before: crashed
    ((), "optimizer.pt", "optimizer.pt is truncated"),
    ((), "trainer_state.json", "trainer_state.json is unreadable"),
])
def test_incomplete_checkpoints_are_detected(tmp_path, drop, truncate, problem):
    problems = checkpoint_problems(fake_checkpoint(tmp_path / "checkpoint-4", 4, drop=drop, truncate=truncate))
    assert any(p.startswith(problem) for p in problems), problems


def test_deepspeed_and_save_only_model_layouts_count_as_complete(tmp_path):
    ds = fake_checkpoint(tmp_path / "ds" / "checkpoint-2", 2, drop=("model.safetensors", "optimizer.pt", "scheduler.pt"))
    (ds / "global_step2").mkdir()
    assert checkpoint_problems(ds) == []
    only_model = fake_checkpoint(tmp_path / "om" / "checkpoint-2", 2, drop=("optimizer.pt", "scheduler.pt", "rng_state.pth"))
    assert checkpoint_problems(only_model, save_only_model=True) == []
    assert checkpoint_problems(only_model) != []


def test_resume_falls_back_to_the_newest_complete_checkpoint_with_a_warning(tmp_path, caplog):
    run = tmp_path / "run"
    fake_checkpoint(run / "checkpoint-2", 2)
    fake_checkpoint(run / "checkpoint-4", 4)
    fake_checkpoint(run / "checkpoint-6", 6, drop=("optimizer.pt",))
    fake_checkpoint(run / "checkpoint-10", 10, truncate="model.safetensors")  # numeric, not lexical, order
    with caplog.at_level(logging.WARNING, logger="alignkit"):
        assert resolve_resume(run, True) == str(run / "checkpoint-4")
    warning = caplog.records[-1].getMessage()
    assert "checkpoint-10 is incomplete (model.safetensors is truncated" in warning
    assert "checkpoint-6 is incomplete (optimizer.pt missing" in warning
    assert "resuming from checkpoint-4 (step 4) instead" in warning


def test_resume_with_no_complete_checkpoint_starts_from_scratch_with_a_warning(tmp_path, caplog):
    fake_checkpoint(tmp_path / "checkpoint-2", 2, drop=("trainer_state.json",))
    with caplog.at_level(logging.WARNING, logger="alignkit"):
        assert resolve_resume(tmp_path, True) is None
    assert "no complete checkpoint" in caplog.text and "starting from scratch" in caplog.text
    assert latest_complete_checkpoint(tmp_path) == (None, ["checkpoint-2 is incomplete (trainer_state.json missing)"])


def test_resume_from_an_explicit_incomplete_checkpoint_is_an_error(tmp_path):
    fake_checkpoint(tmp_path / "checkpoint-2", 2)
    bad = fake_checkpoint(tmp_path / "checkpoint-4", 4, drop=("optimizer.pt",))
    with pytest.raises(CheckpointError, match=r"checkpoint-4: not a complete checkpoint \(optimizer\.pt missing.*"
                                              r"the newest complete one there is .*checkpoint-2"):
        resolve_resume(tmp_path, str(bad))
    assert resolve_resume(tmp_path, str(tmp_path / "checkpoint-2")) == str(tmp_path / "checkpoint-2")


def test_training_resumes_from_the_last_complete_checkpoint_and_reports_steps_this_run(tmp_path, caplog):
    """A real tiny DPO run: the newest checkpoint lost its optimizer (an interrupted save)."""
    from alignkit.engine.run import summary_lines, train

    def recipe(max_steps):
        return load_recipe("recipes/dpo_tiny.yaml", [
            "model.path=tiny:xs", "data.train=data/samples/preference.jsonl", "data.eval=[]",
            f"training.output_dir={tmp_path / 'run'}", f"training.max_steps={max_steps}", "training.save_steps=2",
            "training.save_total_limit=null", "training.per_device_train_batch_size=1", "training.logging_steps=1",
            "training.warmup_steps=0"])

    first = train(recipe(4))
    assert first.steps == 4 and "4 optimizer steps this run (total 4)" in summary_lines(first)[1]
    (tmp_path / "run" / "checkpoint-4" / "optimizer.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="alignkit"):
        resumed = train(recipe(6), resume=True)
    assert "checkpoint-4 is incomplete (optimizer.pt missing" in caplog.text
    assert "resuming from checkpoint-2 (step 2) instead" in caplog.text
    assert resumed.steps == 6 and resumed.start_step == 2
    assert "4 optimizer steps this run (total 6)" in summary_lines(resumed)[1]  # before: "6 optimizer steps"
    state = json.loads((tmp_path / "run" / "checkpoint-6" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e][-4:] == [3, 4, 5, 6]
    shutil.rmtree(tmp_path / "run")
