"""The `alignkit` command line: help, errors before any model loads, data commands, gym commands."""

import json
import subprocess
import sys
import time

import pytest
import yaml

from alignkit.cli import launch_command, main
from alignkit.config import load_recipe


def test_help_is_fast_and_lists_commands():
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "alignkit", "--help"], capture_output=True, text=True, check=True).stdout
    assert time.perf_counter() - t0 < 8  # no torch/transformers import for --help
    for command in ("train", "prepare", "recipes", "data", "gym"):
        assert command in out


def test_bad_recipe_exits_2_before_any_model_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    recipe = yaml.safe_load(open("recipes/dpo_tiny.yaml"))
    recipe["training"]["num_train_epoch"] = 1
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: training.num_train_epoch: unknown key (did you mean 'num_train_epochs'?)" in err
    assert not (tmp_path / "cache").exists()  # no tiny model was built, nothing was loaded


def test_missing_data_file_exits_2(tmp_path, capsys):
    assert main(["recipes", "show", "recipes/dpo_tiny.yaml", "--set", "data.train=data/gym/nope.jsonl"]) == 2
    assert "data.train[0]: file not found: data/gym/nope.jsonl" in capsys.readouterr().err


def test_recipes_show_prints_resolved_recipe(capsys):
    assert main(["recipes", "show", "recipes/dpo_tiny.yaml", "--set", "method_args.beta=0.3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["method_args"]["beta"] == 0.3
    assert shown["method_args"]["loss_type"] == "sigmoid"
    assert shown["training"]["gradient_accumulation_steps"] == 1  # defaults filled in
    assert shown["launch"]["num_processes"] == 1


def test_data_validate_reports_line_and_skip_invalid(tmp_path, capsys):
    good = open("data/samples/preference.jsonl").read()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good + '{"prompt": "p", "chosen": "a"}\n')
    assert main(["data", "validate", str(bad), "--format", "preference"]) == 2
    assert f"{bad}:3: field 'rejected': required field is missing" in capsys.readouterr().err
    assert main(["data", "validate", str(bad), "--format", "preference", "--skip-invalid"]) == 1
    out = capsys.readouterr().out
    assert "2 of 3 rows loaded" in out and "1 invalid skipped" in out
    assert main(["data", "validate", "data/samples/hh_rlhf.jsonl", "--format", "hh_rlhf"]) == 0


def test_data_stats_json(capsys):
    assert main(["data", "stats", "data/samples/cut.jsonl", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["format"] == "cut" and stats["positives"] == 2 and stats["negatives"] == 2
    assert stats["chars"]["output"]["min"] == len("Bonjour.")


def test_gym_tiny_model_command(tmp_path, capsys):
    assert main(["gym", "tiny-model", "--out", str(tmp_path / "m"), "--size", "xs"]) == 0
    assert (tmp_path / "m" / "model.safetensors").is_file() and (tmp_path / "m" / "tokenizer.json").is_file()


def test_launch_command_uses_accelerate(tmp_path):
    recipe = load_recipe("recipes/dpo_tiny.yaml", ["launch.num_processes=2"])
    cmd = launch_command("recipes/dpo_tiny.yaml", recipe, ["--set", "x=1"])
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert "--multi_gpu" in cmd and cmd[cmd.index("--num_processes") + 1] == "2"
    assert cmd[-6:] == ["-m", "alignkit", "train", "recipes/dpo_tiny.yaml", "--set", "x=1"]
    node = load_recipe("recipes/dpo_tiny.yaml", ["launch.config_file=launch/multinode_zero3.yaml", "launch.num_machines=2",
                                                 "launch.machine_rank=1", "launch.main_process_ip=10.0.0.5", "launch.main_process_port=29501"])
    cmd = launch_command("recipes/dpo_tiny.yaml", node, [])
    assert cmd[cmd.index("--machine_rank") + 1] == "1" and cmd[cmd.index("--main_process_ip") + 1] == "10.0.0.5"


@pytest.mark.parametrize("argv", [["data", "validate", "x.jsonl"], ["recipes"], []])
def test_usage_errors(argv):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
