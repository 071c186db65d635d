"""`gym make-data`: deterministic per seed, disjoint splits, and outputs that validate."""

import json

import pytest

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


def test_noisy_prompts_cover_their_split_in_its_own_noise_kinds(tmp_path):
    from alignkit.gym.world import HELDOUT_NOISE, TRAIN_NOISE, task_for_prompt

    manifest = make_data(tmp_path, seed=0)
    assert manifest["noise_kinds"] == {"train": list(TRAIN_NOISE), "heldout": list(HELDOUT_NOISE)}
    texts = {name: (tmp_path / f"{name}.jsonl").read_text() for name in ("train_sft", "train_preference", "train_judgment",
                                                                        "train_prompts", "train_noisy_prompts", "train_teacher_sft")}
    for split, kinds in (("train", TRAIN_NOISE), ("heldout", HELDOUT_NOISE)):
        canonical = [json.loads(l)["prompt"] for l in open(tmp_path / f"{split}_prompts.jsonl")]
        rows = [json.loads(l) for l in open(tmp_path / f"{split}_noisy_prompts.jsonl")]
        assert len(load_records(tmp_path / f"{split}_noisy_prompts.jsonl", "prompt").records) == len(rows) == manifest["files"][f"{split}_noisy_prompts"]
        assert [(r["canonical"], r["noise"]) for r in rows] == [(c, k) for c in canonical for k in kinds]
        for r in rows:
            task = task_for_prompt(r["prompt"])
            assert task.prompt == r["canonical"] and task.family == r["family"] and r["prompt"] != r["canonical"]
            if split == "heldout":  # held-out surface forms appear in no training file
                assert all(json.dumps(r["prompt"])[1:-1] not in t for t in texts.values()), r["prompt"]


def test_heldout_noisy_prompts_pair_with_their_canonical_prompts_by_task():
    from alignkit.gym.evaluation import load_prompt_variants, paired_prompt_gap
    from alignkit.gym.world import HELDOUT_NOISE

    variants = load_prompt_variants("data/gym/heldout_noisy_prompts.jsonl")
    canonical = [json.loads(l)["prompt"] for l in open("data/gym/heldout_prompts.jsonl")]
    assert list(dict.fromkeys(v["canonical"] for v in variants)) == canonical
    # Hand-made per-prompt rewards: canonical 2.0 on even tasks, 1.0 on odd; each noise kind k scores k less.
    base = {c: 2.0 - i % 2 for i, c in enumerate(canonical)}
    drop = {k: float(i) for i, k in enumerate(HELDOUT_NOISE)}
    gap = paired_prompt_gap("m", base, variants, [base[v["canonical"]] - drop[v["noise"]] for v in variants], samples=16)
    assert gap.gap.prompts == len(canonical) and gap.noisy_prompts == len(canonical) * len(HELDOUT_NOISE)
    assert gap.canonical.mean == pytest.approx(1.5, abs=0.01) and gap.gap.se == pytest.approx(0.0, abs=1e-12)
    assert gap.gap.mean == pytest.approx(-sum(drop.values()) / len(drop))
    assert {k: s.mean for k, s in gap.per_noise.items()} == pytest.approx({k: -d for k, d in drop.items()})
