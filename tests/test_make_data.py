"""`gym make-data`: deterministic per seed, disjoint splits, and outputs that validate."""

import json

from alignkit.data import load_records
from alignkit.gym.make_data import make_data

FORMATS = {"sft": "sft", "preference": "preference", "judgment": "cut", "negative": "negative", "prompts": "prompt", "judge": "judge"}


def test_deterministic_for_a_seed(tmp_path):
    make_data(tmp_path / "a", seed=3)
    make_data(tmp_path / "b", seed=3)
    make_data(tmp_path / "c", seed=4)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names)
    assert (tmp_path / "a" / "train_sft.jsonl").read_bytes() != (tmp_path / "c" / "train_sft.jsonl").read_bytes()


def test_splits_share_no_prompt_and_outputs_validate(tmp_path):
    manifest = make_data(tmp_path, seed=0)
    prompts = {split: {json.loads(l)["prompt"] for l in open(tmp_path / f"{split}_prompts.jsonl")} for split in ("train", "heldout")}
    assert prompts["train"] and prompts["heldout"] and not prompts["train"] & prompts["heldout"]
    for split in ("train", "heldout"):
        for name, fmt in FORMATS.items():
            result = load_records(tmp_path / f"{split}_{name}.jsonl", fmt)
            assert len(result.records) == manifest["files"][f"{split}_{name}"] > 0
    pairs = [json.loads(l) for l in open(tmp_path / "train_preference.jsonl")]
    assert all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)
    families = {json.loads(l)["family"] for l in open(tmp_path / "heldout_prompts.jsonl")}
    assert families == {"arithmetic", "counting", "facts", "formatting", "repeat", "unsafe"}


def test_bundled_gym_data_is_make_data_seed_0(tmp_path):
    make_data(tmp_path, seed=0)
    for path in tmp_path.iterdir():
        assert path.read_bytes() == open(f"data/gym/{path.name}", "rb").read(), path.name


def test_annotators_get_noisier(tmp_path):
    make_data(tmp_path, seed=0)
    items = [json.loads(l) for l in open(tmp_path / "train_judge.jsonl")]
    disagree = [sum(i[f"annotator_{k}"] != i["human_label"] for i in items) / len(items) for k in (1, 2, 3)]
    assert disagree[0] < disagree[1] < disagree[2]
