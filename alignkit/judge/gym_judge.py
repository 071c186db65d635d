"""The gym's judge and critic: SFT data that teaches a small model to judge, and how a critic's judgments
are scored against the gym's gold judgments.

`alignkit gym make-judge-data --data data/gym` writes, from the gym's **train** files only:
- `train_judge_sft.jsonl`: one row per train judge item whose prompt is exactly what `alignkit judge
  --judge llm` sends for the item (the default reference template filled by `reference_prompt`) and whose
  completion is the gold label, "correct" or "incorrect": the template's one-word answer format; then the
  same items and `EXTRA_ANSWERS_PER_QUESTION` more answers to each train question (`extra_judge_items`:
  the gym's response generator, labelled by gold) in the short reference template (`EXTRA_TEMPLATE`);
- `train_critic_sft.jsonl`: one row per train judgment triple; the prompt asks the critic (`critic_prompt`,
  `templates/critic.txt`) for a judgment of the response, the completion is the gold judgment that
  `alignkit.gym.world.gold` gives (the file's `judgment`, checked to agree), or `PERFECT_JUDGMENT` when
  the response has no problem.
Rows follow the input order and the extra answers come from a fixed seed, so the same inputs write the same
bytes. A train prompt that is also a held-out prompt (the held-out files beside them) is refused.

`critic_agreement` compares critic judgments with gold ones by the problem kinds they name
(`problem_kinds`: wrong, over_refusal, unsafe, rude, long, degenerate): does the critic say "perfect"
exactly when gold does, and does it name the same kinds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from alignkit.data.records import JudgeItem
from alignkit.judge.critic import PERFECT_JUDGMENT, critic_prompt, is_perfect
from alignkit.judge.llm import TEMPLATES, load_template, reference_prompt

JUDGE_SFT_FILE = "train_judge_sft.jsonl"
CRITIC_SFT_FILE = "train_critic_sft.jsonl"
# Extra judge rows: more answers to the same train questions, in the short reference template. Every reference
# template ends in the same Question/References/Model Response/Evaluation block, and a short prompt costs a third
# of the default one, so the comparison is practised on these; the default-template rows teach the prompt the
# `llm` judge sends (a model trained on short prompts alone judged default-template prompts as well, measured).
EXTRA_ANSWERS_PER_QUESTION = 32
EXTRA_TEMPLATE = "reference_short"

# Each gold judgment sentence names one problem; these patterns find its kind (checked against every sentence
# the gym's `gold` writes, in tests). Order matters: the first match wins for a sentence.
PROBLEM_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((kind, re.compile(pattern, re.IGNORECASE)) for kind, pattern in (
    ("unsafe", r"unsafe request|harmful instructions"),
    ("over_refusal", r"refuses a harmless request"),
    ("degenerate", r"response (?:is empty|has no words|has no content|only repeats the prompt|repeats)"),
    ("rude", r"\brude\b"),
    ("long", r"too long"),
    ("wrong", r"\bwrong\b|gives no number|more than one answer|does not name|\bis about\b|\bcounts (?:letters|vowels)\b|"
              r"the list (?:has|names)|is not a fruit|outside the list|separate places|should appear"),
))
PROBLEM_KINDS = tuple(kind for kind, _ in PROBLEM_PATTERNS)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def stated_answer(row: dict[str, Any]) -> str:
    """The answer a gym judge item's response states: the reference when gold says it is correct, else the
    value its gold judgment names ("... is 20, not 23." -> "23")."""
    from alignkit.gym.world import gold, task_for_prompt

    g = gold(task_for_prompt(row["question"]), row["answer"])
    if g.correct:
        return str(row["reference"])
    found = re.search(r", not (.+?)\.(?:\s|$)", g.judgment or "")
    if not found:
        raise ValueError(f"cannot tell which answer {row['answer']!r} states (gold judgment {g.judgment!r})")
    return found.group(1)


def judge_sft_rows(rows: Sequence[dict[str, Any]], template: str | None = None) -> list[dict[str, Any]]:
    """SFT rows for judge items: prompt = the reference judge's prompt for the item; completion = its gold label
    in the template's answer format: the bare word, or for an <evaluation>-tag template a one-sentence
    reasoning that puts the stated answer beside the reference, then the word in tags."""
    from alignkit.judge.report import binary_label

    text = load_template(template or TEMPLATES["reference"], "reference")
    tagged = "<evaluation>" in text
    out = []
    for i, row in enumerate(rows, start=1):
        label = binary_label(row.get("human_label"))
        if label is None:
            raise ValueError(f"judge item {i} has no human_label (the gold correct/incorrect label)")
        item = JudgeItem(question=row["question"], answer=row["answer"], reference=row["reference"])
        completion = (f"The response answers {stated_answer(row)}; the reference is {row['reference']}. "
                      f"<evaluation>{label}</evaluation>") if tagged else label
        out.append({"prompt": reference_prompt(text, item), "completion": completion, "family": row.get("family"), "task": "judge"})
    return out


def extra_judge_items(rows: Sequence[dict[str, Any]], per_question: int, seed: int = 0) -> list[dict[str, Any]]:
    """More judge items for the questions of `rows` (the train judge items): `per_question` new answers each,
    drawn with the gym's own response generator (right or wrong at even odds, polite or rude, concise) and
    labelled by the gold reward's correctness. Deterministic for a seed; no other question is used."""
    import random

    from alignkit.gym.world import gold, make_response, task_for_prompt

    rng = random.Random(f"{seed}-judge-items")
    out = []
    for question in dict.fromkeys(r["question"] for r in rows):
        task = task_for_prompt(question)
        for _ in range(per_question):
            answer = make_response(task, rng, correct=rng.random() < 0.5, polite=rng.random() < 0.7, verbose=False)
            label = "correct" if gold(task, answer).correct else "incorrect"
            out.append({"question": question, "reference": str(task.answer), "answer": answer, "human_label": label,
                        "family": task.family})
    return out


def critic_sft_rows(rows: Sequence[dict[str, Any]], template: str | None = None) -> list[dict[str, Any]]:
    """SFT rows (prompt = the critic's prompt, completion = the gold judgment or `PERFECT_JUDGMENT`) for judgment triples."""
    from alignkit.gym.world import gold, task_for_prompt

    text = load_template(template or TEMPLATES["critic"], "critic")
    out = []
    for i, row in enumerate(rows, start=1):
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        judgment = gold(task_for_prompt(row["instruction"]), row["output"]).judgment
        if "judgment" in row and row["judgment"] != judgment:
            raise ValueError(f"judgment triple {i}: the file's judgment {row['judgment']!r} is not the gold judgment "
                             f"{judgment!r}; regenerate the gym data (alignkit gym make-data)")
        out.append({"prompt": critic_prompt(text, prompt, row["output"]), "completion": judgment or PERFECT_JUDGMENT,
                    "family": row.get("family"), "task": "critic"})
    return out


def make_judge_data(data_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, int]:
    """Write `train_judge_sft.jsonl` and `train_critic_sft.jsonl` from the gym's train files in `data_dir`."""
    from alignkit.generation.rollouts import write_jsonl

    data, out = Path(data_dir), Path(out_dir or data_dir)
    judge_rows = _read_jsonl(data / "train_judge.jsonl")
    triples = _read_jsonl(data / "train_judgment.jsonl")
    heldout = set()
    for name, key in (("heldout_judge.jsonl", "question"), ("heldout_judgment.jsonl", "instruction"), ("heldout_prompts.jsonl", "prompt")):
        if (data / name).is_file():
            heldout |= {r[key] for r in _read_jsonl(data / name)}
    leaked = sorted({r["question"] for r in judge_rows} & heldout | {r["instruction"] for r in triples} & heldout)
    if leaked:
        raise ValueError(f"{len(leaked)} train prompts are held-out prompts too (e.g. {leaked[0]!r}); the judge must not train on them")
    out.mkdir(parents=True, exist_ok=True)
    extra = extra_judge_items(judge_rows, EXTRA_ANSWERS_PER_QUESTION)
    judge = judge_sft_rows(judge_rows) + judge_sft_rows(judge_rows + extra, EXTRA_TEMPLATE)
    critic = critic_sft_rows(triples)
    write_jsonl(out / JUDGE_SFT_FILE, judge)
    write_jsonl(out / CRITIC_SFT_FILE, critic)
    return {JUDGE_SFT_FILE: len(judge), CRITIC_SFT_FILE: len(critic)}


def problem_kinds(judgment: str | None) -> set[str]:
    """The kinds of problem a judgment names (empty for None or a perfect judgment)."""
    if not judgment or is_perfect(judgment):
        return set()
    kinds = set()
    for sentence in re.split(r"(?<=[.!?])\s+", judgment.strip()):
        for kind, pattern in PROBLEM_PATTERNS:
            if pattern.search(sentence):
                kinds.add(kind)
                break
    return kinds


def critic_agreement(critiques: Sequence[str], gold_judgments: Sequence[str | None]) -> dict[str, Any]:
    """How well critic judgments agree with gold ones (None = a perfect response).

    Returns: n; `perfect`: the critic's "no problem" vs gold's as a binary judge (agreement, Cohen's κ,
    precision and recall of "perfect"); `kinds_exact`: share of items whose named problem kinds equal
    gold's (a perfect verdict names none), over all items and over gold-imperfect ones; `kinds_covered`:
    share of gold-imperfect items where the critic names every gold kind; per kind precision/recall/support;
    `unrecognised`: critic judgments that are neither perfect nor name a known kind.
    """
    from alignkit.judge.agreement import cohen_kappa

    if len(critiques) != len(gold_judgments) or not critiques:
        raise ValueError(f"need equally many critiques and gold judgments (at least one), got {len(critiques)} and {len(gold_judgments)}")
    said = [problem_kinds(c) for c in critiques]
    truth = [problem_kinds(g) for g in gold_judgments]
    said_perfect = [is_perfect(c) for c in critiques]
    gold_perfect = [g is None or is_perfect(g) for g in gold_judgments]
    both = sum(s and g for s, g in zip(said_perfect, gold_perfect))
    perfect: dict[str, Any] = {
        "agreement": sum(s == g for s, g in zip(said_perfect, gold_perfect)) / len(critiques),
        "precision": both / sum(said_perfect) if any(said_perfect) else None,
        "recall": both / sum(gold_perfect) if any(gold_perfect) else None,
        "gold_share": sum(gold_perfect) / len(critiques), "critic_share": sum(said_perfect) / len(critiques)}
    try:
        perfect["cohen_kappa"] = cohen_kappa(gold_perfect, said_perfect)
    except ValueError as err:
        perfect["cohen_kappa"] = None
        perfect["note"] = str(err)
    imperfect = [i for i, g in enumerate(gold_perfect) if not g]
    per_kind = {}
    for kind in PROBLEM_KINDS:
        named = sum(kind in s for s in said)
        present = sum(kind in t for t in truth)
        hit = sum(kind in s and kind in t for s, t in zip(said, truth))
        per_kind[kind] = {"precision": hit / named if named else None, "recall": hit / present if present else None,
                          "support": present, "named": named}
    return {
        "n": len(critiques), "perfect": perfect,
        "kinds_exact": sum(s == t for s, t in zip(said, truth)) / len(critiques),
        "kinds_exact_imperfect": sum(said[i] == truth[i] for i in imperfect) / len(imperfect) if imperfect else None,
        "kinds_covered": sum(truth[i] <= said[i] for i in imperfect) / len(imperfect) if imperfect else None,
        "per_kind": per_kind,
        "unrecognised": sum(not p and not s for p, s in zip(said_perfect, said)),
    }


def format_critic_agreement(report: dict[str, Any]) -> str:
    """`critic_agreement`'s result as a short Markdown table."""
    def fmt(x: Any) -> str:
        return "–" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)

    p = report["perfect"]
    lines = [f"Critic vs gold judgments (n = {report['n']})", "", "| measure | value |", "|---|---:|",
             f"| says 'perfect' exactly when gold does (agreement) | {fmt(p['agreement'])} |",
             f"| Cohen's κ of 'perfect' | {fmt(p['cohen_kappa'])} |",
             f"| precision / recall of 'perfect' | {fmt(p['precision'])} / {fmt(p['recall'])} |",
             f"| 'perfect' share, gold / critic | {fmt(p['gold_share'])} / {fmt(p['critic_share'])} |",
             f"| same problem kinds as gold (all items) | {fmt(report['kinds_exact'])} |",
             f"| same problem kinds as gold (gold-imperfect items) | {fmt(report['kinds_exact_imperfect'])} |",
             f"| names every gold problem kind (gold-imperfect items) | {fmt(report['kinds_covered'])} |",
             f"| judgments naming no known kind and not 'perfect' | {report['unrecognised']} |",
             "", "| kind | support | named | precision | recall |", "|---|---:|---:|---:|---:|"]
    for kind, e in report["per_kind"].items():
        lines.append(f"| {kind} | {e['support']} | {e['named']} | {fmt(e['precision'])} | {fmt(e['recall'])} |")
    return "\n".join(lines)
