"""`train(recipe)` and `prepare(recipe)`: the one path from a validated recipe to a checkpoint.

recipe -> records -> method examples -> cached reference signals -> AlignTrainer -> checkpoint,
with a before/after evaluation and a summary table at the end.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit.config import Recipe
from alignkit.data.loaders import load_records
from alignkit.data.records import NegativeOnly, to_negative
from alignkit.trainers import METHODS

log = logging.getLogger("alignkit")
PROBE_EXAMPLES = 64  # train examples used for before/after evaluation when the recipe has no eval set


@dataclass
class Prepared:
    """Everything built from a recipe before the policy is loaded."""

    recipe: Recipe
    method: Any
    tokenizer: Any
    train_examples: list[dict[str, Any]]
    eval_examples: list[dict[str, Any]]
    eval_name: str
    notes: list[str] = field(default_factory=list)


@dataclass
class TrainSummary:
    """What a training run did."""

    method: str
    model: str
    train_examples: int
    eval_examples: int
    eval_name: str
    steps: int
    seconds: float
    before: dict[str, float]
    after: dict[str, float]
    checkpoint: str
    reference: str
    notes: list[str]
    start_step: int = 0  # the resumed checkpoint's step (0 for a fresh run)


def _records_for(method: Any, paths: list[str], recipe: Recipe) -> tuple[list[Any], str]:
    result = load_records(paths, recipe.data.format, skip_invalid=recipe.data.skip_invalid)
    records = result.records
    want = method.record_type
    if records and not isinstance(records[0], want):
        if want is NegativeOnly:
            records = [to_negative(r) for r in records]
        else:
            raise ValueError(
                f"method {recipe.method!r} trains on {want.__name__} records, but data.format "
                f"{recipe.data.format!r} gives {type(records[0]).__name__} records"
            )
    return records, result.summary()


def build(recipe: Recipe) -> Prepared:
    """Load tokenizer, method and data, and turn records into token examples."""
    from alignkit.engine.model_loading import load_tokenizer

    tokenizer = load_tokenizer(recipe.model)
    module = importlib.import_module(METHODS[recipe.method])
    method = module.Method(recipe.method_settings(), tokenizer, recipe.data)
    records, note = _records_for(method, recipe.data.train, recipe)
    notes = [f"train data: {note}"]
    selected = method.select_records(records)
    if len(selected) != len(records):
        notes.append(f"train data: {recipe.method} kept {len(selected)} of {len(records)} records (method's selection, e.g. CUT's Align-P downsampling)")
        records = selected
    records = method.augment_records(records, recipe, "train")
    train_examples = [method.build_example(r) for r in records]
    if recipe.data.eval:
        eval_records, eval_note = _records_for(method, recipe.data.eval, recipe)
        notes.append(f"eval data: {eval_note}")
        eval_records = method.augment_records(eval_records, recipe, "eval")
        eval_examples, eval_name = [method.build_example(r) for r in eval_records], "eval set"
    else:
        eval_examples, eval_name = train_examples[:PROBE_EXAMPLES], f"first {min(PROBE_EXAMPLES, len(train_examples))} train examples"
    return Prepared(recipe, method, tokenizer, train_examples, eval_examples, eval_name, notes)


def deepspeed_on_cpu() -> bool:
    """True in a multi-process DeepSpeed launch on a machine without CUDA."""
    import os

    import torch

    launched = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    return launched and not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def distributed_state() -> Any:
    """The process group state, created once.

    accelerate gives DeepSpeed no backend when there is no CUDA and then reports a single process,
    although DeepSpeed runs several over gloo; ZeRO-3 on CPU then fails its batch-size check. Passing
    gloo explicitly here (and `use_configured_state` to TrainingArguments) gives the true world size.
    """
    from accelerate import PartialState

    return PartialState(backend="gloo") if deepspeed_on_cpu() else PartialState()


def ensure_reference(prep: Prepared) -> str:
    """Attach cached reference values to train/eval examples, computing and caching them on a miss.

    On a miss the local main process computes them with the frozen reference (the policy's initial
    weights unless `method_args.reference_model` names another model) while the others wait; every
    process then reads the same file. Returns a line for the summary.
    """
    from alignkit.config import ModelSettings
    from alignkit.engine.model_loading import load_causal_lm, model_fingerprint
    from alignkit.engine.reference import ReferenceLogprobCache, attach_reference, compute_reference

    method, recipe = prep.method, prep.recipe
    keys = method.reference_keys
    ref_settings = recipe.model
    if getattr(method.args, "reference_model", None):
        ref_settings = ModelSettings(path=method.args.reference_model, dtype=recipe.model.dtype)
    ref_settings = ref_settings.model_copy(update={"lora": None})
    cache = ReferenceLogprobCache()
    fingerprint = model_fingerprint(ref_settings)
    state = distributed_state()
    lines = []
    for name, examples in (("train", prep.train_examples), ("eval", prep.eval_examples)):
        key = cache.key(fingerprint, recipe.method, keys, examples)
        values = cache.load(key)
        if values is not None:
            lines.append(f"{name}: reused reference cache {cache.path(key)} (no reference forward)")
        else:
            if state.is_local_main_process:
                model = load_causal_lm(ref_settings, trainable=False)
                t0 = time.perf_counter()
                values = compute_reference(model, examples, method.collate, method.sequence_outputs, keys,
                                           batch_size=recipe.training.per_device_eval_batch_size)
                cache.save(key, values)
                lines.append(f"{name}: computed reference for {len(examples)} examples in {time.perf_counter() - t0:.1f}s -> {cache.path(key)}")
                del model
            state.wait_for_everyone()
            values = cache.load(key)
        attach_reference(examples, values)
    for line in lines:
        log.info("reference %s", line)
    return "; ".join(lines)


def training_arguments(recipe: Recipe) -> Any:
    """`TrainingArguments` from the recipe's training section plus what the engine needs."""
    from transformers import TrainingArguments

    import torch

    values = recipe.training.model_dump()
    # eval_on_start: the "before" evaluation runs inside the training loop. Calling evaluate() before train()
    # would make transformers build a DeepSpeed inference engine, after which ZeRO-3 training fails.
    values.update(remove_unused_columns=False, length_column_name="length", label_names=[], eval_on_start=True)
    values.setdefault("dataloader_pin_memory", torch.cuda.is_available())
    if deepspeed_on_cpu():
        distributed_state()
        values["accelerator_config"] = {**(values.get("accelerator_config") or {}), "use_configured_state": True}
    return TrainingArguments(**values)


def train(recipe: Recipe, resume: bool | str = False) -> TrainSummary:
    """Train the recipe's method on its data; returns (and logs) a summary."""
    import datasets
    from transformers import set_seed

    from alignkit.engine.model_loading import load_causal_lm
    from alignkit.engine.trainer import AlignTrainer

    set_seed(recipe.training.seed)
    prep = build(recipe)
    route = getattr(prep.method.args, "reference", None)
    reference_note = "none (method uses no reference)"
    if prep.method.reference_keys and route == "precompute":
        reference_note = ensure_reference(prep)
    elif route:
        reference_note = f"live ({route})"
    args = training_arguments(recipe)  # before loading: under ZeRO-3 this makes from_pretrained shard
    model = load_causal_lm(recipe.model, trainable=True, gradient_checkpointing=recipe.training.gradient_checkpointing)
    ref_model = None
    if route == "model":
        from alignkit.config import ModelSettings

        ref_path = prep.method.args.reference_model or recipe.model.path
        ref_model = load_causal_lm(ModelSettings(path=ref_path, dtype=recipe.model.dtype), trainable=False)
    trainer = AlignTrainer(
        model=model, args=args, method=prep.method, reference=route or "precompute", ref_model=ref_model,
        train_dataset=datasets.Dataset.from_list(prep.train_examples),
        eval_dataset=datasets.Dataset.from_list(prep.eval_examples),
        processing_class=prep.tokenizer, callbacks=prep.method.training_callbacks(recipe),
    )
    t0 = time.perf_counter()
    from alignkit.engine.checkpoints import checkpoint_step, resolve_resume

    resume_arg = resolve_resume(recipe.training.output_dir, resume, bool(getattr(args, "save_only_model", False)))
    result = trainer.train(resume_from_checkpoint=resume_arg)
    seconds = time.perf_counter() - t0
    final = Path(recipe.training.output_dir) / "final"
    trainer.save_model(str(final))
    after = _evaluate(trainer)
    first_eval = next((h for h in trainer.state.log_history if "eval_loss" in h), {})
    before = _strip_eval(first_eval)
    return TrainSummary(
        method=recipe.method, model=recipe.model.path, train_examples=len(prep.train_examples),
        eval_examples=len(prep.eval_examples), eval_name=prep.eval_name, steps=result.global_step,
        seconds=seconds, before=before, after=after, checkpoint=str(final), reference=reference_note, notes=prep.notes,
        start_step=checkpoint_step(resume_arg) if resume_arg else 0,
    )


def _evaluate(trainer: Any) -> dict[str, float]:
    return _strip_eval(trainer.evaluate())


def _strip_eval(metrics: dict[str, Any]) -> dict[str, float]:
    skip = ("_runtime", "_per_second", "_preparation_time")
    return {k.removeprefix("eval_"): v for k, v in metrics.items() if k.startswith("eval_") and not k.endswith(skip)}


def prepare(recipe: Recipe) -> str:
    """Compute (or confirm cached) reference signals for a recipe without training."""
    prep = build(recipe)
    if not prep.method.reference_keys:
        return f"method {recipe.method!r} needs no reference signals"
    return ensure_reference(prep)


def format_summary(summary: TrainSummary) -> Any:
    """A rich table of what the run did."""
    from rich.table import Table

    table = Table(title=f"alignkit {summary.method}: done", show_header=True)
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for key in sorted(set(summary.before) & set(summary.after)):
        table.add_row(key, f"{summary.before[key]:.4f}", f"{summary.after[key]:.4f}")
    table.caption = f"evaluated on {summary.eval_name} ({summary.eval_examples} examples)"
    return table


def summary_lines(summary: TrainSummary) -> list[str]:
    """The run's facts, one per line, printed under the table."""
    return [
        f"model: {summary.model}",
        f"trained: {summary.train_examples} examples, {summary.steps - summary.start_step} optimizer steps this run "
        f"(total {summary.steps}) in {summary.seconds:.1f}s",
        f"reference: {summary.reference}",
        f"checkpoint: {summary.checkpoint}",
    ]
