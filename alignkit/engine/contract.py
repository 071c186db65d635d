"""The method contract: what a training method gives the engine, and what the engine gives back.

A method module (under `alignkit/trainers/`, or any importable module a recipe names as `method:`) defines
`Args` (a pydantic model validating `method_args`), a pure loss function, and `Method(args, tokenizer, data)`, a
subclass of `AlignMethod` (in practice of `alignkit.engine.method.CompletionMethod`, which implements the
tokenisation, batching and signal access every method shares). The engine knows a method only through this
class: it never names a method and never reads a method setting by name.

The hooks, in the order the engine calls them (`alignkit.engine.run.build`, then `train`):

| hook | when | receives | returns | may not |
|---|---|---|---|---|
| `record_type` (class) | before loading data | | the record kind it trains on (`alignkit.data.records`) | |
| `signals(recipe)` | once, after the records load | the validated `Recipe` | the frozen `Signal`s it needs (`alignkit.engine.signals`) | load a model, sample, score or write anything: it only declares |
| `select_records(records)` | once, before signals are computed | the train records | the records to train on (a seeded selection) | touch models |
| `build_example(record)` | per record, after record-level signals (samples, rewards) are in `self.signal_values` | one record | a dict of token-id lists (keys ending `_ids`) and a `length` | load models |
| `link_examples(examples, recipe)` | once for the train and once for the eval examples, before example-level signals | all examples in data order | nothing (adds fields in place) | load models |
| `sequences(example)` | by a `TokenTopK` signal | one example | `{completion name: (prompt ids, completion ids)}` | |
| `setup(recipe)` | once in `train`, after every signal is computed and before the trainer is built (so a model it loads is not sharded by ZeRO-3); never in `prepare` | the recipe | nothing | train anything |
| `training_callbacks(recipe)` | once, when the trainer is built | the recipe | `transformers.TrainerCallback`s | |
| `collate(examples)` | per batch, in the data loader | the batch's examples | a batch dict (tensors, plus any values `rollout` reads) | load models |
| `rollout(model, batch, context)` | per batch, before the loss (training and evaluation) | the policy, the batch, a `RolloutContext` | the batch to score (on-policy methods sample here); default: the batch unchanged | |
| `sequence_outputs(model, batch)` | per batch, for the policy and for every live `SequenceLogps` signal | a model and a batch | per-sequence tensors | keep state between calls |
| `loss(outputs, reference)` | per batch | `sequence_outputs` of the policy; every `SequenceLogps` key (precomputed or live) | `(loss, {metric: per-example tensor [B]})`, NaN where a metric does not apply | |
| `log_scalars()` | at every training log | | method-level running figures (e.g. seconds spent sampling) | |
| `record_from_judgment(...)` (static) | online rounds (`alignkit.engine.rounds`): per judged sample | prompt, response, positive, judgment | the method's record as a dict | |
| `report_sections` (class) | `alignkit report` | | `ReportSection`s: the method's own page sections (`alignkit.engine.report`) | |

Optional class attributes: `model_kind` (`causal_lm`, or `sequence_classifier` for a reward model),
`trainer_class` (a `transformers.Trainer` subclass taking `AlignTrainer`'s arguments; default `AlignTrainer`),
`supports_shared_prompts` (the method reads only summed completion log-probs, so `data.share_prompts` works).
See `docs/architecture.md` for a worked example.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import torch

from alignkit.config import Recipe


@dataclass
class RolloutContext:
    """What an on-policy `rollout` may need from the trainer."""

    step: int  # the optimizer step
    accelerator: Any  # the trainer's `accelerate.Accelerator` (None outside a trainer)
    training: bool  # False during evaluation
    trainer: Any  # the `AlignTrainer`


@dataclass(frozen=True)
class ReportSection:
    """A method's own section of `alignkit report`: files of one kind rendered as HTML.

    `key` is the kind (`alignkit report --<key> FILE` adds a file); `patterns` are globs found in every run
    folder; `render(path)` returns the HTML of one file (`alignkit.engine.report` has the table and plot helpers)."""

    key: str
    title: str
    patterns: tuple[str, ...]
    render: Callable[[Path], str]


class AlignMethod(abc.ABC):
    """The contract between a training method and the engine (see the module docstring for every hook)."""

    record_type: ClassVar[type] = object
    model_kind: ClassVar[str] = "causal_lm"
    trainer_class: ClassVar[type | None] = None
    supports_shared_prompts: ClassVar[bool] = False
    report_sections: ClassVar[tuple[ReportSection, ...]] = ()
    signal_values: dict[str, Any]  # filled by the engine before `build_example`: signal name -> samples, rewards, a TopKStore

    # -- declarations (no side effects) ---------------------------------------------------------------------------

    def signals(self, recipe: Recipe) -> list[Any]:
        """The frozen signals this method needs (none by default). A declaration: load, sample or write nothing."""
        return []

    # -- data -------------------------------------------------------------------------------------------------------

    def select_records(self, records: list[Any]) -> list[Any]:
        """Records to train on (all of them by default)."""
        return records

    @abc.abstractmethod
    def build_example(self, record: Any) -> dict[str, Any]:
        """One record as token-id lists (keys ending `_ids`) and a `length`."""

    def link_examples(self, examples: list[dict[str, Any]], recipe: Recipe) -> None:
        """Add fields that depend on other examples (nothing by default)."""

    def sequences(self, example: dict[str, Any]) -> dict[str, tuple[list[int], list[int]]]:
        """The example's named (prompt ids, completion ids) sequences, for `TokenTopK` signals."""
        raise NotImplementedError(f"{type(self).__module__} declares a TokenTopK signal but defines no sequences(example)")

    @staticmethod
    def record_from_judgment(prompt: Any, response: str, positive: bool, judgment: str | None) -> dict[str, Any]:
        """A judged sample as this method's record (methods that train online in rounds define it)."""
        raise NotImplementedError("this method cannot train on judged samples (it defines no record_from_judgment)")

    # -- before training --------------------------------------------------------------------------------------------

    def setup(self, recipe: Recipe) -> None:
        """Load what the training loop needs (scorers, samplers); called once by `train`, never by `prepare`."""

    def training_callbacks(self, recipe: Recipe) -> list[Any]:
        """TrainerCallbacks this method adds to training (none by default)."""
        return []

    # -- each batch -------------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        """The batch of `examples`."""

    def rollout(self, model: Any, batch: dict[str, Any], context: RolloutContext) -> dict[str, Any]:
        """The batch to score; on-policy methods sample from the current `model` here (default: `batch` unchanged)."""
        return batch

    @abc.abstractmethod
    def sequence_outputs(self, model: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per-sequence tensors of `model` on the batch (the policy's, or a frozen model's for a live signal)."""

    @abc.abstractmethod
    def loss(self, outputs: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The batch's loss and per-example metrics [B]."""

    def log_scalars(self) -> dict[str, float]:
        """Method-level running figures added to each training log (none by default)."""
        return {}


def defines(method_class: type, hook: str) -> bool:
    """Whether a method class implements an optional hook itself (rather than inheriting the contract's default)."""
    return getattr(method_class, hook, None) is not getattr(AlignMethod, hook, None)


def report_sections_of(method_classes: Sequence[type]) -> dict[str, ReportSection]:
    """The report sections the given method classes declare, by key (the first declaration of a key wins)."""
    out: dict[str, ReportSection] = {}
    for cls in method_classes:
        for section in getattr(cls, "report_sections", ()):
            out.setdefault(section.key, section)
    return out
