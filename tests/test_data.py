"""Data: every adapter on its bundled sample, loaders for each file type, and errors with locations."""

import json

import pytest

from alignkit.data import (
    ADAPTERS, DataError, JudgeItem, JudgmentTriple, NegativeOnly, PreferencePair, SFTExample, detect_format,
    load_records, render_prompt, to_negative,
)
from alignkit.data.templates import ALPACA_JUDGE, ALPACA_PLAIN


@pytest.mark.parametrize("name", ["preference", "judgment", "negative", "prompt", "sft", "judge", "hh_rlhf", "pku_saferlhf",
                                  "ultrafeedback", "shepherd", "cut", "alpaca", "kto"])
def test_every_adapter_loads_its_sample(name):
    sample = {"judgment": "cut"}.get(name, name)
    result = load_records(f"data/samples/{sample}.jsonl", name)
    assert result.records and not result.skipped
    assert all(isinstance(r, ADAPTERS[name].record_type) for r in result.records)


def test_hh_rlhf_splits_shared_dialogue_into_prompt_messages():
    records = load_records("data/samples/hh_rlhf.jsonl", "hh_rlhf").records
    multi = records[2]
    assert [m.role for m in multi.prompt] == ["user", "assistant", "user"]
    assert multi.prompt[1].content == "12."
    assert multi.chosen == "12 times 2 is 24." and multi.rejected == "26."


def test_hh_rlhf_mismatched_prefix_is_an_error(tmp_path):
    bad = tmp_path / "hh.jsonl"
    bad.write_text(json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: z\n\nAssistant: c"}) + "\n")
    with pytest.raises(DataError, match=r"hh.jsonl:1: fields 'chosen'/'rejected': the two transcripts do not share"):
        load_records(bad, "hh_rlhf")


def test_pku_preference_takes_safer_and_negatives_filter_safe_pairs():
    pairs = load_records("data/samples/pku_saferlhf.jsonl", "pku_saferlhf").records
    assert pairs[1].chosen.startswith("Never mix bleach") and pairs[1].rejected.startswith("Mix bleach")
    negatives = load_records("data/samples/pku_saferlhf.jsonl", "pku_saferlhf_negatives")
    assert [n.rejected[:10] for n in negatives.records] == ["You could ", "Mix bleach", "Find a goo"]
    assert negatives.filtered == {"both responses safe": 1}
    assert all(isinstance(n, NegativeOnly) for n in negatives.records)


def test_kto_rows_take_trl_message_lists_and_are_detected():
    result = load_records("data/samples/kto.jsonl")  # trl-lib/kto-mix-14k's shape: message lists and a bool label
    assert result.format == "kto"
    first, _, third, fourth = result.records
    assert first.prompt[0].content == "Name three primary colours." and first.completion == "Red, yellow and blue."
    assert [r.label for r in result.records] == [True, False, True, False]
    assert [m.role for m in third.prompt] == ["system", "user"] and fourth.prompt == "What is 3 plus 4?"
    from alignkit.data.stats import data_stats

    assert data_stats(["data/samples/kto.jsonl"])["desirable"] == 2
    assert data_stats(["data/samples/preference.jsonl"], "unpaired_preference")["undesirable"] == 2


def test_kto_label_must_be_a_bool(tmp_path):
    bad = tmp_path / "kto.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "completion": "c", "label": "maybe"}) + "\n")
    with pytest.raises(DataError, match=r"kto.jsonl:1: field 'label'"):
        load_records(bad, "kto")


def test_preference_pairs_split_into_unpaired_halves():
    from alignkit.data.records import UnpairedPreference, stand_ins

    result = load_records("data/samples/preference.jsonl", "unpaired_preference")
    assert [(r.completion, r.label) for r in result.records[:2]] == [("3 plus 4 is 7.", True), ("3 plus 4 is 8.", False)]
    assert len(result.records) == 4 and result.split == 2 and "4 records from 2 rows" in result.summary()
    pair = load_records("data/samples/preference.jsonl", "preference").records[1]
    halves = stand_ins(pair, UnpairedPreference)  # what the engine does for a KTO recipe on format: preference
    assert halves == result.records[2:]
    assert stand_ins(pair, NegativeOnly) == [to_negative(pair)]


def test_ultrafeedback_messages_become_prompt_and_completion():
    first = load_records("data/samples/ultrafeedback.jsonl", "ultrafeedback").records[0]
    assert first.prompt[0].content == "Name three primary colours." and first.chosen == "Red, yellow and blue."


def test_cut_positive_negative_rule_and_input_folding():
    records = load_records("data/samples/cut.jsonl", "cut").records
    assert [r.is_positive for r in records] == [False, True, False, True]  # null judgment, or score >= 7
    assert records[1].prompt == "Translate to French.\nGood morning"
    shepherd = load_records("data/samples/shepherd.jsonl", "shepherd").records
    assert all(isinstance(r, JudgmentTriple) and not r.is_positive for r in shepherd)


def test_alpaca_folds_input_into_prompt():
    records = load_records("data/samples/alpaca.jsonl", "alpaca").records
    assert records[1] == SFTExample(prompt="Classify the sentiment of the sentence.\nI loved the film.", completion="Positive.")


def test_judge_items_keep_reference_lists():
    items = load_records("data/samples/judge.jsonl", "judge").records
    assert isinstance(items[1], JudgeItem) and items[1].reference == ["Marenport", "Marenport City"]


def test_corrupted_line_names_file_and_line(tmp_path):
    lines = open("data/samples/preference.jsonl").read().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n\n" + '{"prompt": "x", "chosen": "y", "rejected": ' + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:3: not valid JSON"):
        load_records(bad, "preference")


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "p", "chosen": "a"}, "field 'rejected': required field is missing"),
        ({"prompt": "p", "chosen": 3, "rejected": "b"}, "field 'chosen': Input should be a valid string"),
        ({"prompt": "", "chosen": "a", "rejected": "b"}, "field 'prompt': must be a non-empty string"),
        ({"prompt": "p", "chosen": "a", "rejected": "a"}, "chosen and rejected are identical"),
        (["not", "an", "object"], "expected a JSON object, got list"),
    ],
)
def test_bad_records_name_field_and_expectation(tmp_path, row, message):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "ok", "chosen": "a", "rejected": "b"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError) as err:
        load_records(path, "preference")
    assert f"{path}:2: " in str(err.value) and message in str(err.value)


def test_skip_invalid_counts_reasons(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a"}, {"prompt": "p"}, "{oops"]
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    result = load_records(path, "preference", skip_invalid=True)
    assert len(result.records) == 1 and result.rows == 4
    assert sum(result.skipped.values()) == 3
    assert "3 invalid skipped" in result.summary()


def test_file_types_round_trip(tmp_path):
    import datasets
    import pandas as pd

    rows = [json.loads(line) for line in open("data/samples/ultrafeedback.jsonl")]
    expected = load_records("data/samples/ultrafeedback.jsonl", "ultrafeedback").records
    (tmp_path / "d.json").write_text(json.dumps(rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    pd.DataFrame([{k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows]).to_csv(tmp_path / "d.csv", index=False)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "folder"))
    for name in ("d.json", "d.parquet", "d.csv", "folder"):
        assert load_records(tmp_path / name, "ultrafeedback").records == expected, name


def test_csv_error_names_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,chosen,rejected\nq,a,b\nq,,b\n")
    with pytest.raises(DataError, match=r"d.csv:3: field 'chosen'"):
        load_records(path, "preference")


def test_unsupported_and_missing_files(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="unsupported file type '.txt'"):
        load_records(tmp_path / "x.txt", "preference")
    with pytest.raises(DataError, match="file not found"):
        load_records(tmp_path / "none.jsonl", "preference")


def test_detect_format():
    assert detect_format({"prompt": "p", "chosen": "a", "rejected": "b"}) == "preference"
    assert detect_format({"question": "q", "answer": "a", "feedback": "f"}) == "shepherd"
    assert detect_format({"prompt": "p", "response_0": "a", "response_1": "b", "safer_response_id": 0, "is_response_0_safe": 1}) == "pku_saferlhf"
    with pytest.raises(ValueError, match="cannot tell the format"):
        detect_format({"foo": 1})


def test_preference_to_negative_drops_chosen():
    pair = PreferencePair(prompt="p", chosen="good", rejected="bad")
    assert to_negative(pair) == NegativeOnly(prompt="p", rejected="bad")


def test_templates(tiny_tokenizer):
    assert render_prompt("Add 2 and 3.", "alpaca") == ALPACA_PLAIN.format(instruction="Add 2 and 3.")
    assert render_prompt("Add 2 and 3.", "alpaca", judgment="Wrong.") == ALPACA_JUDGE.format(instruction="Add 2 and 3.", judgment="Wrong.")
    chat = render_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "chat", tiny_tokenizer)
    assert chat == "<s><|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"
    with pytest.raises(ValueError, match="takes one user instruction"):
        render_prompt([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}], "alpaca")
