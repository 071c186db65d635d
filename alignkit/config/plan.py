"""The one recipe loader: a recipe file of any shape (plain, staged or online rounds) read into a `RecipePlan`.

`alignkit train`, `alignkit prepare` and `alignkit recipes show` all start here, and the run orchestrator
(`alignkit.engine.orchestrator`) takes the plan from here to a trained model:

| shape | top-level keys | validated into |
|---|---|---|
| plain | `method`, `model`, `data`, ... | `plan.recipe` (`alignkit.config.schema.Recipe`) |
| staged | `stages`, `output_dir` | `plan.stages` (`alignkit.config.staged`), each with its recipe and model folder |
| online | `online` | `plan.online` (`alignkit.config.online`) and `plan.round_recipe`, the recipe each round trains |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from alignkit.config.loading import load_recipe, recipe_to_yaml, top_level_keys
from alignkit.config.online import OnlineSettings, load_online
from alignkit.config.schema import Recipe
from alignkit.config.staged import ResolvedStage, load_staged

RecipeKind = Literal["plain", "staged", "online"]


@dataclass
class RecipePlan:
    """A validated recipe file of any shape: what to train, in which order, with which overrides."""

    path: Path
    kind: RecipeKind
    overrides: list[str] = field(default_factory=list)  # the `--set KEY=VALUE` items the plan was loaded with
    recipe: Recipe | None = None  # plain
    stages: list[ResolvedStage] = field(default_factory=list)  # staged
    online: OnlineSettings | None = None  # online: the rounds settings
    round_overrides: list[str] = field(default_factory=list)  # online: overrides of the method recipe for every round
    round_recipe: Recipe | None = None  # online: the method recipe (model.path and data.train are set per round)
    notes: list[str] = field(default_factory=list)  # what could not be checked offline (hub models, datasets)


def recipe_kind(path: str | Path) -> RecipeKind:
    """A recipe file's shape, from its top-level keys."""
    keys = top_level_keys(path)
    return "staged" if "stages" in keys else "online" if "online" in keys else "plain"


def load_plan(path: str | Path, overrides: list[str] | None = None, check_files: bool = True,
              notes: list[str] | None = None) -> RecipePlan:
    """Validate a recipe file of any shape. `check_files`: that the files, models and datasets it names exist; with
    a `notes` list (`alignkit recipes show`), what cannot be checked offline is noted there (and in `plan.notes`)
    instead of failing."""
    overrides = list(overrides or [])
    plan = RecipePlan(Path(path), recipe_kind(path), overrides, notes=notes if notes is not None else [])
    if plan.kind == "staged":
        plan.stages = load_staged(path, overrides, check_files=check_files, notes=notes)
    elif plan.kind == "online":
        plan.online, plan.round_overrides = load_online(path, overrides)
        plan.round_recipe = load_recipe(plan.online.recipe, plan.round_overrides, check_files=False)
    else:
        plan.recipe = load_recipe(path, overrides, check_files=check_files, notes=notes)
    return plan


def describe_plan(plan: RecipePlan) -> str:
    """The plan fully resolved as YAML (`alignkit recipes show`), with what could not be checked as `# note:` lines."""
    if plan.kind == "online":
        assert plan.online is not None and plan.round_recipe is not None
        text = yaml.safe_dump({"online": plan.online.model_dump(mode="json")}, sort_keys=False)
        text += f"# the recipe each round trains ({plan.online.recipe}, data.train and model.path set per round)\n"
        return text + recipe_to_yaml(plan.round_recipe)
    if plan.kind == "staged":
        text = "".join(f"# stage {stage.name} -> {stage.output}\n{recipe_to_yaml(stage.recipe)}---\n" for stage in plan.stages)
    else:
        assert plan.recipe is not None
        text = recipe_to_yaml(plan.recipe)
    return text + "".join(f"# note: {note}\n" for note in plan.notes)
