"""`AlignTrainer`: a `transformers.Trainer` that runs any alignkit method.

A method supplies `collate`, `sequence_outputs(model, batch)` and a pure `loss(outputs, ref)`. The
engine supplies the reference signals by one of three routes and keeps metrics:

- `precompute`: reference values were computed before training and ride in the batch as `ref_*`;
- `model`: a separate frozen reference model runs under `no_grad`;
- `adapter`: the policy itself with its LoRA adapter disabled.

Metrics are per-example tensors [B] (NaN where a metric does not apply to an example, so shapes match
across processes). They are summed over every micro-batch since the last log and reduced across
processes before averaging, so they are correct under gradient accumulation and data parallelism.
Eval metrics are gathered per batch with `gather_for_metrics`, which drops the samples accelerate
duplicates to even out the last batch, so they equal a single-process evaluation.
"""

from __future__ import annotations

import collections
from typing import Any

import torch
from transformers import Trainer


class AlignTrainer(Trainer):
    """Trainer for alignkit methods (no TRL private hooks are used or overridden)."""

    def __init__(self, *args: Any, method: Any, reference: str = "precompute", ref_model: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("data_collator", method.collate)
        super().__init__(*args, **kwargs)
        self.method = method
        self.reference_route = reference
        self.ref_model = ref_model
        # The loss is a per-batch mean; let the Trainer divide it by the accumulation steps.
        self.loss_is_scaled_for_ga = False
        self._metric_sums: dict[str, dict[str, torch.Tensor]] = {"train": {}, "eval": {}}
        self._metric_counts: dict[str, collections.Counter] = {"train": collections.Counter(), "eval": collections.Counter()}
        if reference == "model" and ref_model is None:
            raise ValueError("reference route 'model' needs a ref_model")
        if ref_model is not None:
            self.ref_model = self._prepare_ref_model(ref_model)

    def _prepare_ref_model(self, ref_model: Any) -> Any:
        if self.is_deepspeed_enabled:
            from trl.models import prepare_deepspeed  # public export: shards the reference like the policy under ZeRO-3

            return prepare_deepspeed(ref_model, self.accelerator)
        return self.accelerator.prepare_model(ref_model, evaluation_mode=True)

    def reference_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Reference values for this batch by the configured route."""
        keys = self.method.reference_keys
        if not keys:  # the method uses no reference (SFT, CUT)
            return {}
        if self.reference_route == "precompute":
            missing = [k for k in keys if f"ref_{k}" not in batch]
            if missing:
                raise KeyError(f"batch lacks precomputed reference values {missing}; run `alignkit prepare` first")
            return {k: batch[f"ref_{k}"] for k in keys}
        with torch.no_grad():
            if self.reference_route == "adapter":
                unwrapped = self.accelerator.unwrap_model(model)
                if not hasattr(unwrapped, "disable_adapter"):
                    raise ValueError("reference route 'adapter' needs a LoRA (PEFT) policy; set model.lora or use another route")
                with unwrapped.disable_adapter():
                    out = self.method.sequence_outputs(model, batch)
            else:
                out = self.method.sequence_outputs(self.ref_model, batch)
        return {k: out[k].detach() for k in keys}

    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        """The method's loss on this batch; per-example metrics are accumulated for logging."""
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
        super().log(logs, start_time)

