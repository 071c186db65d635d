"""DDP and DeepSpeed ZeRO-3 on this CPU: DPO, CUT and D²O train with 1 and 2 processes on the same global
batch, and their loss curves match (so the two processes split the data and synchronise gradients)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest


def run_log(out: Path) -> list[tuple[int, float]]:
    state = json.loads(sorted(out.glob("checkpoint-*/trainer_state.json"))[-1].read_text())
    return [(e["step"], e["loss"]) for e in state["log_history"] if "loss" in e]


def final_epoch(out: Path) -> float:
    return json.loads(sorted(out.glob("checkpoint-*/trainer_state.json"))[-1].read_text())["epoch"]


def untied_model(folder: Path) -> Path:
    """tiny:xs with its LM head untied from the embeddings (as in Llama-3-8B): the head's gradient then
    flows only through alignkit's chunked head, outside the wrapped forward."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.modeling.loading import resolve_model_path

    path = resolve_model_path("tiny:xs")
    model = AutoModelForCausalLM.from_pretrained(path, tie_word_embeddings=False)
    with torch.no_grad():
        model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.clone() * 1.5)
    model.config.tie_word_embeddings = False
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(path).save_pretrained(folder)
    return folder


EXTRA = {
    # D²O: few, short samples (drawn once by the main process, read from the cache by the other). Its 72
    # negatives leave a partial batch at step 5, where accelerate's even_batches pads the second process
    # with repeated examples that one process never sees; dropping it keeps the two runs comparable.
    "recipes/d2o_tiny.yaml": ["--set", "method_args.num_samples=2", "--set", "method_args.sample_max_tokens=12",
                              "--set", "training.save_strategy=steps", "--set", "training.dataloader_drop_last=true"],
}


@pytest.mark.parametrize("recipe", ["recipes/dpo_tiny.yaml", "recipes/cut_tiny.yaml", "recipes/d2o_tiny.yaml"])
def test_zero3_one_and_two_processes_give_the_same_loss_curve(tmp_path, recipe):
    common = ["--set", "model.path=tiny:xs", "--set", "data.eval=[]", "--set", "training.max_steps=6", "--set", "training.logging_steps=2",
              "--set", "training.save_steps=6", "--set", "training.learning_rate=1e-3", *EXTRA.get(recipe, [])]
    # 1 process: the documented `accelerate launch ... -m alignkit train` form, global batch 16.
    one = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "launch/zero3.yaml", "--num_processes", "1",
         "-m", "alignkit", "train", recipe, *common, "--set", f"training.output_dir={tmp_path / 'one'}",
         "--set", "training.per_device_train_batch_size=16"],
        capture_output=True, text=True,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    # 2 processes: `alignkit train` re-launches itself from the recipe's launch section, 8 per device.
    two = subprocess.run(
        [sys.executable, "-m", "alignkit", "train", recipe, *common, "--set", f"training.output_dir={tmp_path / 'two'}",
         "--set", "training.per_device_train_batch_size=8", "--set", "launch.config_file=launch/zero3.yaml",
         "--set", "launch.num_processes=2"],
        capture_output=True, text=True,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "accelerate.commands.launch" in two.stderr + two.stdout  # it really re-launched
    curve_one, curve_two = run_log(tmp_path / "one"), run_log(tmp_path / "two")
    assert [s for s, _ in curve_one] == [2, 4, 6] == [s for s, _ in curve_two]
    for (_, a), (_, b) in zip(curve_one, curve_two):
        assert abs(a - b) < 1e-3
    assert abs(curve_one[-1][1] - math.log(2)) > 1e-3  # the weights really moved (learning itself: test_engine)
    assert (tmp_path / "two" / "final" / "model.safetensors").is_file()


@pytest.mark.parametrize("recipe,model", [("recipes/dpo_tiny.yaml", "tiny:xs"), ("recipes/dpo_tiny.yaml", "untied"),
                                          ("recipes/cut_tiny.yaml", "tiny:xs"), ("recipes/d2o_tiny.yaml", "tiny:xs")])
def test_ddp_two_processes_split_the_data_like_one_process(tmp_path, recipe, model):
    from alignkit.config import load_recipe
    from alignkit.engine.run import train

    if model == "untied":
        model = str(untied_model(tmp_path / "untied"))
    common = [f"model.path={model}", "data.eval=[]", "training.max_steps=6", "training.logging_steps=2", "training.save_steps=6",
              "training.learning_rate=1e-3"] + [x for x in EXTRA.get(recipe, []) if x != "--set"]
    # 1 process (in this process), global batch 16.
    train(load_recipe(recipe, [*common, f"training.output_dir={tmp_path / 'one'}", "training.per_device_train_batch_size=16"]))
    # 2 processes through launch/ddp.yaml (gloo on this CPU), 8 per device.
    two = subprocess.run(
        [sys.executable, "-m", "alignkit", "train", recipe, *(x for o in common for x in ("--set", o)),
         "--set", f"training.output_dir={tmp_path / 'two'}", "--set", "training.per_device_train_batch_size=8",
         "--set", "launch.config_file=launch/ddp.yaml", "--set", "launch.num_processes=2"],
        capture_output=True, text=True,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in two.stderr
    curve_one, curve_two = run_log(tmp_path / "one"), run_log(tmp_path / "two")
    assert [s for s, _ in curve_one] == [2, 4, 6] == [s for s, _ in curve_two]
    for (_, a), (_, b) in zip(curve_one, curve_two):
        assert abs(a - b) < 1e-3
    # The same epoch after 6 steps: each of the 2 processes took 8 different examples per step. Two copies
    # training on the same 8 examples would have seen half the data (and a different curve).
    assert final_epoch(tmp_path / "one") == pytest.approx(final_epoch(tmp_path / "two"))
    assert abs(curve_one[-1][1] - curve_one[0][1]) > 1e-3
