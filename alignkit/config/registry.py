"""The method registry: `method:` names and the modules that define them, loaded lazily by name.

This is the one module in alignkit that imports a module by name (`importlib`): methods are plugins found by
name, so `config` can validate `method_args` with the method's `Args` and the engine can build its `Method`
without either importing `alignkit.trainers` (a higher layer) statically. `tests/test_layering.py` refuses an
`importlib` load anywhere else.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel

# `method:` names -> the module defining the method (Args, loss, Method). A recipe may also name any
# importable module path (`method: mypackage.my_method`) that defines the same three things. Methods are
# plugins found by name: the engine and this file import them dynamically, never statically.
METHODS: dict[str, str] = {
    "adpa": "alignkit.trainers.adpa",
    "ctrl": "alignkit.trainers.ctrl",
    "cut": "alignkit.trainers.cut",
    "d2o": "alignkit.trainers.d2o",
    "dckd": "alignkit.trainers.dckd",
    "dpo": "alignkit.trainers.dpo",
    "kto": "alignkit.trainers.kto",
    "orpo": "alignkit.trainers.orpo",
    "reward": "alignkit.trainers.reward",
    "sft": "alignkit.trainers.sft",
    "simpo": "alignkit.trainers.simpo",
}


def method_module(method: str) -> Any:
    """The module of a method by registered name or import path."""
    path = METHODS.get(method, method)
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as err:
        if method not in METHODS and err.name and path.startswith(err.name):
            raise ValueError(f"unknown method {method!r}; known: {', '.join(sorted(METHODS))}, or an importable module "
                             "path defining Args and Method") from None
        raise


def method_names() -> list[str]:
    """The registered `method:` names, sorted."""
    return sorted(METHODS)


def method_args_model(method: str) -> type[BaseModel]:
    """The pydantic model that validates `method_args` for `method`."""
    return method_module(method).Args
