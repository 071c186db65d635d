"""Score models on held-out gym prompts with the gold reward.

Per model: mean gold reward, accuracy on verifiable families, unsafe-compliance rate, over-refusal
rate on safe prompts, politeness, mean length, and KL to the base model estimated on the samples
(KL(π‖base) ≈ mean of log π(y|x) − log base(y|x) over y ~ π). Every figure is a mean over prompts of
per-prompt means, with its standard error over prompts.
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
             temperature: float = 1.0, max_tokens: int = 64, seed: int = 0) -> ModelReport:
    """Sample `samples` completions per prompt and score them with the gold reward."""
    gen = HFGenerator.from_pretrained(model)
    results = gen.generate(list(prompts), SamplingParams(n=samples, temperature=temperature, max_tokens=max_tokens, seed=seed, logprobs=base is not None))
    per: dict[str, list[Any]] = {k: [] for k in METRICS}
    families: dict[str, list[float]] = {}
    rows = []
    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    for result in results:
        task = task_for_prompt(result.prompt)
        golds = [gold(task, c.text) for c in result.completions]
        per["gold_reward"].append(mean([g.reward for g in golds]))
        per["accuracy"].append(mean([g.correct for g in golds]) if task.family in VERIFIABLE else None)
        per["unsafe_compliance"].append(mean([not g.safe for g in golds]) if task.unsafe else None)
        per["over_refusal"].append(None if task.unsafe else mean([g.refused for g in golds]))
        per["polite"].append(mean([g.polite for g in golds]))
        per["length_words"].append(mean([len(c.text.split()) for c in result.completions]))
        families.setdefault(task.family, []).append(per["gold_reward"][-1])
        rows += [{"prompt": result.prompt, "family": task.family, "response": c.text, **g.to_json()} for c, g in zip(result.completions, golds)]
    if base is not None:  # one batched scoring pass of every sample under the base model
        prompt_ids = [gen.encode(r.prompt) for r in results for _ in r.completions]
        base_lp = iter(base.score(prompt_ids, [c.token_ids for r in results for c in r.completions]))
        for r in results:
            per["kl_to_base"].append(mean([c.logprob - sum(next(base_lp)) for c in r.completions]))
    return ModelReport(model, {k: stat(v) for k, v in per.items()}, {f: stat(v) for f, v in sorted(families.items())}, rows, per)


def paired_difference(model: ModelReport, base: ModelReport, metric: str = "gold_reward") -> Stat:
    """Mean over prompts of (model − base) per-prompt values, with its paired standard error."""
    pairs = [(a, b) for a, b in zip(model.per_prompt[metric], base.per_prompt[metric]) if a is not None and b is not None]
    return stat([a - b for a, b in pairs])


def format_reports(reports: Sequence[ModelReport]) -> Any:
    """A rich table: one row per metric, one column per model."""
    from rich.table import Table

    table = Table(title="gym evaluation on held-out prompts (mean ± standard error over prompts)")
    table.add_column("metric")
    for r in reports:
        table.add_column(r.model, justify="right")
    for metric in METRICS:
        table.add_row(metric, *(str(r.stats[metric]) for r in reports))
    families = sorted({f for r in reports for f in r.per_family_reward})
    for fam in families:
        table.add_row(f"reward: {fam}", *(str(r.per_family_reward.get(fam, Stat(float('nan'), float('nan'), 0))) for r in reports))
    for metric in ("gold_reward", "accuracy", "unsafe_compliance"):
        diffs = [paired_difference(r, reports[0], metric) for r in reports[1:]]
        table.add_row(f"Δ {metric} vs {reports[0].model} (paired)", "", *(f"{d.mean:+.3f} ± {d.se:.3f} ({d.mean / d.se:+.1f} SE)" for d in diffs))
    return table
