"""Dataset repositories as data sources (hf:...), read through `datasets.load_dataset` and the file adapters, and
mixtures of several sources. Offline: a local folder laid out like a hub dataset repository stands in for the hub."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignkit.cli import main
from alignkit.config import RecipeError, load_recipe
from alignkit.data import DataError, load_records
from alignkit.data.sources import DataSource, as_source, load_sources, mixture_counts, parse_source

COLUMNS = {"prompt": "question", "chosen": "good", "rejected": "bad"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A dataset repository on disk: data/{train,test}-00000-of-00001.parquet with columns question/good/bad."""
    rows = [json.loads(line) for line in open("data/gym/train_preference.jsonl")][:40]
    as_repo = [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"]} for r in rows]
    root = tmp_path_factory.mktemp("repo")
    (root / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(as_repo[:30]), root / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(as_repo[30:]), root / "data" / "test-00000-of-00001.parquet")
    return root, rows


def test_short_form_and_mapping_resolve_to_the_same_source():
    short = parse_source("hf:ORG/NAME:cfg@v1/validation")
    assert short == DataSource(path="hf:ORG/NAME", config="cfg", revision="v1", split="validation")
    assert short.label() == "hf:ORG/NAME:cfg@v1/validation"
    assert parse_source("hf:ORG/NAME", default_split="test").split == "test"
    assert parse_source("data/x.jsonl") == "data/x.jsonl"  # plain files stay strings
    with pytest.raises(ValueError, match="names split 'a' but the entry also says split: 'b'"):
        parse_source({"path": "hf:ORG/NAME/a", "split": "b"})
    with pytest.raises(ValueError, match="apply to dataset repositories"):
        DataSource(path="data/x.jsonl", split="train")
    with pytest.raises(ValueError, match="either weight or max_records"):
        DataSource(path="data/x.jsonl", weight=1, max_records=3)
    recipe = load_recipe("recipes/dpo_tiny.yaml", ["data.train=hf:argilla/dpo-mix-7k", "data.eval=hf:argilla/dpo-mix-7k"],
                         check_files=False)
    assert (recipe.data.train[0].split, recipe.data.eval[0].split) == ("train", "test")


def test_repository_rows_go_through_load_dataset_and_the_adapters(repo, monkeypatch):
    import datasets

    root, rows = repo
    calls = []
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    result = load_records(DataSource(path=f"hf:{root}", columns=COLUMNS), "preference")
    assert calls and calls[0][0] == (str(root),) and calls[0][1]["split"] == "train"
    assert [(r.prompt, r.chosen, r.rejected) for r in result.records] == [(r["prompt"], r["chosen"], r["rejected"]) for r in rows[:30]]
    test = load_records(DataSource(path=f"hf:{root}", split="test", columns=COLUMNS), "preference")
    assert len(test.records) == 10
    # without the mapping, the first row names the missing field, its location and the columns it has
    with pytest.raises(DataError, match=rf"hf:{root}/train: row 1: field 'prompt': required field is missing; the row has question, good, bad"):
        load_records(f"hf:{root}", "preference")


def _train(argv, monkeypatch):
    """`alignkit train` that fails if any model is loaded."""
    import alignkit.modeling.loading as loading

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the data was checked")

    monkeypatch.setattr(loading, "load_causal_lm", no_model)
    return main(["train", "recipes/dpo_tiny.yaml", "--set", "model.path=tiny:xs", *argv])


def test_missing_split_or_column_fails_before_any_model_loads(repo, monkeypatch, capsys, tmp_path):
    root, _ = repo
    out = f"training.output_dir={tmp_path}"
    source = {"path": f"hf:{root}", "columns": COLUMNS}
    assert _train(["--set", f"data.train={json.dumps({**source, 'split': 'validation'})}", "--set", "data.eval=[]", "--set", out],
                  monkeypatch) == 2
    err = capsys.readouterr().err
    assert "data.train[0]: " in err and "no split 'validation' in the dataset; its splits: test, train" in err
    bad = {**source, "columns": {**COLUMNS, "chosen": "best"}}
    assert _train(["--set", f"data.train={json.dumps(bad)}", "--set", "data.eval=[]", "--set", out], monkeypatch) == 2
    assert "column 'best' (for field 'chosen') not in the dataset; its columns: question, good, bad" in capsys.readouterr().err
    # an eval entry defaults to the test split; a repository without one fails just as early
    (root / "only_train" / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([{"question": "q", "good": "a", "bad": "b"}]),
                   root / "only_train" / "data" / "train-00000-of-00001.parquet")
    evaluation = {"path": f"hf:{root / 'only_train'}", "columns": COLUMNS}
    assert _train(["--set", f"data.train={json.dumps(source)}", "--set", f"data.eval={json.dumps(evaluation)}", "--set", out],
                  monkeypatch) == 2
    assert "data.eval[0]: " in capsys.readouterr().err


def test_paper_recipe_validates_without_local_data(capsys):
    # Offline (as in CI): the hub dataset and model cannot be checked here; that is a note, not an error.
    assert main(["recipes", "show", "recipes/cut_llama13b.yaml"]) == 0
    out = capsys.readouterr().out
    assert "path: hf:philschmid/meta-shepherd-human-data" in out
    assert "# note: recipes/cut_llama13b.yaml: data.train[0]: hf:philschmid/meta-shepherd-human-data/train: hub dataset, not checked" in out
    for name in ("d2o_alpaca7b", "dpo_llama3_8b", "ctrl_hh_helpful", "adpa_plus_llama3_1b"):
        assert main(["recipes", "show", f"recipes/{name}.yaml"]) == 0
        shown = capsys.readouterr().out
        assert "path: hf:" in shown and "data/" not in shown.split("# note")[0].split("data:")[1][:200]
    # a malformed name is still an error
    with pytest.raises(RecipeError, match="is not a dataset name"):
        load_recipe("recipes/dpo_tiny.yaml", ["data.train=hf:no-org-name"], check_files=False)


def test_mixture_counts_follow_weights_and_limits():
    assert mixture_counts([100, 30], [1.0, 1.0], [None, None]) == [30, 30]       # equal shares, nothing repeated
    assert mixture_counts([100, 30], [3.0, 1.0], [None, None]) == [90, 30]
    assert mixture_counts([100, 30, 7], [1.0, None, None], [None, 10, None]) == [100, 10, 7]


def test_mixture_is_deterministic_per_seed_and_reported(repo, tmp_path):
    root, _ = repo
    entries = [DataSource(path=f"hf:{root}", columns=COLUMNS, split="train", weight=1.0),
               DataSource(path="data/gym/train_preference.jsonl", weight=2.0)]
    a = load_sources(entries, "preference", seed=0)
    b = load_sources(entries, "preference", seed=0)
    c = load_sources(entries, "preference", seed=1)
    assert [s.used for s in a.sources] == [30, 60]
    assert a.records == b.records and a.records != c.records
    assert f"mix (seed 0): hf:{root}/train 30 of 30 (33%, weight 1), data/gym/train_preference.jsonl 60 of 476 (67%, weight 2)" in a.summary()
    limited = load_sources([as_source("data/gym/train_preference.jsonl").model_copy(update={"max_records": 5})], "preference", seed=3)
    assert len(limited.records) == 5


def test_run_summary_reports_records_per_source(repo, tmp_path):
    from alignkit.engine.run import summary_lines, train

    root, _ = repo
    train_sources = json.dumps([{"path": f"hf:{root}", "columns": COLUMNS, "max_records": 12},
                                {"path": "data/samples/preference.jsonl"}])
    recipe = load_recipe("recipes/dpo_tiny.yaml", [
        "model.path=tiny:xs", f"data.train={train_sources}", f"data.eval={json.dumps({'path': f'hf:{root}', 'columns': COLUMNS})}",
        f"training.output_dir={tmp_path / 'run'}", "training.max_steps=1", "training.per_device_train_batch_size=4",
        "training.save_strategy='no'", "data.max_length=96"])
    summary = train(recipe)
    assert [(s["source"], s["records"], s["loaded"]) for s in summary.data["train"]] == [
        (f"hf:{root}/train", 12, 30), ("data/samples/preference.jsonl", 2, 2)]
    assert summary.data["eval"][0]["source"] == f"hf:{root}/test" and summary.eval_examples == 10
    assert any(line.startswith(f"train mix: hf:{root}/train 12 of 30") for line in summary_lines(summary))
    saved = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    assert saved["data"] == summary.data and saved["steps"] == 1 and saved["log_history"]
