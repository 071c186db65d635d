"""Stages of a multi-step run (a staged recipe's stages, an online recipe's rounds): whether a stage's model is
already trained by exactly its recipe, so a rerun skips it, resumes it, or trains it again."""

from __future__ import annotations

import json
from typing import Any

STAGE_MARKER = "stage.json"


def stage_status(stage: Any) -> str:
    """`complete` (its model is saved by this exact recipe), `interrupted` (checkpoints to resume from),
    `changed` (a model from a different recipe is there: train again) or `new`."""
    out = stage.output.parent
    marker = out / STAGE_MARKER
    if (stage.output / "model.safetensors").is_file() and marker.is_file():
        try:
            done = json.loads(marker.read_text()).get("recipe") == stage_key(stage.recipe)
        except ValueError:
            done = False
        return "complete" if done else "changed"
    return "interrupted" if any(out.glob("checkpoint-*")) else "new"


def mark_stage_complete(stage: Any) -> None:
    """Record that the stage's model was trained by exactly its recipe (checked by `stage_status`)."""
    from alignkit.cache import write_text_atomic

    write_text_atomic(stage.output.parent / STAGE_MARKER, json.dumps({"stage": stage.name, "recipe": stage_key(stage.recipe)}))


def stage_key(recipe: Any) -> str:
    """The key a stage's marker records: the recipe's settings that differ from their defaults. A field a
    later alignkit version adds with a default (or a recipe spelling out a default) leaves it unchanged,
    so an upgrade does not retrain finished stages."""
    from alignkit.cache import content_key

    return content_key(recipe.model_dump(mode="json", exclude_defaults=True))
