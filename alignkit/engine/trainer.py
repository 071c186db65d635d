"""`AlignTrainer`: a `transformers.Trainer` that runs any alignkit method.

A method supplies `collate`, `sequence_outputs(model, batch)` and a pure `loss(outputs, reference)`.
The engine supplies the reference values of each `SequenceLogps` signal by its route:

- `precompute`: computed before training, they ride in the batch as `ref_<key>`;
- `model`: a frozen model runs under `no_grad` (prepared like the policy: sharded under ZeRO-3);
- `adapter`: the policy itself with its LoRA adapter disabled.

Every batch goes through the method's `rollout(model, batch, context)` before the loss (training and
evaluation), with a `RolloutContext` (the global step, the accelerator, whether the model trains); on-policy
methods return the batch to score there, e.g. completions sampled from the current policy through a
`PolicySampler` and their rewards (the contract's default returns the batch unchanged).

Metrics are per-example tensors [B] (NaN where a metric does not apply to an example, so shapes match
across processes). They are summed over every micro-batch since the last log and reduced across
processes before averaging, so they are correct under gradient accumulation and data parallelism.
Eval metrics are gathered per batch with `gather_for_metrics`, which drops the samples accelerate
duplicates to even out the last batch, so they equal a single-process evaluation.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from transformers import Trainer

from alignkit.engine.contract import AlignMethod, RolloutContext


@dataclass
class LiveReference:
    """Reference values computed during training: `keys` of `sequence_outputs` under `model` (or the
    adapter-disabled policy when `model` is None)."""

    keys: tuple[str, ...]
    model: Any = None


class AlignTrainer(Trainer):
    """Trainer for alignkit methods (no TRL private hooks are used or overridden)."""

    def __init__(self, *args: Any, method: AlignMethod, live_references: Sequence[LiveReference] = (), **kwargs: Any) -> None:
        kwargs.setdefault("data_collator", method.collate)
        super().__init__(*args, **kwargs)
        self.method = method
        # The loss is a per-batch mean; let the Trainer divide it by the accumulation steps.
        self.loss_is_scaled_for_ga = False
        self._metric_sums: dict[str, dict[str, torch.Tensor]] = {"train": {}, "eval": {}}
        self._metric_counts: dict[str, collections.Counter] = {"train": collections.Counter(), "eval": collections.Counter()}
        self.live_references = [LiveReference(r.keys, self._prepare_ref_model(r.model) if r.model is not None else None)
                                for r in live_references]

    def _prepare_ref_model(self, ref_model: Any) -> Any:
        if self.is_deepspeed_enabled:
            from trl.models import prepare_deepspeed  # public export: shards the reference like the policy under ZeRO-3

            return prepare_deepspeed(ref_model, self.accelerator)
        return self.accelerator.prepare_model(ref_model, evaluation_mode=True)

    def reference_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every reference value of this batch: precomputed ones from the batch, live ones computed now."""
        ref = {k[len("ref_"):]: v for k, v in batch.items() if k.startswith("ref_")}
        for live in self.live_references:
            with torch.no_grad():
                if live.model is not None:
                    out = self.method.sequence_outputs(live.model, batch)
                else:
                    unwrapped = self.accelerator.unwrap_model(model)
                    if not hasattr(unwrapped, "disable_adapter"):
                        raise ValueError("reference route 'adapter' needs a LoRA (PEFT) policy; set model.lora or use another route")
                    with unwrapped.disable_adapter():
                        out = self.method.sequence_outputs(model, batch)
            ref.update({k: out[k].detach() for k in live.keys})
        return ref

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        """The method's loss on this batch; per-example metrics are accumulated for logging."""
        inputs = self.method.rollout(model, inputs, RolloutContext(self.state.global_step, self.accelerator, model.training, self))
        ref = self.reference_outputs(model, inputs)
        out = self.method.sequence_outputs(model, inputs)
        loss, metrics = self.method.loss(out, ref)
        self._record(metrics, "train" if model.training else "eval")
        return (loss, metrics) if return_outputs else loss

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: Any = None) -> Any:
        """Evaluation: loss and metrics only (no logits are gathered)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def _record(self, metrics: dict[str, torch.Tensor], mode: str) -> None:
        sums, counts = self._metric_sums[mode], self._metric_counts[mode]
        for name, value in metrics.items():
            value = value.detach().float().reshape(-1)
            if mode == "eval":  # every process then holds the global values, without padding duplicates
                value = self.accelerator.gather_for_metrics(value)
            value = value[~torch.isnan(value)]
            sums[name] = sums.get(name, torch.zeros((), device=value.device)) + value.sum()
            counts[name] += value.numel()

    def _drain_metrics(self, mode: str) -> dict[str, float]:
        sums, counts = self._metric_sums[mode], self._metric_counts[mode]
        if not sums:
            return {}
        names = sorted(sums)
        device = sums[names[0]].device
        totals = torch.stack([sums[n] for n in names] + [torch.tensor(float(counts[n]), device=device) for n in names])
        if mode == "train":  # eval values were already gathered from every process
            totals = self.accelerator.reduce(totals, reduction="sum")
        k = len(names)
        sums.clear()
        counts.clear()
        return {n: (totals[i] / totals[k + i].clamp(min=1)).item() for i, n in enumerate(names)}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the averaged method metrics (train, or eval_-prefixed) to each log record.

        A method's per-example `loss` metric replaces the Trainer's mean of per-batch means, which
        uneven last batches and padding duplicates skew.
        """
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        metrics = self._drain_metrics(mode)
        logs.update({(f"eval_{n}" if mode == "eval" else n): v for n, v in metrics.items()})
        if mode == "train":  # method-level running figures (e.g. time spent sampling)
            logs.update(self.method.log_scalars())
        super().log(logs, start_time)
