"""Flags that stand for recipe keys, derived from the recipe's pydantic models (`alignkit.config.schema`).

A recipe-backed command takes any recipe key through `--set KEY=VALUE`; where it also has a flag for a key (the
shortcuts `alignkit generate` and `alignkit gym pretrain` kept), the flag's type, choices and help come from the
field it sets, so a flag cannot drift from the key it stands for. `recipe_flag(parser, "--template",
"data.template")` adds one.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

_UNSET: Any = object()


def recipe_field(key: str) -> FieldInfo:
    """The pydantic field of `Recipe` that a dotted key (`data.template`) names."""
    from alignkit.config.schema import Recipe

    model: type[BaseModel] = Recipe
    parts = key.split(".")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            raise KeyError(f"{key}: no recipe key {'.'.join(parts[: i + 1])}")
        if i == len(parts) - 1:
            return field
        model = next(a for a in (field.annotation, *typing.get_args(field.annotation)) if isinstance(a, type) and issubclass(a, BaseModel))
    raise KeyError(key)


def _flag_type(annotation: Any) -> tuple[Any, list[Any] | None]:
    """(argparse type, choices) of a field annotation: Optional unwrapped, a Literal's values as choices, a list
    or a union with models (a data source) read as one string."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        values = list(typing.get_args(annotation))
        return type(values[0]), values
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return _flag_type(args[0]) if len(args) == 1 else (str, None)
    if typing.get_origin(annotation) is list:
        return str, None
    return (annotation, None) if annotation in (str, int, float) else (str, None)


def recipe_flag(parser: argparse.ArgumentParser, flag: str, key: str, role: str = "", default: Any = _UNSET, **kwargs: Any) -> None:
    """Add `flag` for the recipe key `key`: type, choices and help from the key's field (`role` says what the value
    is for in this command); `default` (else the field's own) and further argparse keywords as given."""
    field = recipe_field(key)
    kind, choices = _flag_type(field.annotation)
    what = field.description or ""
    help_text = "; ".join(x for x in (role, what) if x) + f" (recipe key {key})"
    options: dict[str, Any] = {"type": kind, "help": help_text,
                               "default": field.get_default(call_default_factory=True) if default is _UNSET else default}
    if choices:
        options["choices"] = choices
    options.update(kwargs)
    parser.add_argument(flag, **options)
