"""Rounds recipes: online training, round after round (sample from the current policy, judge each response, train
on the judged samples, continue from the result). The `online:` section is validated here; the rounds run in
`alignkit.engine.rounds` (see its docstring for the file layout and an example)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alignkit.config.loading import RecipeError, apply_override, read_mapping, top_level_keys


class JudgeSettings(BaseModel):
    """Who judges each sampled response."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["gold", "critic"] = Field(description="gold: the gym's gold judgment; critic: a model that writes judgments")
    model: str | None = Field(None, description="critic model folder, or an OpenAI-compatible endpoint URL")
    template: str | None = Field(None, description="critic prompt template: a built-in name (critic: the gym critic's; "
                                 "critic_cut: the CUT paper's, 'perfect' when nothing is wrong) or a file; default critic")
    backend: str = Field("auto", description="backend for a local critic model: auto, hf or vllm")
    max_tokens: int = Field(64, ge=1, description="the critic's decoding length (greedy)")
    model_name: str | None = Field(None, description="the served model name at an endpoint (default: the server's)")
    api_key: str | None = Field(None, description="the endpoint's API key")


class OnlineSettings(BaseModel):
    """The `online:` section of a rounds recipe."""

    model_config = ConfigDict(extra="forbid")
    recipe: str
    rounds: int = Field(ge=1)
    prompts: str
    prompts_per_round: int = Field(ge=1)
    samples_per_prompt: int = Field(1, ge=1)
    sampling: dict[str, Any] = Field(default_factory=lambda: {"temperature": 1.0, "max_tokens": 128})
    judge: JudgeSettings
    output_dir: str
    seed: int = 0
    set: dict[str, Any] = Field(default_factory=dict, description="overrides of the method recipe for every round")


def is_online(path: str | Path) -> bool:
    """Whether a YAML file is a rounds recipe (a mapping with `online`)."""
    return "online" in top_level_keys(path)


def load_online(path: str | Path, overrides: list[str] | None = None) -> tuple[OnlineSettings, list[str]]:
    """Validate a rounds recipe: the settings and the overrides of the method recipe for every round
    (`online.set` values, then `--set KEY=VALUE`; `--set online.KEY=VALUE` overrides the rounds settings)."""
    raw = read_mapping(path, "a rounds recipe must be a mapping with the key online")
    extra = []
    for item in overrides or []:
        if item.startswith("online."):
            apply_override(raw, item, path)
        else:
            extra.append(item)
    try:
        settings = OnlineSettings.model_validate(raw["online"])
    except ValidationError as err:
        raise RecipeError(f"{path}: online: {err}") from None
    # YAML values keep their type through the override text ("no" stays a string, not false)
    items = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix(chr(10) + '...')}" for k, v in settings.set.items()]
    for field, value in (("online.recipe", settings.recipe), ("online.prompts", settings.prompts)):
        if not Path(value).is_file():
            raise RecipeError(f"{path}: {field}: file not found: {value}")
    if settings.judge.kind == "critic" and not settings.judge.model:
        raise RecipeError(f"{path}: online.judge.model is required for a critic judge")
    return settings, items + extra
