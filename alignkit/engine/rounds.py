"""Online training in rounds: sample from the current policy, judge each response, train on the judged
samples, continue from the result (the online setting of CUT and other judgment-driven methods).

A rounds recipe is YAML with an `online:` section (see `docs/cut.md`):

```yaml
online:
  recipe: recipes/cut_tiny.yaml        # the method recipe each round trains (data.train is replaced)
  rounds: 3
  prompts: data/gym/train_prompts.jsonl
  prompts_per_round: 80                # a fresh slice of the (seeded) shuffled prompts each round
  samples_per_prompt: 2
  sampling: {temperature: 1.0, max_tokens: 48}
  judge: {kind: gold}                  # gold (the gym), or {kind: critic, model: FOLDER_OR_URL[, template: critic_cut]}
  output_dir: runs/cut_online_tiny
```

Each round writes `round-<r>/judged.jsonl` (the method's records built from the judged samples: for CUT,
judgment triples whose judgment is null when the judge found nothing wrong) and trains into
`round-<r>/`; the next round samples from `round-<r>/final`. A round whose model is complete is skipped and
an interrupted round resumes from its last complete checkpoint, so rerunning the command continues where
it stopped. The method turns a judged sample into its record with `Method.record_from_judgment`.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.config import RecipeError, load_recipe, method_module
from alignkit.config.online import JudgeSettings, OnlineSettings, is_online, load_online  # noqa: F401  (re-exported)

log = logging.getLogger("alignkit")


@dataclass
class RoundStage:
    """One round seen as a stage (for the staged-recipe completeness checks)."""

    name: str
    recipe: Any
    output: Path


def round_prompts(settings: OnlineSettings) -> list[list[Any]]:
    """The prompts of every round: the shuffled prompt file (seeded), a fresh slice per round (wrapping)."""
    from alignkit.data.loaders import load_records
    from alignkit.data.records import to_prompt

    prompts = [to_prompt(r).prompt for r in load_records(settings.prompts, None).records]
    random.Random(settings.seed).shuffle(prompts)
    out, cursor = [], 0
    for _ in range(settings.rounds):
        take = [prompts[(cursor + i) % len(prompts)] for i in range(settings.prompts_per_round)]
        cursor += settings.prompts_per_round
        out.append(take)
    return out


def make_judge(settings: JudgeSettings) -> Any:
    """A `critique(prompts, responses) -> [(positive, judgment)]` object for the settings: the gym's gold critic,
    or an LLM critic (`alignkit.judge.critic.make_critic`) on a model folder or an OpenAI-compatible endpoint."""
    if settings.kind == "gold":
        from alignkit.scoring.gold import GoldCritic

        return GoldCritic()
    from alignkit.judge.critic import make_critic

    return make_critic(settings.model, template=settings.template, backend=settings.backend, max_tokens=settings.max_tokens,
                       api_key=settings.api_key, model_name=settings.model_name)


def judged_round(settings: OnlineSettings, model: str, prompts: list[Any], round_index: int, method: Any,
                 judge: Any, recipe: Any) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Sample from `model`, judge every response, and turn each into the method's record (as a dict)."""
    from alignkit.data.records import prompt_json
    from alignkit.generation.base import SamplingParams
    from alignkit.generation.rollouts import rollouts

    sampling = {"temperature": 1.0, "max_tokens": 128, **settings.sampling}
    params = SamplingParams(n=settings.samples_per_prompt, seed=settings.seed + round_index, **sampling)
    rows = rollouts(model, [{"prompt": prompt_json(p)} for p in prompts], params, "auto", recipe.data.template,
                    max_prompt_length=recipe.data.max_prompt_length)
    pairs = [(row["prompt"], c["text"]) for row in rows for c in row["completions"]]
    empty = sum(1 for _, r in pairs if not r.strip())
    pairs = [(p, r) for p, r in pairs if r.strip()]  # an empty response cannot be a training record; counted
    verdicts = judge.critique([p for p, _ in pairs], [r for _, r in pairs])
    if len(verdicts) != len(pairs):
        raise RuntimeError(f"the judge returned {len(verdicts)} verdicts for {len(pairs)} responses")
    # A critic that wrote nothing (not positive, no judgment) gives no training signal: counted and left out.
    judged = [(pair, v) for pair, v in zip(pairs, verdicts) if v[0] or v[1]]
    records = [method.record_from_judgment(p, r, positive, judgment) for (p, r), (positive, judgment) in judged]
    positives = sum(1 for _, (positive, _) in judged if positive)
    return records, {"samples": len(judged), "positive": positives / max(len(judged), 1), "empty_skipped": empty,
                     "unjudged_skipped": len(pairs) - len(judged)}


def run_rounds(path: str | Path, overrides: list[str] | None = None, train_round: Any = None) -> list[dict[str, Any]]:
    """Run (or continue) a rounds recipe; returns one summary dict per round."""
    from alignkit.engine.run import mark_stage_complete, stage_status
    from alignkit.generation.rollouts import write_jsonl

    settings, common = load_online(path, overrides)
    out = Path(settings.output_dir)
    base = load_recipe(settings.recipe, common, check_files=False)
    module = method_module(base.method)
    if not hasattr(module.Method, "record_from_judgment"):
        raise RecipeError(f"{path}: method {base.method!r} cannot train on judged samples (no record_from_judgment)")
    judge = None
    model = base.model.path
    summaries = []
    for r, prompts in enumerate(round_prompts(settings)):
        folder = out / f"round-{r}"
        data = folder / "judged.jsonl"
        items = [*common, f"model.path={model}", f"data.train={data}", f"training.output_dir={folder}"]
        recipe = load_recipe(settings.recipe, items, check_files=False)
        stage = RoundStage(f"round-{r}", recipe, folder / "final")
        status = stage_status(stage)
        summary: dict[str, Any] = {"round": r, "model": model, "data": str(data)}
        if status == "complete":
            log.info("round %d/%d: complete (%s), skipped", r + 1, settings.rounds, stage.output)
        else:
            if not data.is_file():
                from alignkit.engine.run import load_method
                from alignkit.modeling.loading import load_tokenizer

                judge = judge or make_judge(settings.judge)
                method = load_method(recipe, load_tokenizer(recipe.model))
                records, stats = judged_round(settings, model, prompts, r, method, judge, recipe)
                write_jsonl(data, records)
                (folder / "judged_stats.json").write_text(json.dumps(stats))
                log.info("round %d/%d: %d judged samples (%.0f%% judged fine; %d without a judgment left out) -> %s",
                         r + 1, settings.rounds, stats["samples"], 100 * stats["positive"], stats["unjudged_skipped"], data)
            log.info("round %d/%d: %s", r + 1, settings.rounds, "resuming" if status == "interrupted" else "training")
            (train_round or _train_in_process)(recipe, status == "interrupted")
            mark_stage_complete(stage)
        stats_file = folder / "judged_stats.json"
        if stats_file.is_file():
            summary.update(json.loads(stats_file.read_text()))
        summary["checkpoint"] = str(stage.output)
        summaries.append(summary)
        model = str(stage.output)
    return summaries


def _train_in_process(recipe: Any, resume: bool) -> None:
    from alignkit.engine.run import train

    train(recipe, resume=resume)
