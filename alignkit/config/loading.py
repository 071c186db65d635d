"""Reading a recipe: YAML, `--set a.b=c` overrides, validation, and file checks, with errors that name the
file and the dotted key (`RecipeError`).

Everything is validated before any model is loaded: an unknown key, a wrong type or a missing file raises
`RecipeError` naming the recipe file and the dotted key. Relative paths in a recipe (data files, local model
folders, launch and DeepSpeed configs, `output_dir`) are resolved against the current working directory, as in
TRL and accelerate.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from alignkit.config.registry import method_args_model
from alignkit.config.schema import SAVED_RECIPE, TINY_MODEL_PREFIX, Recipe, TrainingSettings
from alignkit.data.source_spec import DataSource, check_source
from alignkit.errors import AlignkitError


class RecipeError(AlignkitError, ValueError):
    """A recipe is malformed; the message names the file and the dotted key."""


def read_mapping(path: str | Path, what: str = "a recipe must be a mapping with keys method, model, data, ...") -> dict[str, Any]:
    """A YAML file's top-level mapping; a missing file, invalid YAML or a non-mapping is a `RecipeError` naming the file.
    Every recipe shape (plain, staged, online) and the P-Aligner synthesis config is read through this."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: {what}")
    return raw


@functools.lru_cache(maxsize=1)
def training_argument_names() -> frozenset[str]:
    """Field names of `transformers.TrainingArguments` (imported lazily: it costs seconds)."""
    from transformers import TrainingArguments

    return frozenset(f.name for f in dataclasses.fields(TrainingArguments) if f.init)


@functools.lru_cache(maxsize=1)
def _training_argument_hints() -> dict[str, Any]:
    import typing

    from transformers import TrainingArguments

    return typing.get_type_hints(TrainingArguments)  # resolves string annotations


def training_argument_type_hint(name: str) -> Any:
    """The resolved type annotation of one `TrainingArguments` field."""
    return _training_argument_hints()[name]


@functools.lru_cache(maxsize=None)
def training_argument_type(name: str) -> TypeAdapter:
    """A validator for one `TrainingArguments` field, from its resolved type annotation."""
    return TypeAdapter(training_argument_type_hint(name))


def _type_name(hint: Any) -> str:
    """`float`, `int | None`, `dict | str`: a type annotation as a user reads it."""
    args = getattr(hint, "__args__", None)
    if args and getattr(hint, "__origin__", None) is not list:
        return " | ".join(_type_name(a) for a in args)
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _check_training_extra(training: TrainingSettings) -> list[str]:
    """Problems with the extra `training.*` keys: unknown names, or values of the wrong type.

    A wrong type would otherwise pass validation and fail deep inside the Trainer after the model
    loaded (e.g. `adam_beta1: "zero"` as a TypeError in the optimizer).
    """
    extra = training.model_extra or {}
    known = training_argument_names() if extra else frozenset()
    problems = []
    for key in sorted(extra):
        if key not in known:
            hint = _did_you_mean(key, set(TrainingSettings.model_fields) | known)
            problems.append(f"training.{key}: unknown key{hint}; training keys are transformers.TrainingArguments fields")
            continue
        value = extra[key]
        try:
            checked = training_argument_type(key).validate_python(value)
        except ValidationError as err:
            hint = _type_name(training_argument_type_hint(key))
            problems.append(f"training.{key}: expected {hint} (transformers.TrainingArguments.{key}), got {value!r}: "
                            f"{err.errors()[0]['msg']}")
            continue
        if isinstance(checked, (bool, int, float)) and type(checked) is not type(value):  # "1e-3" -> 1e-3
            extra[key] = checked
    return problems



def top_level_keys(path: str | Path) -> set[str]:
    """The top-level keys of a YAML mapping file (empty when it is unreadable or not a mapping)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return set()
    return set(raw) if isinstance(raw, dict) else set()


def load_recipe(path: str | Path, overrides: list[str] | None = None, check_files: bool = True,
                notes: list[str] | None = None) -> Recipe:
    """Read a YAML recipe, apply `a.b=value` overrides, validate it and check that files exist (with `notes`, what
    cannot be checked offline is noted there instead of failing; see `check_recipe_files`)."""
    path = Path(path)
    raw = read_mapping(path)
    for item in overrides or []:
        apply_override(raw, item, path)
    recipe = validate_recipe(raw, path)
    if check_files:
        check_recipe_files(recipe, path, notes=notes)
    return recipe


def apply_override(raw: dict[str, Any], item: str, source: Path | str = "--set") -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (numbers, bools, lists)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"{source}: --set expects KEY=VALUE with a dotted key, got {item!r}")
    parts = key.strip().split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"{source}: --set {key}: {'.'.join(parts[: depth + 1])} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        node[parts[-1]] = text


def validate_recipe(raw: dict[str, Any], source: Path | str = "<recipe>") -> Recipe:
    """Validate a recipe mapping; errors name `source` and the dotted key of every problem."""
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as err:
        raise RecipeError(_format_errors(err, source, root=Recipe)) from None
    problems = _check_training_extra(recipe.training)
    try:
        settings = recipe.method_settings()
        recipe.method_args = settings.model_dump()
        if (recipe.training.model_extra or {}).get("ddp_find_unused_parameters") and getattr(settings, "logprob_chunk_size", None):
            problems.append("training.ddp_find_unused_parameters: true cannot work with the chunked LM head (it runs after "
                            "the wrapped forward, so DDP would mark it unused and then see its gradient); set "
                            "method_args.logprob_chunk_size: null to use the model's own logits instead")
    except ValidationError as err:
        problems.append(_format_errors(err, None, root=method_args_model(recipe.method), prefix="method_args"))
    if problems:
        raise RecipeError("\n".join(f"{source}: {p}" for p in problems))
    return recipe


def check_recipe_files(recipe: Recipe, source: Path | str = "<recipe>", pending: frozenset[str] = frozenset(),
                       notes: list[str] | None = None) -> None:
    """Fail early when a file, model or dataset the recipe names is missing (`pending`: paths an earlier stage will
    write). With a `notes` list (`alignkit recipes show`), what cannot be checked offline (a hub model or dataset
    with no cached copy while the hub is offline) is added there instead of failing."""
    missing = []
    for field, entries in (("data.train", recipe.data.train), ("data.eval", recipe.data.eval)):
        for i, entry in enumerate(entries):
            if isinstance(entry, str) and entry in pending:
                continue
            problem, note = check_source(entry)
            if problem and not isinstance(entry, DataSource) and problem.startswith("file not found"):
                problem += f" (relative paths resolve against {Path.cwd()})"
            if problem:
                missing.append(f"{field}[{i}]: {problem}")
            elif note and notes is not None:
                notes.append(f"{source}: {field}[{i}]: {note}")
    for field, value in (("launch.config_file", recipe.launch.config_file), ("training.deepspeed", recipe.training.deepspeed)):
        if value and not Path(value).is_file():
            missing.append(f"{field}: file not found: {value}")
    blocked = _not_a_folder(Path(recipe.training.output_dir).expanduser())
    if blocked is not None:
        missing.append(f"training.output_dir: {blocked} exists and is not a folder; checkpoints need a folder at {recipe.training.output_dir}")
    model_path = recipe.model.path
    if model_path.startswith(TINY_MODEL_PREFIX):
        from alignkit.gym.shapes import SIZES

        size = model_path[len(TINY_MODEL_PREFIX):]
        if size not in SIZES:
            missing.append(f"model.path: unknown tiny model size {size!r}; known: {', '.join(SIZES)}")
    elif model_path not in pending:
        for field, value in (("model.path", model_path), ("model.tokenizer", recipe.model.tokenizer)):
            problem = model_source_problem(value, recipe.model.revision) if value and not value.startswith(TINY_MODEL_PREFIX) else None
            if problem and notes is not None and problem.endswith(OFFLINE_UNCACHED):
                notes.append(f"{source}: {field}: {value!r} is a hub model, not checked: the hub is offline (HF_HUB_OFFLINE) "
                             "and has no cached copy; `alignkit train` needs hub access or a local copy")
            elif problem:
                missing.append(f"{field}: {problem}")
    if missing:
        raise RecipeError("\n".join(f"{source}: {m}" for m in missing))



def saved_recipe(model_path: str | Path) -> dict[str, Any] | None:
    """The resolved recipe alignkit saved with a model it trained (None for other models)."""
    path = Path(model_path) / SAVED_RECIPE
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text())


def _not_a_folder(path: Path) -> Path | None:
    """The first existing path among `path` and its parents, when it is not a folder (else None)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def hub_offline() -> bool:
    """True when the Hugging Face Hub must not be contacted (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def model_source_problem(path: str, revision: str | None = None) -> str | None:
    """Why `path` cannot be a model: a missing local folder, an invalid hub id, or a hub id with no
    cached copy while the hub is offline. None when it may load (a reachable hub id is found out at load)."""
    if _looks_local(path):
        return None if Path(path).expanduser().is_dir() else f"model folder not found: {path}"
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(path)
    except HFValidationError:
        return f"{path!r} is neither a local folder nor a valid hub id (org/name)"
    if hub_offline() and not isinstance(try_to_load_from_cache(path, "config.json", revision=revision), str):
        return f"{path!r} is not a local folder, and the hub is offline (HF_HUB_OFFLINE) with no cached copy of it; {OFFLINE_UNCACHED}"
    return None


OFFLINE_UNCACHED = "download it first or give a local folder"  # ends the problem `model_source_problem` reports offline


def recipe_to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe (defaults filled in) as YAML."""
    # An absent `eval:` section is left out, so recipes (and the stage keys hashed from them) read as before it existed.
    return yaml.safe_dump(recipe.model_dump(mode="json", exclude={"eval"} if recipe.eval is None else None), sort_keys=False)


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or Path(path).exists() or path.count("/") > 1


def _did_you_mean(key: str, candidates: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(candidates), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fields_at(root: type[BaseModel], loc: tuple[Any, ...]) -> set[str]:
    """The field names of the section that `loc` (minus its last element) points into."""
    model: Any = root
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return set()
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return set()
    return set(getattr(model, "model_fields", {}))


def _format_errors(err: ValidationError, source: Path | str | None, root: type[BaseModel], prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal["))))
        dotted = ".".join(str(p) for p in ((prefix,) if prefix else ()) + loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            msg = "unknown key" + _did_you_mean(str(loc[-1]), _fields_at(root, loc))
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = f"{e['msg']} (got {e.get('input')!r})"
        lines.append(f"{source}: {dotted}: {msg}" if source is not None else f"{dotted}: {msg}")
    return "\n".join(dict.fromkeys(lines))

