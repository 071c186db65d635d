"""`prepare(recipe)` and `train(recipe)`: the one path from a validated recipe to a checkpoint.

recipe -> records -> record-level signals (samples, rewards) -> method examples -> example-level
signals (reference log-probs, teacher top-k) -> AlignTrainer (or the method's trainer class) ->
checkpoint, with a before/after evaluation and a summary table at the end.

The engine names no method and reads no method setting by name: it asks the method for its record
type, its signals and its trainer class, and hands each signal's values back to it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit.config import Recipe, RecipeError, method_module
from alignkit.data.records import stand_ins
from alignkit.data.sources import Mixture, load_sources
from alignkit.distributed import cpu_multiprocess, distributed_state
from alignkit.engine.contract import AlignMethod
from alignkit.engine.signals import Rewards, Samples, SequenceLogps, SignalReport, TokenTopK
from alignkit.engine.stages import STAGE_MARKER, mark_stage_complete, stage_key, stage_status  # noqa: F401  (re-exported)

log = logging.getLogger("alignkit")
PROBE_EXAMPLES = 64  # train examples used for before/after evaluation when the recipe has no eval set


@dataclass
class Prepared:
    """Everything built from a recipe before the policy is loaded."""

    recipe: Recipe
    method: AlignMethod
    tokenizer: Any
    train_examples: list[dict[str, Any]]
    eval_examples: list[dict[str, Any]]
    eval_name: str
    signals: list[Any] = field(default_factory=list)
    signal_report: SignalReport = field(default_factory=SignalReport)
    notes: list[str] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)  # the train records after the mixture and the method's selection
    eval_records: list[Any] = field(default_factory=list)
    data: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # records per source: {"train": [...], "eval": [...]}


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
    data: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # records per source (train, eval)


def _records_for(method: AlignMethod, entries: list[Any], recipe: Recipe, split: str) -> tuple[list[Any], Mixture]:
    mixture = load_sources(entries, recipe.data.format, skip_invalid=recipe.data.skip_invalid, seed=recipe.training.seed,
                           default_split=split)
    want = method.record_type
    records = []
    for record in mixture.records:  # sources may differ in format (a mixture), so convert record by record
        try:
            records.extend(stand_ins(record, want))
        except TypeError:
            raise ValueError(
                f"method {recipe.method!r} trains on {want.__name__} records, but data.format "
                f"{recipe.data.format!r} gives {type(record).__name__} records"
            ) from None
    return records, mixture


def load_method(recipe: Recipe, tokenizer: Any) -> AlignMethod:
    """The recipe's method object (its `Method` must implement the contract, `alignkit.engine.contract.AlignMethod`)."""
    cls = method_module(recipe.method).Method
    if not (isinstance(cls, type) and issubclass(cls, AlignMethod)):
        raise RecipeError(f"method {recipe.method!r}: its Method must subclass alignkit.engine.contract.AlignMethod "
                          "(e.g. through alignkit.engine.method.CompletionMethod)")
    method = cls(recipe.method_settings(), tokenizer, recipe.data)
    if "flash" not in (recipe.model.attn_implementation or ""):  # varlen flash-attention takes one packed row
        method.pack_width = recipe.data.max_length
    return method


def build(recipe: Recipe, compute_signals: bool = True) -> Prepared:
    """Load tokenizer, method and data; compute (or reuse) the method's signals; turn records into examples."""
    from alignkit.modeling.loading import load_tokenizer

    tokenizer = load_tokenizer(recipe.model)
    method = load_method(recipe, tokenizer)
    records, mixture = _records_for(method, recipe.data.train, recipe, "train")
    notes = [f"train data: {mixture.summary()}"]
    if len(records) != len(mixture.records):  # e.g. preference pairs split into unpaired halves
        notes.append(f"train data: {len(mixture.records)} records stand for {len(records)} {method.record_type.__name__} records")
    data = {"train": [s.to_json() for s in mixture.sources]}
    selected = method.select_records(records)
    if len(selected) != len(records):
        notes.append(f"train data: {recipe.method} kept {len(selected)} of {len(records)} records (the method's own selection)")
        records = selected
    eval_records: list[Any] = []
    if recipe.data.eval:
        eval_records, eval_mixture = _records_for(method, recipe.data.eval, recipe, "test")
        notes.append(f"eval data: {eval_mixture.summary()}")
        data["eval"] = [s.to_json() for s in eval_mixture.sources]
    signals = method.signals(recipe)
    prep = Prepared(recipe, method, tokenizer, [], [], "", signals, notes=notes, records=records, eval_records=eval_records,
                    data=data)
    if compute_signals:
        _record_signals(prep, records + eval_records)
    prep.train_examples = [method.build_example(r) for r in records]
    method.link_examples(prep.train_examples, recipe)
    if eval_records:
        prep.eval_examples, prep.eval_name = [method.build_example(r) for r in eval_records], "eval set"
        method.link_examples(prep.eval_examples, recipe)
    else:
        prep.eval_examples = prep.train_examples[:PROBE_EXAMPLES]
        prep.eval_name = f"first {len(prep.eval_examples)} train examples"
    tokenization = method.tokens.report()
    if tokenization:
        notes.append(f"tokenisation: {tokenization}")
    for i, ex in enumerate(_all_examples(prep)):
        ex["example_index"] = i
    if compute_signals:
        _example_signals(prep)
    return prep


def _all_examples(prep: Prepared) -> list[dict[str, Any]]:
    """Train then eval examples, each once (without an eval set the probe examples are train examples)."""
    if prep.eval_name == "eval set":
        return prep.train_examples + prep.eval_examples
    return prep.train_examples


def _record_signals(prep: Prepared, records: list[Any]) -> None:
    from alignkit.engine.signals import compute_rewards, compute_samples

    method, report = prep.method, prep.signal_report
    declared = {s.name: s for s in prep.signals if isinstance(s, Samples)}
    for signal in prep.signals:
        if isinstance(signal, Samples):
            method.signal_values[signal.name] = compute_samples(signal, records, prep.recipe, report)
        elif isinstance(signal, Rewards):
            if signal.samples not in method.signal_values:
                raise ValueError(f"Rewards signal {signal.name!r} scores samples {signal.samples!r}, which are not declared before it")
            method.signal_values[signal.name] = compute_rewards(signal, method.signal_values[signal.samples],
                                                                declared[signal.samples], report)


def _example_signals(prep: Prepared) -> None:
    from alignkit.engine.signals import compute_sequence_logps, compute_token_topk

    batch_size = prep.recipe.training.per_device_eval_batch_size
    examples = _all_examples(prep)
    for signal in prep.signals:
        if isinstance(signal, SequenceLogps) and signal.route == "precompute":
            compute_sequence_logps(signal, prep.method, examples, batch_size, prep.signal_report)
        elif isinstance(signal, TokenTopK):
            prep.method.signal_values[signal.name] = compute_token_topk(signal, prep.method, examples, batch_size, prep.signal_report)


def training_arguments(recipe: Recipe) -> Any:
    """`TrainingArguments` from the recipe's training section plus what the engine needs."""
    import torch
    from transformers import TrainingArguments

    values = recipe.training.model_dump()
    # eval_on_start: the "before" evaluation runs inside the training loop. Calling evaluate() before train()
    # would make transformers build a DeepSpeed inference engine, after which ZeRO-3 training fails.
    values.update(remove_unused_columns=False, length_column_name="length", label_names=[], eval_on_start=True)
    values.setdefault("dataloader_pin_memory", torch.cuda.is_available())
    # Every parameter gets its gradient in backward, the LM head's through the chunked head that runs after the
    # wrapped forward; DDP's unused-parameter search would wrongly mark an untied head unused.
    values.setdefault("ddp_find_unused_parameters", False)  # true is refused when the recipe is validated
    if cpu_multiprocess():  # gloo state for DDP and DeepSpeed without CUDA (see alignkit.distributed)
        distributed_state()
        values["accelerator_config"] = {**(values.get("accelerator_config") or {}), "use_configured_state": True}
    return TrainingArguments(**values)


def live_references(prep: Prepared) -> list[Any]:
    """The frozen models of the `SequenceLogps` signals computed live (route model), or the adapter route."""
    from alignkit.engine.trainer import LiveReference
    from alignkit.modeling.loading import load_causal_lm, placed_settings

    live = []
    for signal in prep.signals:
        if isinstance(signal, SequenceLogps) and signal.route != "precompute":
            # the frozen-model dtype rule; accelerate places it with the policy (sharded under ZeRO-3)
            model = load_causal_lm(placed_settings(signal.model), trainable=False) if signal.route == "model" else None
            live.append(LiveReference(signal.keys, model))
    return live


def _reference_note(prep: Prepared) -> str:
    """What the run's frozen signals were and whether they were computed or reused (the summary's `signals:` line)."""
    routes = [f"{', '.join(s.keys)}: live ({s.route})" for s in prep.signals if isinstance(s, SequenceLogps) and s.route != "precompute"]
    if not routes and not prep.signal_report.lines:
        return "none (the method needs no frozen model)"
    return "; ".join(prep.signal_report.lines + routes)


def train(recipe: Recipe, resume: bool | str = False) -> TrainSummary:
    """Train the recipe's method on its data; returns (and logs) a summary."""
    import datasets
    from transformers import set_seed

    from alignkit.engine.trainer import AlignTrainer
    from alignkit.modeling.loading import load_causal_lm

    set_seed(recipe.training.seed)
    prep = build(recipe)  # signals first: under ZeRO-3, models loaded after TrainingArguments are sharded
    reference = None
    if recipe.eval is not None:  # the reference policy's samples for evaluation by sampling, drawn once and cached
        from alignkit.engine.generation_eval import reference_samples

        reference = reference_samples(prep)
    prep.method.setup(recipe)  # what the training loop needs (scorers, samplers), before ZeRO-3 would shard it
    args = training_arguments(recipe)
    # Seeded again: whether `build` found its caches (a tiny model built, samples drawn) must not change a LoRA
    # adapter's random initialisation.
    set_seed(recipe.training.seed)
    model = load_causal_lm(recipe.model, trainable=True, gradient_checkpointing=recipe.training.gradient_checkpointing,
                           kind=prep.method.model_kind)
    trainer_class = prep.method.trainer_class or AlignTrainer
    trainer = trainer_class(
        model=model, args=args, method=prep.method, live_references=live_references(prep),
        train_dataset=datasets.Dataset.from_list(prep.train_examples),
        eval_dataset=datasets.Dataset.from_list(prep.eval_examples),
        processing_class=prep.tokenizer, callbacks=prep.method.training_callbacks(recipe),
    )
    generation_eval = None
    if reference is not None:
        from alignkit.engine.generation_eval import GenerationEvalCallback

        generation_eval = GenerationEvalCallback(trainer, recipe, reference)
        trainer.add_callback(generation_eval)
    t0 = time.perf_counter()
    from alignkit.engine.checkpoints import checkpoint_step, resolve_resume

    resume_arg = resolve_resume(recipe.training.output_dir, resume, bool(getattr(args, "save_only_model", False)))
    result = trainer.train(resume_from_checkpoint=resume_arg)
    seconds = time.perf_counter() - t0
    final = Path(recipe.training.output_dir) / "final"
    trainer.save_model(str(final))
    if trainer.is_world_process_zero():  # what trained it travels with the model (a later stage may read it)
        from alignkit.cache import write_text_atomic
        from alignkit.config import SAVED_RECIPE, recipe_to_yaml

        write_text_atomic(final / SAVED_RECIPE, recipe_to_yaml(recipe))
    after = strip_eval(trainer.evaluate())
    first_eval = next((h for h in trainer.state.log_history if "eval_loss" in h), {})
    if generation_eval is not None and generation_eval.last:
        g = generation_eval.last
        prep.notes.append(f"generation eval: {recipe.eval.procedure} win rate vs reference {g['eval_gen/win_rate']:.3f} ± "
                          f"{g['eval_gen/win_rate_se']:.3f} at the last step ({recipe.eval.scorer}; mean score "
                          f"{g['eval_gen/reward']:.3f} vs {g['eval_gen/reference_reward']:.3f}; samples in "
                          f"{generation_eval.out_dir})")
    summary = TrainSummary(
        method=recipe.method, model=recipe.model.path, train_examples=len(prep.train_examples),
        eval_examples=len(prep.eval_examples), eval_name=prep.eval_name, steps=result.global_step,
        seconds=seconds, before=strip_eval(first_eval), after=after, checkpoint=str(final),
        reference=_reference_note(prep), notes=prep.notes, start_step=checkpoint_step(resume_arg) if resume_arg else 0,
        data=prep.data,
    )
    if trainer.is_world_process_zero():
        write_run_summary(summary, recipe, trainer.state.log_history)
    return summary


def write_run_summary(summary: TrainSummary, recipe: Recipe, log_history: list[dict[str, Any]]) -> Path:
    """Persist what the run did (the summary, the resolved recipe and the whole log history) as
    `<output_dir>/run_summary.json`, which `alignkit export` and `alignkit report` read."""
    import dataclasses

    from alignkit.cache import write_text_atomic
    from alignkit.config import RUN_SUMMARY

    path = Path(recipe.training.output_dir) / RUN_SUMMARY
    value = {**dataclasses.asdict(summary), "recipe": recipe.model_dump(mode="json"), "log_history": log_history}
    write_text_atomic(path, json.dumps(value, indent=1, default=str) + "\n")
    return path


def strip_eval(metrics: dict[str, Any]) -> dict[str, float]:
    """Evaluation metrics without the `eval_` prefix and without timing entries."""
    skip = ("_runtime", "_per_second", "_preparation_time")
    return {k.removeprefix("eval_"): v for k, v in metrics.items() if k.startswith("eval_") and not k.endswith(skip)}


def prepare(recipe: Recipe) -> str:
    """Compute (or confirm cached) every signal a recipe's method needs, without training."""
    prep = build(recipe)
    if not prep.signals:
        return f"method {recipe.method!r} needs no frozen signals"
    live = [f"{', '.join(s.keys)}: computed live during training (route {s.route})"
            for s in prep.signals if isinstance(s, SequenceLogps) and s.route != "precompute"]
    return "\n".join(prep.signal_report.lines + live + [n for n in prep.notes if n.startswith("tokenisation")])


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
    mix = [f"{split} mix: " + ", ".join(f"{s['source']} {s['records']}" + (f" of {s['loaded']}" if s["loaded"] != s["records"] else "")
                                         for s in sources)
           for split, sources in summary.data.items() if len(sources) > 1]
    return mix + [
        f"model: {summary.model}",
        f"trained: {summary.train_examples} examples, {summary.steps - summary.start_step} optimizer steps this run "
        f"(total {summary.steps}) in {summary.seconds:.1f}s",
        f"signals: {summary.reference}",
        f"checkpoint: {summary.checkpoint}",
    ]


def print_summary(summary: TrainSummary) -> None:
    """The run's table, its notes and its facts on the console (what `alignkit train` shows when a run ends)."""
    from rich.console import Console

    console = Console(width=max(100, Console().width))
    console.print(format_summary(summary))
    for line in summary.notes + summary_lines(summary):
        console.print(line, highlight=False, soft_wrap=True)
