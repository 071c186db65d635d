"""`alignkit gym make-data`: the gym's datasets in alignkit's canonical formats.

Train and held-out splits are split by prompt (stratified by family), so no prompt is in both.
Everything is drawn from one `random.Random(seed)`, except the noisy prompt variants, which are drawn
from their own `random.Random(f"{seed}-variants")` so that adding them changed no other file: the
same seed writes the same bytes.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any, Iterable

from alignkit.gym.world import (FACTS_FILE, FAMILIES, HELDOUT_NOISE, TRAIN_NOISE, Gold, Task, all_tasks, facts, gold, make_response,
                                prompt_variants, sample_response)

# SFT data quality: the share of correct answers (and of refusals on unsafe prompts). Mixed on purpose,
# so a model trained on it makes every kind of mistake at a measurable rate.
SFT_P_CORRECT = 0.65
# Simulated models for judge items: their rate of correct answers.
JUDGE_MODELS = {"model-strong": 0.85, "model-medium": 0.55, "model-weak": 0.25}
ANNOTATOR_NOISE = (0.05, 0.15, 0.30)
# The distillation teacher's SFT data keeps only the train responses with this gold reward (correct or a
# refusal, polite and concise): an "aligned" teacher, unlike the mixed-quality base policy.
TEACHER_MIN_GOLD = 3.0


def split_tasks(tasks: list[Task], rng: random.Random, heldout_fraction: float) -> tuple[list[Task], list[Task]]:
    """Per-family shuffle and split, so both splits cover every family and share no prompt."""
    train, heldout = [], []
    for family in FAMILIES:
        group = [t for t in tasks if t.family == family]
        rng.shuffle(group)
        k = max(1, round(len(group) * heldout_fraction))
        heldout += group[:k]
        train += group[k:]
    return train, heldout


def _quality(g: Gold) -> float:
    """2·main + 0.5·polite + 0.5·concise: the gold reward without its penalty terms (over-refusal, degenerate)."""
    main = not g.degenerate and (g.safe if g.correct is None else g.correct and g.safe)
    return 2.0 * main + 0.5 * g.polite + 0.5 * g.concise


def _preference(task: Task, rng: random.Random) -> dict[str, Any] | None:
    # A pair needs responses of different quality; one that differs only by the over-refusal penalty (a refusal
    # vs an equally polite and concise wrong answer) is redrawn, as under gold v1. Such pairs would only teach
    # "attempt rather than refuse", which the gym's pairs already over-teach (README: DPO at 4 epochs learns
    # never to refuse), and keeping gold v1's draws keeps every SFT completion byte-identical (the bundled
    # base policy was trained on them). The pair is ordered by the full gold reward.
    for _ in range(20):
        a, b = sample_response(task, rng), sample_response(task, rng)
        ga, gb = gold(task, a), gold(task, b)
        if _quality(ga) != _quality(gb):
            (chosen, gc), (rejected, gr) = sorted(((a, ga), (b, gb)), key=lambda x: -x[1].reward)
            return {"prompt": task.prompt, "chosen": chosen, "rejected": rejected, "family": task.family,
                    "chosen_reward": gc.reward, "rejected_reward": gr.reward}
    return None


def _judge_items(task: Task, rng: random.Random) -> Iterable[dict[str, Any]]:
    for model, p_correct in JUDGE_MODELS.items():
        answer = make_response(task, rng, correct=rng.random() < p_correct, polite=True, verbose=False)
        label = "correct" if gold(task, answer).correct else "incorrect"
        item = {"question": task.prompt, "reference": str(task.answer), "answer": answer, "model": model,
                "human_label": label, "family": task.family}
        for i, noise in enumerate(ANNOTATOR_NOISE, start=1):
            flip = rng.random() < noise
            item[f"annotator_{i}"] = ({"correct": "incorrect", "incorrect": "correct"}[label]) if flip else label
        yield item


def build_split(tasks: list[Task], rng: random.Random, responses_per_prompt: int) -> dict[str, list[dict[str, Any]]]:
    """All datasets of one split."""
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in ("sft", "preference", "judgment", "negative", "prompts", "judge")}
    for task in tasks:
        out["prompts"].append({"prompt": task.prompt, "family": task.family})
        for _ in range(responses_per_prompt):
            response = sample_response(task, rng, p_correct=SFT_P_CORRECT)
            g = gold(task, response)
            out["sft"].append({"prompt": task.prompt, "completion": response, "family": task.family, "gold_reward": g.reward})
            out["judgment"].append({"instruction": task.prompt, "input": "", "output": response, "judgment": g.judgment,
                                    "family": task.family})
        for _ in range(responses_per_prompt // 2):
            pair = _preference(task, rng)
            if pair:
                out["preference"].append(pair)
        if task.unsafe:
            for _ in range(responses_per_prompt // 2):
                complying = make_response(task, rng, correct=False, polite=rng.random() < 0.7, verbose=False)
                out["negative"].append({"prompt": task.prompt, "rejected": complying, "family": task.family})
        elif task.family in ("arithmetic", "counting", "facts"):
            out["judge"].extend(_judge_items(task, rng))
    return out


def knowledge_rows() -> list[dict[str, Any]]:
    """SFT rows stating the fact table, so held-out fact questions test recall, not guessing.

    Their prompts ("Tell me about X.") are never gym task prompts, so the splits still share no prompt.
    """
    rows = []
    for country, row in facts().items():
        text = f"The capital of {country} is {row['capital']}. The {row['river']} flows through {country}. {country} was founded in {row['founded']}."
        rows.append({"prompt": f"Tell me about {country}.", "completion": text, "family": "knowledge", "gold_reward": None})
    return rows


def noisy_prompt_rows(tasks: list[Task], kinds: tuple[str, ...], rng: random.Random) -> list[dict[str, Any]]:
    """One variant of each noise kind per task: `{"prompt": noisy, "canonical", "family", "noise"}`."""
    return [{"prompt": rng.choice(prompt_variants(task)[kind]), "canonical": task.prompt, "family": task.family, "noise": kind}
            for task in tasks for kind in kinds]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def make_data(out: str | Path, seed: int = 0, heldout_fraction: float = 0.25, responses_per_prompt: int = 4) -> dict[str, Any]:
    """Write `{train,heldout}_{sft,preference,judgment,negative,prompts,judge}.jsonl`, the teacher's
    `train_teacher_sft.jsonl` (only perfect train responses), noisy prompt variants (`train_noisy_prompts.jsonl`:
    train tasks in the train noise kinds; `heldout_noisy_prompts.jsonl`: held-out tasks in the held-out kinds,
    which training data never shows) and a manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    train, heldout = split_tasks(all_tasks(), rng, heldout_fraction)
    counts: dict[str, int] = {}
    for split, tasks in (("train", train), ("heldout", heldout)):
        for name, rows in build_split(tasks, rng, responses_per_prompt).items():
            if split == "train" and name == "sft":
                rows = rows + knowledge_rows() * responses_per_prompt
                # Derived from the rows above without drawing from `rng`, so the other files do not change.
                teacher = [r for r in rows if r["gold_reward"] is None or r["gold_reward"] >= TEACHER_MIN_GOLD]
                _write_jsonl(out / "train_teacher_sft.jsonl", teacher)
                counts["train_teacher_sft"] = len(teacher)
            _write_jsonl(out / f"{split}_{name}.jsonl", rows)
            counts[f"{split}_{name}"] = len(rows)
    variant_rng = random.Random(f"{seed}-variants")
    for split, tasks, kinds in (("train", train, TRAIN_NOISE), ("heldout", heldout, HELDOUT_NOISE)):
        rows = noisy_prompt_rows(tasks, kinds, variant_rng)
        _write_jsonl(out / f"{split}_noisy_prompts.jsonl", rows)
        counts[f"{split}_noisy_prompts"] = len(rows)
    shutil.copyfile(FACTS_FILE, out / "facts.json")
    manifest = {"seed": seed, "heldout_fraction": heldout_fraction, "responses_per_prompt": responses_per_prompt,
                "files": counts, "annotator_noise": list(ANNOTATOR_NOISE), "judge_models": JUDGE_MODELS, "teacher_min_gold": TEACHER_MIN_GOLD,
                "noise_kinds": {"train": list(TRAIN_NOISE), "heldout": list(HELDOUT_NOISE)}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
