"""Staged recipes: several recipes run in order, each stage's trained model feeding later ones (`${stage}`)."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from alignkit.config.loading import (
    RecipeError, _format_errors, apply_override, check_recipe_files, load_recipe, read_mapping, top_level_keys, validate_recipe,
)
from alignkit.config.schema import Recipe, _Strict


class Stage(_Strict):
    """One stage: a recipe file plus overrides; `${name}` in an override names an earlier stage's model."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    recipe: str | dict[str, Any] = Field(description="a recipe file, or a recipe written inline")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted overrides of the stage's recipe")


class StagedRecipe(_Strict):
    """Several recipes run in order, each stage's trained model feeding later ones (e.g. ADPA+: DCKD, then ADPA)."""

    stages: list[Stage] = Field(min_length=1)
    output_dir: str = Field(description="each stage trains into <output_dir>/<stage name> unless it sets training.output_dir")


@dataclasses.dataclass
class ResolvedStage:
    """A stage with its validated recipe and where its model will be."""

    name: str
    recipe: Recipe
    output: Path  # the stage's final model folder


def is_staged(path: str | Path) -> bool:
    """Whether a YAML file is a staged recipe (a mapping with `stages`)."""
    return "stages" in top_level_keys(path)


def load_staged(path: str | Path, overrides: list[str] | None = None, check_files: bool = True,
                notes: list[str] | None = None) -> list[ResolvedStage]:
    """Validate every stage of a staged recipe, resolving `${stage}` (in `set` values and inline recipes) to
    that stage's final model folder.

    `--set KEY=VALUE` overrides apply to every stage; `--set STAGE.KEY=VALUE` to one stage only."""
    path = Path(path)
    raw = read_mapping(path, "a staged recipe must be a mapping with keys stages and output_dir")
    try:
        staged = StagedRecipe.model_validate(raw)
    except ValidationError as err:
        raise RecipeError(_format_errors(err, path, root=StagedRecipe)) from None
    names = [s.name for s in staged.stages]
    if len(set(names)) != len(names):
        raise RecipeError(f"{path}: stage names must be unique, got {names}")
    reserved = set(Recipe.model_fields)
    if reserved & set(names):
        raise RecipeError(f"{path}: a stage may not be named like a recipe section ({sorted(reserved & set(names))})")
    outputs: dict[str, str] = {}
    resolved = []
    for stage in staged.stages:
        items = [f"training.output_dir={Path(staged.output_dir) / stage.name}"]
        for key, value in stage.set.items():
            items.append(f"{key}={_substitute(value, outputs, path, stage.name)}")
        for item in overrides or []:
            head, _, rest = item.partition(".")
            if head in names:
                if head == stage.name:
                    items.append(rest)
            else:
                items.append(item)
        if isinstance(stage.recipe, str):
            source = f"{path} (stage {stage.name}: {stage.recipe})"
            recipe = load_recipe(stage.recipe, items, check_files=False)
        else:
            source = f"{path} (stage {stage.name})"
            inline = _substitute_all(copy.deepcopy(stage.recipe), outputs, path, stage.name)
            for item in items:
                apply_override(inline, item, source)
            recipe = validate_recipe(inline, source)
        if check_files:
            check_recipe_files(recipe, source, pending=frozenset(outputs.values()), notes=notes)
        output = Path(recipe.training.output_dir) / "final"
        outputs[stage.name] = str(output)
        resolved.append(ResolvedStage(stage.name, recipe, output))
    return resolved


def _substitute_all(value: Any, outputs: dict[str, str], source: Path, stage: str) -> Any:
    """`value` with `${name}` replaced in every string it holds."""
    if isinstance(value, dict):
        return {k: _substitute_all(v, outputs, source, stage) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_all(v, outputs, source, stage) for v in value]
    return _substitute(value, outputs, source, stage) if isinstance(value, str) and "${" in value else value


def _substitute(value: Any, outputs: dict[str, str], source: Path, stage: str) -> str:
    """An override value as YAML text, `${name}` replaced by that earlier stage's model folder."""
    text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
    for ref in re.findall(r"\$\{([^}]*)\}", text):
        if ref not in outputs:
            raise RecipeError(f"{source}: stage {stage}: ${{{ref}}} names no earlier stage (earlier: {', '.join(outputs) or 'none'})")
        text = text.replace("${" + ref + "}", outputs[ref])
    return text

