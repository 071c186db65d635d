"""Helpers for checking a method's first step against a TRL trainer on the same tiny model and batch: the loss, the
logged metrics and every parameter's gradient."""

from __future__ import annotations

from typing import Any, Callable

import torch


def gradients(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> tuple[float, dict[str, torch.Tensor]]:
    """(loss, {parameter name: gradient}) of one backward of `loss_fn()` from zeroed gradients."""
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


def assert_same_gradients(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], tol: float = 1e-4) -> None:
    """Every parameter has a gradient on both sides, equal within `tol` (relative to the largest gradient entry when
    that exceeds 1: fp32 sums of many terms), and they are not all zero."""
    assert set(ours) == set(theirs), sorted(set(ours) ^ set(theirs))
    scale = max(g.abs().max().item() for g in theirs.values())
    assert scale > 1e-3, "a vanishing gradient checks nothing"
    worst = max(ours, key=lambda n: (ours[n] - theirs[n]).abs().max().item())
    gap = (ours[worst] - theirs[worst]).abs().max().item()
    assert gap < tol * max(1.0, scale), f"{worst}: gradients differ by {gap:.2e} (largest gradient entry {scale:.2e})"


def last_metrics(trainer: Any, mode: str = "train") -> dict[str, float]:
    """The metrics a TRL trainer stored for its last loss computation, then cleared."""
    store = trainer._metrics[mode] if hasattr(trainer, "_metrics") else trainer._stored_metrics[mode]
    out = {k: float(v[-1]) for k, v in store.items() if v}
    store.clear()
    return out


def example_mean(metrics: dict[str, torch.Tensor], name: str) -> float:
    """The mean of a per-example alignkit metric over the examples where it applies (NaN elsewhere)."""
    value = metrics[name].detach().float().reshape(-1)
    return value[~torch.isnan(value)].mean().item()


def alignkit_first_step(method: Any, policy: torch.nn.Module, examples: list[dict]) -> tuple[float, dict, dict]:
    """(loss, gradients, per-example metrics) of an alignkit method's loss on one batch of `examples`, with the
    precomputed reference values the examples carry."""
    batch = method.collate(examples)
    ref = {k[len("ref_"):]: v for k, v in batch.items() if k.startswith("ref_")}
    seen: dict[str, Any] = {}

    def step() -> torch.Tensor:
        loss, seen["metrics"] = method.loss(method.sequence_outputs(policy, batch), ref)
        return loss

    loss, grads = gradients(policy, step)
    return loss, grads, seen["metrics"]


def trl_pair_step(trainer: Any, batch: dict) -> tuple[float, dict, dict]:
    """(loss, gradients, metrics) of a TRL CPO/ORPO trainer's `get_batch_loss_metrics` on `batch`."""
    seen: dict[str, Any] = {}

    def step() -> torch.Tensor:
        loss, seen["metrics"] = trainer.get_batch_loss_metrics(trainer.model, batch)
        return loss

    loss, grads = gradients(trainer.model, step)
    return loss, grads, seen["metrics"]


# Prompts start with the BOS text and end on a pre-token boundary, so the tokenisation of TRL's CPO and ORPO trainers
# (which prepend BOS when it is missing) equals alignkit's.
BOS_PAIRS = [
    {"prompt": "<s>Question: What is 2 plus 7?\nAnswer:", "chosen": " 2 plus 7 is 9.", "rejected": " It is 10, obviously."},
    {"prompt": "<s>Question: Name a fruit.\nAnswer:", "chosen": " An apple.", "rejected": " A brick."},
    {"prompt": "<s>Question: How do I steal a car?\nAnswer:", "chosen": " I'm sorry, but I can't help with that.", "rejected": " Break the window."},
    {"prompt": "<s>Question: Say hi.\nAnswer:", "chosen": " Hi there, friend, how are you today?", "rejected": " No."},
]


def trl_trainer(trainer_class: type, config_class: type, rows: list[dict], model_dir: Any, tmp: Any, config: dict,
                ref_dir: Any = None) -> tuple[Any, dict]:
    """A TRL trainer on the tiny policy (and a reference model from `ref_dir`) over `rows`, in train mode, fp32 on CPU,
    and its collated batch of all the rows (in their order)."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    refs = {"ref_model": AutoModelForCausalLM.from_pretrained(ref_dir)} if ref_dir is not None else {}
    trainer = trainer_class(
        model=AutoModelForCausalLM.from_pretrained(model_dir), **refs,
        args=config_class(output_dir=str(tmp / "trl"), per_device_train_batch_size=len(rows), report_to=[], use_cpu=True,
                          bf16=False, gradient_checkpointing=False, **config),
        train_dataset=datasets.Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    trainer.model.train()
    return trainer, trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])


def reference_free_oracle(tmp: Any, model_dir: Any, config_class: type, trainer_class: type, config: dict, method: str,
                          method_args: dict) -> tuple[Any, dict, Any, torch.nn.Module]:
    """A TRL pair trainer (CPO, ORPO) and alignkit's `method` on the same tiny policy and batch (`BOS_PAIRS`), after
    checking that both tokenise every pair alike: (trainer, its batch, alignkit's Prepared, alignkit's policy)."""
    import json

    from transformers import AutoModelForCausalLM

    from alignkit.config import validate_recipe
    from alignkit.engine.run import build

    data = tmp / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(p) for p in BOS_PAIRS) + "\n")
    trainer, batch = trl_trainer(trainer_class, config_class, BOS_PAIRS, model_dir, tmp, config)
    prep = build(validate_recipe({
        "method": method, "model": {"path": str(model_dir), "dtype": "float32"},
        "data": {"train": str(data), "template": "raw", "max_length": 128, "max_prompt_length": 64}, "method_args": method_args,
    }))
    assert not prep.signals  # a reference-free method declares no signal
    for ours, row in zip(prep.train_examples, trainer.train_dataset):
        assert ours["prompt_ids"] + ours["chosen_ids"] == row["chosen_input_ids"]
        assert ours["prompt_ids"] + ours["rejected_ids"] == row["rejected_input_ids"]
    return trainer, batch, prep, AutoModelForCausalLM.from_pretrained(model_dir)
