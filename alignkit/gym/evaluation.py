"""Score models on held-out gym prompts with the gold reward.

Per model: mean gold reward, accuracy on verifiable families, unsafe-compliance rate, over-refusal
rate on safe prompts, politeness, mean length, and KL to the base model estimated on the samples
(KL(π‖base) ≈ mean of log π(y|x) − log base(y|x) over y ~ π). Every figure is a mean over prompts of
per-prompt means, with its standard error over prompts.

`prompt_gap` compares canonical prompts with noisy variants of the same tasks (`make-data`'s
`heldout_noisy_prompts.jsonl`): mean gold reward of each, and their difference paired by task.

With a reward model (a learned, imperfect proxy of gold): its mean score per model (`rm_score`), its
agreement with gold (`reward_model_fidelity`: held-out pairwise accuracy, Spearman with gold over sampled
responses), and best-of-N at several N selected by the reward model and by gold (`best_of_n_table`),
so that reward over-optimisation is visible: selecting harder on the proxy raises its score while gold
lags behind the gold-selected oracle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from alignkit.generation import HFGenerator, SamplingParams
from alignkit.gym.world import gold, task_for_prompt

VERIFIABLE = ("arithmetic", "counting", "facts", "formatting")
METRICS = ("gold_reward", "accuracy", "unsafe_compliance", "over_refusal", "polite", "length_words", "kl_to_base")


@dataclass
class Stat:
    """A mean over prompts with its standard error."""

    mean: float
    se: float
    prompts: int

    def __str__(self) -> str:
        return "n/a" if self.prompts == 0 else f"{self.mean:.3f} ± {self.se:.3f}"


def in_se(s: Stat) -> str:
    """A signed difference with its standard error and its size in standard errors."""
    if not s.se or s.se != s.se:  # zero (identical values) or NaN (one prompt): no ratio to show
        return f"{s.mean:+.3f} ± {s.se:.3f}"
    return f"{s.mean:+.3f} ± {s.se:.3f} ({s.mean / s.se:+.1f} SE)"


def stat(per_prompt: Sequence[float]) -> Stat:
    """Mean and standard error of per-prompt values."""
    x = np.asarray([v for v in per_prompt if v is not None and not np.isnan(v)], dtype=float)
    if len(x) == 0:
        return Stat(float("nan"), float("nan"), 0)
    se = float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")
    return Stat(float(x.mean()), se, len(x))


@dataclass
class ModelReport:
    """One model's gym figures."""

    model: str
    stats: dict[str, Stat]
    per_family_reward: dict[str, Stat] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    per_prompt: dict[str, list[Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        as_dict = lambda s: {"mean": s.mean, "se": s.se, "prompts": s.prompts}  # noqa: E731
        return {"model": self.model, **{k: as_dict(v) for k, v in self.stats.items()},
                "per_family_reward": {k: as_dict(v) for k, v in self.per_family_reward.items()}}


def load_prompts(path: str | Path) -> list[str]:
    """Prompt texts of a gym prompts file."""
    return [json.loads(line)["prompt"] for line in Path(path).read_text().splitlines() if line.strip()]


def evaluate(model: str, prompts: Sequence[str], base: HFGenerator | None = None, samples: int = 4,
             temperature: float = 1.0, max_tokens: int = 64, seed: int = 0, reward_model: Any = None) -> ModelReport:
    """Sample `samples` completions per prompt and score them with the gold reward (and a reward model)."""
    gen = HFGenerator.from_pretrained(model)
    results = gen.generate(list(prompts), SamplingParams(n=samples, temperature=temperature, max_tokens=max_tokens, seed=seed, logprobs=base is not None))
    return report_from_results(model, results, base, gen.encode, reward_model)


def report_from_results(name: str, results: Sequence[Any], base: HFGenerator | None = None, encode: Any = None,
                        reward_model: Any = None) -> ModelReport:
    """Gold figures of sampled results (one `GenerationResult` per gym prompt), with KL to `base` (its log-probs
    of each sample after `encode(prompt)`; the samples need their own log-probs) and reward-model scores."""
    per: dict[str, list[Any]] = {k: [] for k in (*METRICS, "degenerate", "hit_stop")}
    families: dict[str, list[float]] = {}
    rows = []
    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    for result in results:
        task = task_for_prompt(result.prompt)
        golds = [gold(task, c.text, result.prompt) for c in result.completions]
        per["gold_reward"].append(mean([g.reward for g in golds]))
        per["accuracy"].append(mean([g.correct for g in golds]) if task.family in VERIFIABLE else None)
        per["unsafe_compliance"].append(mean([not g.safe for g in golds]) if task.unsafe else None)
        per["over_refusal"].append(None if task.unsafe else mean([g.refused for g in golds]))
        per["polite"].append(mean([g.polite for g in golds]))
        per["length_words"].append(mean([len(c.text.split()) for c in result.completions]))
        per["degenerate"].append(mean([g.degenerate for g in golds]))
        per["hit_stop"].append(mean([c.finish_reason == "stop" for c in result.completions]))
        families.setdefault(task.family, []).append(per["gold_reward"][-1])
        rows += [{"prompt": result.prompt, "family": task.family, "response": c.text, **g.to_json()} for c, g in zip(result.completions, golds)]
    if reward_model is not None:
        from alignkit.scoring.base import score_groups

        scores = score_groups(reward_model, [r.prompt for r in results], [[c.text for c in r.completions] for r in results])
        per["rm_score"] = [mean(s) for s in scores]
        for row, score in zip(rows, (x for s in scores for x in s)):
            row["rm_score"] = score
    if base is not None:  # one batched scoring pass of every sample under the base model
        prompt_ids = [encode(r.prompt) for r in results for _ in r.completions]
        base_lp = iter(base.score(prompt_ids, [c.token_ids for r in results for c in r.completions]))
        for r in results:
            per["kl_to_base"].append(mean([c.logprob - sum(next(base_lp)) for c in r.completions]))
    return ModelReport(name, {k: stat(v) for k, v in per.items()}, {f: stat(v) for f, v in sorted(families.items())}, rows, per)


def best_of_n_value(select_by: Sequence[float], value: Sequence[float], n: int) -> float:
    """Expected `value` of the best-of-n (by `select_by`) of n responses drawn without replacement from these
    samples: an unbiased estimate of best-of-n from k ≥ n samples (ties go to the earlier sample)."""
    k = len(select_by)
    if not 1 <= n <= k:
        raise ValueError(f"best-of-{n} needs at least {n} samples, got {k}")
    order = sorted(range(k), key=lambda i: (-select_by[i], i))
    from math import comb

    total = comb(k, n)
    return sum(comb(k - 1 - r, n - 1) / total * value[i] for r, i in enumerate(order))


def best_of_n_table(report: ModelReport, ns: Sequence[int] = (1, 4, 16)) -> dict[str, dict[int, Stat]]:
    """Gold reward (and reward-model score) of best-of-N, selected by the reward model and by gold, per N."""
    by_prompt: dict[str, list[dict[str, Any]]] = {}
    for row in report.samples:
        by_prompt.setdefault(row["prompt"], []).append(row)
    out: dict[str, dict[int, Stat]] = {"gold | rm-selected": {}, "rm score | rm-selected": {}, "gold | gold-selected": {}}
    for n in ns:
        rm_gold, rm_rm, gold_gold = [], [], []
        for rows in by_prompt.values():
            rm, g = [r["rm_score"] for r in rows], [r["reward"] for r in rows]
            rm_gold.append(best_of_n_value(rm, g, n))
            rm_rm.append(best_of_n_value(rm, rm, n))
            gold_gold.append(best_of_n_value(g, g, n))
        out["gold | rm-selected"][n], out["rm score | rm-selected"][n] = stat(rm_gold), stat(rm_rm)
        out["gold | gold-selected"][n] = stat(gold_gold)
    return out


def reward_model_fidelity(reward_model: Any, report: ModelReport, pairs_file: str | Path) -> dict[str, float]:
    """How well a reward model agrees with gold: held-out pairwise accuracy on `pairs_file` (the pair with the
    higher gold reward is `chosen`) and Spearman's ρ between its scores and gold over `report`'s samples."""
    from scipy.stats import spearmanr

    pairs = [json.loads(line) for line in Path(pairs_file).read_text().splitlines() if line.strip()]
    chosen = reward_model.score_batch([p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    rejected = reward_model.score_batch([p["prompt"] for p in pairs], [p["rejected"] for p in pairs])
    correct = [float(c > r) for c, r in zip(chosen, rejected)]
    rho = spearmanr([r["rm_score"] for r in report.samples], [r["reward"] for r in report.samples]).statistic
    acc = stat(correct)
    return {"pairwise_accuracy": acc.mean, "pairwise_accuracy_se": acc.se, "pairs": len(pairs), "spearman_with_gold": float(rho),
            "samples": len(report.samples)}


def paired_difference(model: ModelReport, base: ModelReport, metric: str = "gold_reward") -> Stat:
    """Mean over prompts of (model − base) per-prompt values, with its paired standard error."""
    pairs = [(a, b) for a, b in zip(model.per_prompt[metric], base.per_prompt[metric]) if a is not None and b is not None]
    return stat([a - b for a, b in pairs])


@dataclass
class PromptGap:
    """Gold reward on canonical prompts vs noisy variants of the same tasks, paired by task."""

    model: str
    canonical: Stat  # mean over tasks of the canonical prompt's mean reward
    noisy: Stat  # mean over tasks of the mean reward of the task's noisy prompts
    gap: Stat  # mean over tasks of (noisy − canonical), with its paired standard error
    per_noise: dict[str, Stat]  # the paired gap of each noise kind alone
    samples: int
    noisy_prompts: int

    def to_json(self) -> dict[str, Any]:
        as_dict = lambda s: {"mean": s.mean, "se": s.se, "tasks": s.prompts}  # noqa: E731
        return {"model": self.model, "canonical": as_dict(self.canonical), "noisy": as_dict(self.noisy), "gap": as_dict(self.gap),
                "per_noise": {k: as_dict(v) for k, v in self.per_noise.items()}, "samples": self.samples,
                "noisy_prompts": self.noisy_prompts}


def load_prompt_variants(path: str | Path) -> list[dict[str, str]]:
    """Rows `{"prompt", "canonical", "noise"}` of a noisy prompts file (`make-data`'s `*_noisy_prompts.jsonl`)."""
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = [k for k in ("prompt", "canonical") if not isinstance(row.get(k), str)]
        if missing:
            raise ValueError(f"{path}, record {i}: field(s) {', '.join(missing)} missing or not text; expected "
                             '{"prompt": noisy, "canonical": original, "noise": kind}')
        rows.append({"prompt": row["prompt"], "canonical": row["canonical"], "noise": str(row.get("noise", "noisy"))})
    return rows


def prompt_gap(model: str, variants: Sequence[dict[str, str]], samples: int = 16, temperature: float = 1.0,
               max_tokens: int = 64, seed: int = 0) -> PromptGap:
    """Sample canonical and noisy prompts in one pass and compare them task by task (noisy − canonical)."""
    canonical = list(dict.fromkeys(v["canonical"] for v in variants))
    report = evaluate(model, canonical + [v["prompt"] for v in variants], samples=samples, temperature=temperature,
                      max_tokens=max_tokens, seed=seed)
    reward = report.per_prompt["gold_reward"]
    return paired_prompt_gap(model, dict(zip(canonical, reward[: len(canonical)])), variants, reward[len(canonical) :], samples)


def paired_prompt_gap(model: str, canonical_reward: dict[str, float], variants: Sequence[dict[str, str]],
                      variant_reward: Sequence[float], samples: int) -> PromptGap:
    """The paired comparison of per-prompt mean rewards: each task's noisy prompts (averaged) minus its canonical prompt."""
    by_task: dict[str, list[float]] = {}
    by_noise: dict[str, dict[str, list[float]]] = {}
    for v, r in zip(variants, variant_reward, strict=True):
        by_task.setdefault(v["canonical"], []).append(r)
        by_noise.setdefault(v["noise"], {}).setdefault(v["canonical"], []).append(r)
    tasks = list(by_task)
    noisy = {c: float(np.mean(rs)) for c, rs in by_task.items()}
    per_noise = {k: stat([float(np.mean(rs)) - canonical_reward[c] for c, rs in group.items()]) for k, group in sorted(by_noise.items())}
    return PromptGap(model, stat([canonical_reward[c] for c in tasks]), stat([noisy[c] for c in tasks]),
                     stat([noisy[c] - canonical_reward[c] for c in tasks]), per_noise, samples, len(variants))


def format_prompt_gaps(gaps: Sequence[PromptGap]) -> Any:
    """A rich table: canonical vs noisy gold reward and the paired gap, one column per model."""
    from rich.table import Table

    table = Table(title="gold reward on canonical vs noisy prompts of the same tasks (mean ± SE over tasks; gap paired by task)")
    table.add_column("")
    for g in gaps:
        table.add_column(g.model, justify="right")
    table.add_row("canonical", *(str(g.canonical) for g in gaps))
    table.add_row("noisy", *(str(g.noisy) for g in gaps))
    table.add_row("gap: noisy − canonical", *(in_se(g.gap) for g in gaps))
    for kind in sorted({k for g in gaps for k in g.per_noise}):
        table.add_row(f"gap: {kind}", *(in_se(g.per_noise[kind]) if kind in g.per_noise else "" for g in gaps))
    table.add_row("tasks / noisy prompts / samples per prompt", *(f"{g.gap.prompts} / {g.noisy_prompts} / {g.samples}" for g in gaps))
    return table


def format_reports(reports: Sequence[ModelReport]) -> Any:
    """A rich table: one row per metric, one column per model."""
    from rich.table import Table

    table = Table(title="gym evaluation on held-out prompts (mean ± standard error over prompts)")
    table.add_column("metric")
    for r in reports:
        table.add_column(r.model, justify="right")
    for metric in METRICS + ("degenerate", "rm_score"):
        if all(metric in r.stats for r in reports):
            table.add_row(metric, *(str(r.stats[metric]) for r in reports))
    families = sorted({f for r in reports for f in r.per_family_reward})
    for fam in families:
        table.add_row(f"reward: {fam}", *(str(r.per_family_reward.get(fam, Stat(float('nan'), float('nan'), 0))) for r in reports))
    for metric in ("gold_reward", "accuracy", "unsafe_compliance"):
        diffs = [paired_difference(r, reports[0], metric) for r in reports[1:]]
        table.add_row(f"Δ {metric} vs {reports[0].model} (paired)", "", *(in_se(d) for d in diffs))
    return table
