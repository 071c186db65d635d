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

The `online:` section is validated by `alignkit.config.online` (read through the one loader,
`alignkit.config.load_plan`); the orchestrator (`alignkit.engine.orchestrator`) calls `run_rounds` and trains
each round's recipe like any other (in several processes when its `launch:` asks for them). `prepare_rounds`
(`alignkit prepare`) draws and judges the first unfinished round's samples and prepares that round.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from alignkit.config import Recipe, RecipeError, RecipePlan, load_plan, load_recipe, method_module
from alignkit.config.online import JudgeSettings, OnlineSettings, is_online, load_online  # noqa: F401  (re-exported)
from alignkit.engine.contract import AlignMethod, defines
from alignkit.engine.stages import mark_stage_complete, stage_status

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


def judged_round(settings: OnlineSettings, model: str, prompts: list[Any], round_index: int, method: AlignMethod,
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


@dataclass
class Round:
    """One round of a rounds recipe: where its judged samples and its model go, and the recipe it trains."""

    index: int
    folder: Path
    data: Path  # round-<r>/judged.jsonl
    model: str  # the policy it samples from: the previous round's model (or the recipe's model for round 0)
    prompts: list[Any]
    recipe: Recipe
    stage: RoundStage


def plan_rounds(plan: RecipePlan) -> list[Round]:
    """Every round of a rounds recipe (loaded by `alignkit.config.load_plan`), each sampling from the round before."""
    settings, common = plan.online, plan.round_overrides
    assert settings is not None and plan.round_recipe is not None, "plan_rounds takes a rounds (online) recipe plan"
    if not defines(method_module(plan.round_recipe.method).Method, "record_from_judgment"):
        raise RecipeError(f"{plan.path}: method {plan.round_recipe.method!r} cannot train on judged samples (no record_from_judgment)")
    out, model, rounds = Path(settings.output_dir), plan.round_recipe.model.path, []
    for r, prompts in enumerate(round_prompts(settings)):
        folder = out / f"round-{r}"
        data = folder / "judged.jsonl"
        recipe = load_recipe(settings.recipe, [*common, f"model.path={model}", f"data.train={data}", f"training.output_dir={folder}"],
                             check_files=False)
        rounds.append(Round(r, folder, data, model, prompts, recipe, RoundStage(f"round-{r}", recipe, folder / "final")))
        model = str(folder / "final")
    return rounds


def sample_round(plan: RecipePlan, rnd: Round, judges: dict[str, Any]) -> None:
    """Write a round's judged samples (`judged.jsonl`, `judged_stats.json`) unless they are there already
    (`judges` holds the judge once it is loaded, for the next rounds)."""
    from alignkit.engine.run import load_method
    from alignkit.generation.rollouts import write_jsonl
    from alignkit.modeling.loading import load_tokenizer

    if rnd.data.is_file():
        return
    settings = plan.online
    assert settings is not None
    if "judge" not in judges:
        judges["judge"] = make_judge(settings.judge)
    method = load_method(rnd.recipe, load_tokenizer(rnd.recipe.model))
    records, stats = judged_round(settings, rnd.model, rnd.prompts, rnd.index, method, judges["judge"], rnd.recipe)
    write_jsonl(rnd.data, records)
    (rnd.folder / "judged_stats.json").write_text(json.dumps(stats))
    log.info("round %d/%d: %d judged samples (%.0f%% judged fine; %d without a judgment left out) -> %s",
             rnd.index + 1, settings.rounds, stats["samples"], 100 * stats["positive"], stats["unjudged_skipped"], rnd.data)


def run_rounds(path: str | Path, overrides: list[str] | None = None, train_round: Callable[[Recipe, bool], Any] | None = None,
               plan: RecipePlan | None = None) -> list[dict[str, Any]]:
    """Run (or continue) a rounds recipe; returns one summary dict per round. `train_round(recipe, resume)` trains
    one round (the orchestrator's, which may launch several processes; default: `train` in this process)."""
    plan = plan or load_plan(path, overrides)
    settings = plan.online
    assert settings is not None, f"{path} is not a rounds recipe"
    judges: dict[str, Any] = {}
    summaries = []
    for rnd in plan_rounds(plan):
        status = stage_status(rnd.stage)
        summary: dict[str, Any] = {"round": rnd.index, "model": rnd.model, "data": str(rnd.data)}
        if status == "complete":
            log.info("round %d/%d: complete (%s), skipped", rnd.index + 1, settings.rounds, rnd.stage.output)
        else:
            sample_round(plan, rnd, judges)
            log.info("round %d/%d: %s", rnd.index + 1, settings.rounds, "resuming" if status == "interrupted" else "training")
            (train_round or _train_in_process)(rnd.recipe, status == "interrupted")
            mark_stage_complete(rnd.stage)
        stats_file = rnd.folder / "judged_stats.json"
        if stats_file.is_file():
            summary.update(json.loads(stats_file.read_text()))
        summary["checkpoint"] = str(rnd.stage.output)
        summaries.append(summary)
    return summaries


def prepare_rounds(plan: RecipePlan) -> list[str]:
    """`alignkit prepare` on a rounds recipe: draw and judge the first unfinished round's samples (from a model that
    exists) and compute its method's signals; later rounds wait for the model the round before trains."""
    from alignkit.engine.run import prepare

    settings = plan.online
    assert settings is not None
    lines, judges, ready = [], {}, True
    for rnd in plan_rounds(plan):
        status = stage_status(rnd.stage)
        if status == "complete":
            lines.append(f"round {rnd.index}: complete ({rnd.stage.output})")
            continue
        if not ready:
            lines.append(f"round {rnd.index}: waits for {rnd.model} (prepared when the rounds recipe trains)")
            continue
        sample_round(plan, rnd, judges)
        lines.append(f"round {rnd.index}: judged samples in {rnd.data}\n{prepare(rnd.recipe)}")
        ready = False  # the next round samples from this round's model, which training writes
    return lines


def _train_in_process(recipe: Recipe, resume: bool) -> None:
    from alignkit.engine.run import train

    train(recipe, resume=resume)
