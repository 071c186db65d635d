"""The one run orchestrator: a recipe file of any shape (plain, staged, online rounds) to trained models.

    run_recipe("recipes/dpo_tiny.yaml", ["training.max_steps=10"])      # what `alignkit train` runs
    prepare_recipe("recipes/adpa_plus_tiny.yaml")                       # what `alignkit prepare` runs

`alignkit.config.load_plan` reads the file (the one loader); then every shape trains through `train_recipe_file`:

- **plain**: one recipe. With `launch.num_processes > 1` (or a `launch.config_file`) and not already under a
  launcher, `accelerate launch ... -m alignkit train RECIPE` re-runs it in that many processes
  (`launch_command`); otherwise `alignkit.engine.run.train` trains it in this process and prints its summary.
- **staged**: each stage's resolved recipe is written beside its model (`<stage>/stage_recipe.yaml`) and trained
  like a plain recipe; a complete stage is skipped, an interrupted one resumed (`alignkit.engine.stages`).
- **online**: `alignkit.engine.rounds` samples and judges each round, and each round's recipe
  (`round-<r>/round_recipe.yaml`) trains like a plain recipe.

The command line calls these functions and never the other way round: a launched process is a new
`python -m alignkit train` of a recipe file, not a call back into the command line's code.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from alignkit.config import Recipe, RecipeKind, RecipePlan, ResolvedStage, load_plan, recipe_to_yaml
from alignkit.engine.stages import mark_stage_complete, stage_status
from alignkit.errors import AlignkitError

log = logging.getLogger("alignkit")
LAUNCHED_ENV = "ALIGNKIT_LAUNCHED"
# Variables set by accelerate/torchrun for the processes they start.
LAUNCHER_ENVS = ("LOCAL_RANK", "WORLD_SIZE", "ACCELERATE_USE_DEEPSPEED", LAUNCHED_ENV)


class RunError(AlignkitError):
    """Training a round in launched processes failed; rerunning the same command resumes it."""


@dataclass
class RunOutcome:
    """What `run_recipe` did."""

    kind: RecipeKind
    exit_code: int = 0  # non-zero when a launched training process failed
    summary: Any = None  # plain, trained in this process: the `TrainSummary`
    stages: list[ResolvedStage] = field(default_factory=list)  # staged: every stage, in order
    rounds: list[dict[str, Any]] = field(default_factory=list)  # online: one summary per round


def launched() -> bool:
    """Whether this process was started by a launcher (accelerate, torchrun, or this orchestrator)."""
    return any(k in os.environ for k in LAUNCHER_ENVS)


def launch_command(recipe_path: str, recipe: Recipe, extra: Sequence[str]) -> list[str]:
    """The `accelerate launch` command that re-runs this training under the recipe's launch settings."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if recipe.launch.config_file:
        cmd += ["--config_file", recipe.launch.config_file]
    elif recipe.launch.num_processes > 1:
        cmd += ["--multi_gpu"]  # `--cpu --num_processes N` silently runs one process; gloo is picked on CPU
    cmd += ["--num_processes", str(recipe.launch.num_processes), "--num_machines", str(recipe.launch.num_machines)]
    if recipe.launch.machine_rank is not None:
        cmd += ["--machine_rank", str(recipe.launch.machine_rank)]
    if recipe.launch.main_process_ip:
        cmd += ["--main_process_ip", recipe.launch.main_process_ip]
    if recipe.launch.main_process_port:
        cmd += ["--main_process_port", str(recipe.launch.main_process_port)]
    cmd += [str(x) for x in recipe.launch.extra_args]
    return cmd + ["-m", "alignkit", "train", recipe_path, *extra]


def run_recipe(path: str | Path, overrides: Sequence[str] = (), resume: bool | str = False, launch: bool = True) -> RunOutcome:
    """Train a recipe file of any shape (see the module docstring). `resume`: continue from the last checkpoint
    (True) or a given one (plain recipes); `launch=False` trains in this process even if the recipe asks for several."""
    plan = load_plan(path, list(overrides))
    if plan.kind == "staged":
        return _run_stages(plan, launch)
    if plan.kind == "online":
        return _run_rounds(plan, launch)
    return _run_plain(plan, resume, launch)


def train_recipe_file(path: str | Path, overrides: Sequence[str] = (), resume: bool | str = False, launch: bool = True) -> RunOutcome:
    """Train one plain recipe file (a stage's or a round's recipe written beside its model, or the user's)."""
    return _run_plain(load_plan(path, list(overrides)), resume, launch)


def _run_plain(plan: RecipePlan, resume: bool | str, launch: bool) -> RunOutcome:
    recipe = plan.recipe
    assert recipe is not None
    if isinstance(resume, str):  # an explicit checkpoint must be complete: fail before any model loads
        from alignkit.engine.checkpoints import resolve_resume

        resolve_resume(recipe.training.output_dir, resume, bool((recipe.training.model_extra or {}).get("save_only_model")))
    if (recipe.launch.num_processes > 1 or recipe.launch.config_file) and not launched() and launch:
        extra = [x for o in plan.overrides for x in ("--set", o)]
        if resume:
            extra += ["--resume"] + ([resume] if isinstance(resume, str) else [])
        cmd = launch_command(str(plan.path), recipe, extra)
        log.info("launching: %s", " ".join(cmd))
        return RunOutcome("plain", exit_code=subprocess.call(cmd, env={**os.environ, LAUNCHED_ENV: "1"}))
    from alignkit.distributed import shutdown
    from alignkit.engine.run import print_summary, train

    summary = train(recipe, resume=resume)
    shutdown()
    if int(os.environ.get("RANK", "0")) == 0:
        print_summary(summary)
    return RunOutcome("plain", summary=summary)


def _write_beside(folder: Path, name: str, recipe: Recipe) -> Path:
    """The resolved recipe, written into the folder its model trains in (so a launched process can read it)."""
    folder.mkdir(parents=True, exist_ok=True)
    recipe_file = folder / name
    recipe_file.write_text(recipe_to_yaml(recipe))
    return recipe_file


def _run_stages(plan: RecipePlan, launch: bool) -> RunOutcome:
    """Each stage's recipe is written beside its model and trained like any recipe; a complete stage is skipped,
    an interrupted one resumed."""
    stages = plan.stages
    for i, stage in enumerate(stages, 1):
        status = stage_status(stage)
        if status == "complete":
            log.info("stage %d/%d %s: complete (%s), skipped", i, len(stages), stage.name, stage.output)
            continue
        if status == "changed":
            log.warning("stage %d/%d %s: %s was trained by a different recipe; training again", i, len(stages), stage.name, stage.output)
        log.info("stage %d/%d %s: %s", i, len(stages), stage.name, "resuming" if status == "interrupted" else "training")
        recipe_file = _write_beside(stage.output.parent, "stage_recipe.yaml", stage.recipe)
        code = train_recipe_file(recipe_file, resume=status == "interrupted", launch=launch).exit_code
        if code != 0:
            log.error("stage %s failed (exit %d); rerun the same command to resume it", stage.name, code)
            return RunOutcome("staged", exit_code=code, stages=stages)
        mark_stage_complete(stage)
    return RunOutcome("staged", stages=stages)


def _run_rounds(plan: RecipePlan, launch: bool) -> RunOutcome:
    """Sample, judge and train, round after round (`alignkit.engine.rounds`); each round trains like any recipe."""
    from alignkit.engine.rounds import run_rounds

    def train_round(recipe: Recipe, resume: bool) -> None:
        recipe_file = _write_beside(Path(recipe.training.output_dir), "round_recipe.yaml", recipe)
        code = train_recipe_file(recipe_file, resume=resume, launch=launch).exit_code
        if code:
            raise RunError(f"round training failed (exit {code}); rerun the same command to resume it")

    return RunOutcome("online", rounds=run_rounds(plan.path, plan.overrides, train_round, plan=plan))


def prepare_recipe(path: str | Path, overrides: Sequence[str] = ()) -> str:
    """Compute (or find cached) every signal a recipe file of any shape needs, without training; what it did, as text.
    A stage or round whose inputs an earlier one trains waits for it (it is prepared when the recipe trains)."""
    from alignkit.engine.run import prepare

    plan = load_plan(path, list(overrides))
    if plan.kind == "online":
        from alignkit.engine.rounds import prepare_rounds

        return "\n".join(prepare_rounds(plan))
    if plan.kind == "plain":
        assert plan.recipe is not None
        return prepare(plan.recipe)
    lines, pending = [], []
    for stage in plan.stages:
        needs = [p for p in pending if p in recipe_to_yaml(stage.recipe)]
        if needs:  # its inputs are an earlier stage's model, which does not exist yet
            lines.append(f"stage {stage.name}: waits for {', '.join(needs)} (prepared when the staged recipe trains)")
        else:
            lines.append(f"stage {stage.name}:\n{prepare(stage.recipe)}")
        if not (stage.output / "model.safetensors").is_file():
            pending.append(str(stage.output))
    return "\n".join(lines)
