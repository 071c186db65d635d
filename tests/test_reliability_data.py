"""Red team, data loading: inputs that used to pass silently or crash late now fail early with file:line,
or are counted and reported (issue #14)."""

import json

import pytest

from alignkit.cli import main
from alignkit.config import RecipeError, load_recipe
from alignkit.data import DataError, load_records
from alignkit.data.stats import data_stats

PAIR = {"prompt": "What is 2 plus 2?", "chosen": "4.", "rejected": "5."}


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_extra_csv_cell_is_an_error_not_dropped(tmp_path):
    # Before: csv.DictReader filed the extra cell under the key None and the row loaded without it.
    path = tmp_path / "d.csv"
    path.write_text("prompt,chosen,rejected\nq,a,b\nq,a,b,c surplus\n")
    with pytest.raises(DataError, match=r"d\.csv:3: 4 cells but the header has 3 columns"):
        load_records(path, "preference")
    result = load_records(path, "preference", skip_invalid=True)
    assert len(result.records) == 1 and sum(result.skipped.values()) == 1


def test_exact_duplicates_are_counted_and_reported(tmp_path, capsys):
    other = {**PAIR, "chosen": "Four."}
    path = jsonl(tmp_path / "d.jsonl", [PAIR, other, PAIR, PAIR])
    result = load_records(path, "preference")
    assert result.duplicates == 2 and len(result.records) == 4  # kept, but not silently
    assert "2 exact duplicates of earlier records (kept)" in result.summary()
    assert result.examples["duplicate"].startswith(f"{path}:3:")
    assert data_stats([path])["duplicates"] == 2
    assert main(["data", "stats", str(path)]) == 0
    assert "exact duplicates: 2 (kept)" in capsys.readouterr().out
    assert main(["data", "validate", str(path), "--format", "preference"]) == 0
    assert "2 exact duplicates" in capsys.readouterr().out


@pytest.mark.parametrize("fmt, row, field", [
    ("preference", {**PAIR, "chosen": "  \n\t"}, "chosen"),
    ("preference", {**PAIR, "rejected": " "}, "rejected"),
    ("sft", {"prompt": "p", "completion": "\n\n"}, "completion"),
    ("negative", {"prompt": "p", "rejected": "   "}, "rejected"),
    ("judgment", {"instruction": "i", "output": " \t", "judgment": None}, "output"),
    ("alpaca", {"instruction": "i", "input": "", "output": "   "}, "completion"),
])
def test_whitespace_only_completions_are_invalid(tmp_path, fmt, row, field):
    path = jsonl(tmp_path / "d.jsonl", [row])
    with pytest.raises(DataError, match=rf"d\.jsonl:1: field '{field}': must not be empty or whitespace only"):
        load_records(path, fmt)


def test_utf8_bom_is_read_in_jsonl_csv_and_json(tmp_path):
    bom = "\ufeff"
    (tmp_path / "d.jsonl").write_text(bom + json.dumps(PAIR) + "\n", encoding="utf-8")
    (tmp_path / "d.csv").write_text(bom + "prompt,chosen,rejected\nq,a,b\nr,c,d\n", encoding="utf-8")
    (tmp_path / "d.json").write_text(bom + json.dumps([PAIR]), encoding="utf-8")
    assert load_records(tmp_path / "d.jsonl", "preference").records[0].prompt == PAIR["prompt"]
    assert [r.prompt for r in load_records(tmp_path / "d.csv", "preference").records] == ["q", "r"]
    assert load_records(tmp_path / "d.json", "preference").records[0].chosen == "4."
    assert load_records(tmp_path / "d.csv").format == "preference"  # the header's first name is 'prompt', not '\ufeffprompt'


def test_non_utf8_bytes_are_a_data_error_with_file_and_line(tmp_path, capsys):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(PAIR).encode() + b"\n" + '{"prompt": "caf\u00e9", "chosen": "a", "rejected": "b"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.jsonl:2: not valid UTF-8 \(byte 0xe9 at column 16\)"):
        load_records(path, "preference")
    assert len(load_records(path, "preference", skip_invalid=True).records) == 1
    csv_path = tmp_path / "latin1.csv"
    csv_path.write_bytes(b"prompt,chosen,rejected\nq,a,b\ncaf\xe9,a,b\n")
    with pytest.raises(DataError, match=r"latin1\.csv:3: not valid UTF-8 \(byte 0xe9 at column 4\)"):
        load_records(csv_path, "preference")
    assert main(["data", "validate", str(csv_path), "--format", "preference"]) == 2  # not a UnicodeDecodeError traceback
    assert "latin1.csv:3: not valid UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize("prompt_length", [192, 500])
def test_max_prompt_length_not_below_max_length_is_a_recipe_error(prompt_length):
    with pytest.raises(RecipeError, match=r"data\.max_prompt_length: .*must be smaller than data\.max_length \(192\)"):
        load_recipe("recipes/dpo_tiny.yaml", [f"data.max_prompt_length={prompt_length}"], check_files=False)
    load_recipe("recipes/dpo_tiny.yaml", ["data.max_prompt_length=191"], check_files=False)


def test_skip_invalid_with_no_valid_record_fails_at_load_with_reasons(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "chosen": "a"}, {**PAIR, "chosen": "5."}])
    with pytest.raises(DataError) as err:
        load_records(path, "preference", skip_invalid=True)
    message = str(err.value)
    assert message.startswith(f"no valid records in {path}: 2 rows, 2 invalid:")
    assert "field 'rejected'" in message and "chosen and rejected are identical" in message


def test_train_with_skip_invalid_and_no_valid_record_exits_2_before_any_model_loads(tmp_path, monkeypatch, capsys):
    # Before: training went on and crashed in torch.cat() with an empty list.
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    path = jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "chosen": "a"}])
    argv = ["train", "recipes/dpo_tiny.yaml", "--set", f"data.train={path}", "--set", "data.eval=[]", "--set",
            "data.skip_invalid=true", "--set", "model.path=tiny:xs", "--set", f"training.output_dir={tmp_path / 'run'}"]
    assert main(argv) == 2
    assert f"no valid records in {path}: 1 rows, 1 invalid" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
