"""The recipe schema: typed sections (`model`, `data`, `training`, `launch`, `eval`) and `Recipe`.

Every field validates on load (before any model loads); `alignkit.config.loading` reads YAML into these
models and names the file and dotted key of every problem. Field descriptions are the documentation of
each key (`alignkit recipes show` prints a recipe fully resolved; the command line derives its
recipe-key flags from these fields, see `alignkit.cli.flags`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from alignkit.config.registry import METHODS, method_args_model, method_module
from alignkit.data.source_spec import DataSource, parse_source

TINY_MODEL_PREFIX = "tiny:"
SAVED_RECIPE = "alignkit_recipe.yaml"  # written beside every checkpoint alignkit saves
RUN_SUMMARY = "run_summary.json"  # written into training.output_dir when training ends (read by export and report)


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
    format: str = Field("preference", description="the records' format (preference, sft, prompt, judgment, negative, ...: "
                        "alignkit.data.adapters); detected from the first row where a command allows it")
    template: str = Field("chat", description="chat, alpaca, pku, raw, urial, urial:PREFIX_FILE, or a format string with "
                          "{prompt} (see alignkit.data.templates)")
    max_length: int = Field(1024, gt=0, description="tokens of prompt plus completion kept")
    max_prompt_length: int = Field(512, gt=0, description="left-truncate prompts to this many tokens (the rule training, "
                                   "scoring and every generator apply)")
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

