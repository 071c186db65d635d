"""Recipes: the typed schema, the one loader for every recipe shape, and the method registry.

A recipe is one YAML file with the sections `method`, `model`, `data`, `training`, `method_args`, `launch` and
an optional `eval`; a staged recipe (`stages:`) runs several in order and a rounds recipe (`online:`) trains
round after round on judged samples. Everything is validated before any model is loaded: an unknown key, a
wrong type or a missing file raises `RecipeError` naming the recipe file and the dotted key.

| module | holds |
|---|---|
| `alignkit.config.schema` | the sections and `Recipe` (pydantic models; their field descriptions document every key) |
| `alignkit.config.loading` | YAML reading, `--set a.b=c` overrides, validation, file checks, `RecipeError` |
| `alignkit.config.staged` | staged recipes (`${stage}` names an earlier stage's model) |
| `alignkit.config.online` | the `online:` section of a rounds recipe |
| `alignkit.config.plan` | `load_plan`: the one loader, any shape, into a `RecipePlan` |
| `alignkit.config.registry` | `METHODS` and `method_module`: methods by name, loaded lazily (the only `importlib` use) |

Everything is importable from `alignkit.config` itself.
"""

from alignkit.config.loading import (
    OFFLINE_UNCACHED, RecipeError, apply_override, check_recipe_files, hub_offline, load_recipe, model_source_problem,
    read_mapping, recipe_to_yaml, saved_recipe, top_level_keys, training_argument_names, training_argument_type,
    training_argument_type_hint, validate_recipe,
)
from alignkit.config.online import JudgeSettings, OnlineSettings, is_online, load_online
from alignkit.config.plan import RecipeKind, RecipePlan, describe_plan, load_plan, recipe_kind
from alignkit.config.registry import METHODS, method_args_model, method_module, method_names
from alignkit.config.schema import (
    RUN_SUMMARY, SAVED_RECIPE, TINY_MODEL_PREFIX, DataSettings, GenerationEvalSettings, LaunchSettings, LoraSettings,
    ModelSettings, QuantizationSettings, Recipe, TrainingSettings,
)
from alignkit.config.staged import ResolvedStage, Stage, StagedRecipe, is_staged, load_staged

__all__ = [
    "METHODS", "OFFLINE_UNCACHED", "RUN_SUMMARY", "SAVED_RECIPE", "TINY_MODEL_PREFIX", "DataSettings", "GenerationEvalSettings",
    "JudgeSettings", "LaunchSettings", "LoraSettings", "ModelSettings", "OnlineSettings", "QuantizationSettings", "Recipe",
    "RecipeError", "RecipeKind", "RecipePlan", "ResolvedStage", "Stage", "StagedRecipe", "TrainingSettings", "apply_override",
    "check_recipe_files", "describe_plan", "hub_offline", "is_online", "is_staged", "load_online", "load_plan", "load_recipe",
    "load_staged", "method_args_model", "method_module", "method_names", "model_source_problem", "read_mapping", "recipe_kind",
    "recipe_to_yaml", "saved_recipe", "top_level_keys", "training_argument_names", "training_argument_type",
    "training_argument_type_hint", "validate_recipe",
]
