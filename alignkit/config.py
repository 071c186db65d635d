"""Typed recipe schema: YAML loading, `--set a.b=c` overrides, and errors that name file and key.

A recipe is one YAML file with the sections `method`, `model`, `data`, `training`, `method_args`
and `launch`. Everything is validated before any model is loaded: an unknown key, a wrong type or
a missing file raises `RecipeError` naming the recipe file and the dotted key.

Relative paths in a recipe (data files, local model folders, launch and DeepSpeed configs,
`output_dir`) are resolved against the current working directory, as in TRL and accelerate.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import importlib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator

from alignkit.errors import AlignkitError
from alignkit.data.sources import DataSource, check_source, parse_source

TINY_MODEL_PREFIX = "tiny:"

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
SAVED_RECIPE = "alignkit_recipe.yaml"  # written beside every checkpoint alignkit saves
RUN_SUMMARY = "run_summary.json"  # written into training.output_dir when training ends (read by export and report)


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


class RecipeError(AlignkitError, ValueError):
    """A recipe is malformed; the message names the file and the dotted key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraSettings(_Strict):
    """PEFT LoRA adapter settings."""

    r: int = Field(16, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    bias: Literal["none", "all", "lora_only"] = "none"


class QuantizationSettings(_Strict):
    """bitsandbytes 4/8-bit loading of the base model (QLoRA when combined with `lora`)."""

    bits: Literal[4, 8]
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"


class ModelSettings(_Strict):
    """Which model to train and how to load it."""

    path: str = Field(description="local folder, hub id, or tiny:<size> for a locally built tiny model")
    revision: str | None = None
    tokenizer: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2", "flex_attention"] | None = None
    quantization: QuantizationSettings | None = None
    lora: LoraSettings | None = None
    trust_remote_code: bool = False
    chat_template: str | None = Field(None, description="a Jinja chat template (text, or a .jinja file) replacing the "
                                      "tokenizer's own: e.g. a base model without one, or a recipe's official template; "
                                      "saved with the checkpoint's tokenizer")
    device: str | None = Field(None, description="where a frozen copy of this model runs (reference, teacher, sampler, "
                               "judge, reward model), e.g. cuda:1 or cpu; default: the process's accelerator "
                               "(alignkit.modeling.loading.frozen_placement). The policy is placed by the trainer")


class DataSettings(_Strict):
    """Training/eval sources and how records become token sequences.

    A source is a data file, a dataset repository (`hf:ORG/NAME[:CONFIG][@REVISION][/SPLIT]`, or a mapping with
    `path`, `config`, `split`, `revision`, `data_dir`, `columns`) and may carry a `weight` or `max_records` to mix
    several sources (see `alignkit.data.sources` and docs/datasets.md)."""

    train: list[str | DataSource] = Field(description="training sources (files, hf: datasets, or mappings); several are concatenated or mixed")
    eval: list[str | DataSource] = Field(default_factory=list, description="evaluation sources; an hf: dataset's split defaults to test")
    format: str = "preference"
    template: str = Field("chat", description="chat, alpaca, pku, raw, or a format string with {prompt} (see alignkit.data.templates)")
    max_length: int = Field(1024, gt=0)
    max_prompt_length: int = Field(512, gt=0)
    skip_invalid: bool = False
    packing: bool = Field(False, description="padding-free batches: sequences end to end, in rows of at most max_length tokens (sdpa, eager), or one row (flash-attention varlen)")
    share_prompts: bool = Field(False, description="compute a prompt shared by several sequences once (DPO's chosen and "
                                "rejected, D2O's K + 1): a 4D attention mask per prompt group (sdpa, eager)")

    @field_validator("train", "eval", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, dict)) else value

    @field_validator("train", "eval")
    @classmethod
    def _resolve_sources(cls, value: list[str | DataSource], info: ValidationInfo) -> list[str | DataSource]:
        # hf: short forms become mappings (config, revision, split as fields), so `recipes show` prints what loads.
        return [parse_source(v, "train" if info.field_name == "train" else "test") for v in value]

    @field_validator("template")
    @classmethod
    def _known_template(cls, value: str) -> str:
        from alignkit.data.templates import check_template

        return check_template(value)

    @field_validator("max_prompt_length")
    @classmethod
    def _room_for_completion(cls, value: int, info: ValidationInfo) -> int:
        # Checked here, not when the first batch is built after the tokenizer (and data) loaded.
        max_length = info.data.get("max_length")
        if max_length is not None and value >= max_length:
            raise ValueError(f"must be smaller than data.max_length ({max_length}) to leave room for the completion")
        return value

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        from alignkit.data.adapters import ADAPTERS

        if value not in ADAPTERS:
            raise ValueError(f"unknown data format {value!r}; known: {', '.join(sorted(ADAPTERS))}")
        return value


class TrainingSettings(BaseModel):
    """Arguments for `transformers.TrainingArguments`.

    Common keys are typed here; any other key must be a `TrainingArguments` field (checked when the
    recipe is loaded). Warmup is given in steps, never as a ratio, so short runs stay faithful.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    output_dir: str = "runs/alignkit"
    learning_rate: float = Field(1e-5, gt=0)
    lr_scheduler_type: str = "linear"
    warmup_steps: int = Field(0, ge=0)
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = -1
    per_device_train_batch_size: int = Field(8, gt=0)
    per_device_eval_batch_size: int = Field(8, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = 1.0
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    deepspeed: str | None = None
    seed: int = 42
    logging_steps: int = Field(10, gt=0)
    save_strategy: Literal["no", "steps", "epoch", "best"] = "steps"
    save_steps: int = Field(500, gt=0)
    save_total_limit: int | None = 2
    eval_strategy: Literal["no", "steps", "epoch"] = "no"
    eval_steps: int | None = None
    report_to: str | list[str] = "none"
    optim: str = "adamw_torch"

    @field_validator("save_strategy", "eval_strategy", mode="before")
    @classmethod
    def _unquoted_no(cls, value: Any) -> Any:
        """YAML 1.1 reads an unquoted `no` (in a recipe or `--set save_strategy=no`) as false; it means "no"."""
        return "no" if value is False else value


class LaunchSettings(_Strict):
    """How `alignkit train` starts: in-process for one process, else through `accelerate launch`."""

    config_file: str | None = None
    num_processes: int = Field(1, gt=0)
    num_machines: int = Field(1, gt=0)
    machine_rank: int | None = Field(None, ge=0, description="this machine's rank in a multi-node launch (0 = the main one)")
    main_process_ip: str | None = Field(None, description="the main machine's address in a multi-node launch")
    main_process_port: int | None = None
    extra_args: list[str] = Field(default_factory=list)


class GenerationEvalSettings(_Strict):
    """The optional `eval:` section: evaluation by sampling during training, for any method (the engine adds a
    callback; see docs/tracking.md). Every `generate_every` optimizer steps the current policy samples the eval
    prompts, a scorer scores them, and the win rate against the reference policy's samples (drawn once, cached)
    is logged with its standard error, plus a table of samples (TensorBoard text and a JSONL file per evaluation)."""

    generate_every: int = Field(gt=0, description="optimizer steps between evaluations (one also runs before the first step)")
    scorer: Literal["reward-model", "gold", "judge"] = Field(description="reward-model (a sequence classifier), gold (the "
                                                             "gym's gold reward) or judge (a pointwise LLM judge)")
    scorer_model: str | None = Field(None, description="the reward model folder, or the judge's model folder or endpoint URL")
    scorer_template: str | None = Field(None, description="the template the scorer reads prompts with (default: data.template)")
    scorer_options: dict[str, Any] = Field(default_factory=dict, description="reward model options, e.g. {trust_remote_code: "
                                           "true, output: score} for ArmoRM (alignkit.scoring.reward_model.OPTIONS)")
    prompts: int = Field(32, gt=0, description="how many distinct eval prompts (data.eval, else data.train) are sampled")
    num_samples: int = Field(2, gt=0, description="policy samples per prompt at each evaluation")
    reference_samples: int = Field(8, gt=0, description="reference-policy samples per prompt, drawn once and cached")
    reference_model: str | None = Field(None, description="the reference policy (default: the policy's initial weights)")
    procedure: Literal["standard", "bon", "won"] = Field("standard", description="the win rate of one sample (standard), "
                                                        "or of the best (bon) / worst (won) of n, both sides alike")
    n: int = Field(1, gt=0, description="N of best-/worst-of-N (at most num_samples)")
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(128, gt=0)
    seed: int = Field(0, description="sampling seed, the same at every evaluation so the policy is what changes")
    backend: Literal["auto", "hf", "vllm"] = Field("auto", description="policy sampler: HF generate on the policy, or vLLM "
                                                   "with weight sync (auto: vLLM where it is faster)")
    engine_args: dict[str, Any] = Field(default_factory=dict, description="extra vLLM engine arguments")
    table_rows: int = Field(8, ge=0, description="rows of the samples table logged at each evaluation")

    @field_validator("n")
    @classmethod
    def _enough_samples(cls, value: int, info: ValidationInfo) -> int:
        samples = info.data.get("num_samples")
        if samples is not None and value > samples and info.data.get("procedure") != "standard":
            raise ValueError(f"best-/worst-of-{value} needs num_samples >= {value} (got {samples}): the U-statistic draws N-subsets")
        return value

    @field_validator("scorer_model", mode="after")
    @classmethod
    def _model_for_scorer(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("scorer") in ("reward-model", "judge"):
            raise ValueError(f"scorer {info.data['scorer']} needs scorer_model (a model folder, or an endpoint URL for a judge)")
        return value

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class Recipe(_Strict):
    """One runnable experiment."""

    method: str
    model: ModelSettings
    data: DataSettings
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    method_args: dict[str, Any] = Field(default_factory=dict)
    launch: LaunchSettings = Field(default_factory=LaunchSettings)
    eval: GenerationEvalSettings | None = Field(None, description="evaluation by sampling during training (optional)")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in METHODS:
            module = method_module(value)
            if not all(hasattr(module, name) for name in ("Args", "Method")):
                raise ValueError(f"module {value!r} does not define a method (it needs Args and Method)")
        return value

    def method_settings(self) -> BaseModel:
        """The validated `method_args` as the method's own settings object."""
        return method_args_model(self.method).model_validate(self.method_args)


def method_args_model(method: str) -> type[BaseModel]:
    """The pydantic model that validates `method_args` for `method`."""
    return method_module(method).Args


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


# --------------------------------------------------------------------------------------------
# loading


def load_recipe(path: str | Path, overrides: list[str] | None = None, check_files: bool = True,
                notes: list[str] | None = None) -> Recipe:
    """Read a YAML recipe, apply `a.b=value` overrides, validate it and check that files exist (with `notes`, what
    cannot be checked offline is noted there instead of failing; see `check_recipe_files`)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping with keys method, model, data, ...")
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


# --------------------------------------------------------------------------------------------
# staged recipes


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


def top_level_keys(path: str | Path) -> set[str]:
    """The top-level keys of a YAML mapping file (empty when it is unreadable or not a mapping)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return set()
    return set(raw) if isinstance(raw, dict) else set()


def is_staged(path: str | Path) -> bool:
    """Whether a YAML file is a staged recipe (a mapping with `stages`)."""
    return "stages" in top_level_keys(path)


def load_staged(path: str | Path, overrides: list[str] | None = None, check_files: bool = True,
                notes: list[str] | None = None) -> list[ResolvedStage]:
    """Validate every stage of a staged recipe, resolving `${stage}` (in `set` values and inline recipes) to
    that stage's final model folder.

    `--set KEY=VALUE` overrides apply to every stage; `--set STAGE.KEY=VALUE` to one stage only."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text())
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
