"""Red team, command line: mistakes that used to fail late (after a model loaded) or with a traceback now
exit 2 with one clear line, before any model loads where the input allows (issue #14)."""

import json
import socket
import subprocess
import sys

import pytest

from alignkit.cli import main
from alignkit.config import RecipeError, load_recipe

TINY = ["--set", "model.path=tiny:xs", "--set", "data.eval=[]", "--set", "data.train=data/samples/preference.jsonl"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("alignkit: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_output_dir_that_is_a_file_fails_at_recipe_check(tmp_path, monkeypatch, capsys):
    # Before: accepted, then failed after the model loaded and the reference was computed.
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    for output_dir in (blocker, blocker / "run"):
        assert main(["train", "recipes/dpo_tiny.yaml", *TINY, "--set", f"training.output_dir={output_dir}"]) == 2
        assert f"training.output_dir: {blocker} exists and is not a folder" in one_line_error(capsys)
    assert not (tmp_path / "cache").exists()  # no tiny model was built: nothing loaded


def test_wrong_typed_extra_training_field_is_a_recipe_error(tmp_path, monkeypatch, capsys):
    # Before: `recipes show` accepted adam_beta1: "zero"; training then died with a TypeError inside Adam.
    assert main(["recipes", "show", "recipes/dpo_tiny.yaml", "--set", "training.adam_beta1=zero"]) == 2
    line = one_line_error(capsys)
    assert "training.adam_beta1: expected float (transformers.TrainingArguments.adam_beta1), got 'zero'" in line
    with pytest.raises(RecipeError, match=r"training\.dataloader_num_workers: expected int .* got 1\.5"):
        load_recipe("recipes/dpo_tiny.yaml", ["training.dataloader_num_workers=1.5"], check_files=False)
    with pytest.raises(RecipeError, match=r"training\.lr_scheduler_kwargs: expected dict \| str \| None"):
        load_recipe("recipes/dpo_tiny.yaml", ["training.lr_scheduler_kwargs=[1, 2]"], check_files=False)
    ok = load_recipe("recipes/dpo_tiny.yaml", ["training.adam_beta1='0.8'", "training.torch_compile_mode=null",
                                               "training.lr_scheduler_kwargs={num_cycles: 2}"], check_files=False)
    assert ok.training.model_extra["adam_beta1"] == 0.8  # a numeric string becomes the number Adam needs


def test_model_that_is_neither_folder_nor_reachable_hub_id(tmp_path, monkeypatch, capsys):
    # Before: a raw hub OSError traceback (exit 1) from deep inside transformers.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    assert main(["train", "recipes/dpo_tiny.yaml", "--set", "model.path=no-such-org/no-such-model"]) == 2
    assert "model.path: 'no-such-org/no-such-model' is not a local folder, and the hub is offline" in one_line_error(capsys)
    assert main(["recipes", "show", "recipes/dpo_tiny.yaml", "--set", "model.path=not a model"]) == 2
    assert "model.path: 'not a model' is neither a local folder nor a valid hub id" in one_line_error(capsys)
    assert main(["judge", "--judge", "llm", "--model", "no-such-org/no-such-model", "--data", "data/samples/judge.jsonl",
                 "--out", str(tmp_path / "j")]) == 2
    assert "--model: 'no-such-org/no-such-model' is not a local folder" in one_line_error(capsys)
    # A folder with a config but no weights fails at load time (an OSError inside transformers): one line, exit 2.
    (tmp_path / "no-weights").mkdir()
    (tmp_path / "no-weights" / "config.json").write_text(open("data/gym/base-s/config.json").read())
    assert main(["judge", "--judge", "llm", "--model", str(tmp_path / "no-weights"), "--backend", "hf", "--data",
                 "data/samples/judge.jsonl", "--out", str(tmp_path / "j")]) == 2
    assert f"model '{tmp_path / 'no-weights'}': could not load the model" in one_line_error(capsys)
    assert not (tmp_path / "j").exists()


def test_unreachable_judge_endpoint_is_one_line_exit_2(tmp_path, capsys):
    # Before: a GenerationError traceback and exit 1.
    url = f"http://127.0.0.1:{free_port()}/v1"
    assert main(["judge", "--judge", "llm", "--endpoint", url, "--retries", "0", "--data", "data/samples/judge.jsonl",
                 "--out", str(tmp_path / "j"), "--no-cache"]) == 2
    line = one_line_error(capsys)
    assert f"endpoint {url} is unreachable or stopped responding" in line


def test_greedy_sampling_with_n_above_1_is_rejected_before_loading(tmp_path, monkeypatch, capsys):
    # Before: a transformers ValueError from generate() after the model loaded.
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    assert main(["generate", "--model", "tiny:xs", "--prompts", "data/samples/prompt.jsonl", "--temperature", "0", "--n", "2",
                 "--out", str(tmp_path / "out.jsonl")]) == 2
    assert "temperature 0 is greedy decoding: all n=2 completions of a prompt would be identical" in one_line_error(capsys)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out.jsonl").exists()
    assert main(["bon", "--model", "tiny:xs", "--prompts", "data/samples/prompt.jsonl", "--temperature", "0", "--n", "4",
                 "--scorer", "reward-model", "--reward-model", "tiny:xs", "--out", str(tmp_path / "bon.jsonl")]) == 2
    assert "temperature 0 is greedy decoding: all n=4 completions" in one_line_error(capsys)
    assert not (tmp_path / "cache").exists()  # the reward model was not built or loaded either


def test_human_label_outside_the_label_set_names_file_line_and_labels(tmp_path, capsys):
    # Before: "human label 'maybe' is not a correct/incorrect label" with no file or line, after judging.
    rows = [json.loads(line) for line in open("data/samples/judge.jsonl")]
    rows[2]["human_label"] = "maybe"
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["judge", "--judge", "exact", "--data", str(path), "--out", str(tmp_path / "j")]) == 2
    line = one_line_error(capsys)
    assert f"{path}:3: field 'human_label': human label 'maybe' is not a label of a binary judge" in line
    assert "allowed: correct/incorrect, true/false" in line
    pair_path = tmp_path / "pairs.jsonl"
    pairs = [{**r, "reference": "x", "human_label": "C" if i == 2 else "A"} for i, r in enumerate(rows)]
    pair_path.write_text("".join(json.dumps(r) + "\n" for r in pairs))
    from alignkit.data import DataError
    from alignkit.judge.run import run_judge

    class PairwiseJudge:  # labels are checked before any judge model is asked
        name, mode = "stub", "pairwise"

        def judge(self, items):
            raise AssertionError("judged before the labels were checked")

    with pytest.raises(DataError, match=r"pairs\.jsonl:3: field 'human_label': human label 'C' .* allowed: A/B/tie"):
        run_judge(pair_path, PairwiseJudge())


def test_resume_from_an_explicit_incomplete_checkpoint_fails_before_loading(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    checkpoint = tmp_path / "run" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    assert main(["train", "recipes/dpo_tiny.yaml", *TINY, "--set", f"training.output_dir={tmp_path / 'run'}",
                 "--resume", str(checkpoint)]) == 2
    line = one_line_error(capsys)
    assert f"--resume {checkpoint}: not a complete checkpoint (model weights missing" in line
    assert "optimizer.pt missing" in line
    assert not (tmp_path / "cache").exists()


def test_judge_help_lists_the_endpoint_safety_flags():
    out = subprocess.run([sys.executable, "-m", "alignkit", "judge", "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--timeout", "--retries", "--api-key", "--allow-plain-http-key"):
        assert flag in out
