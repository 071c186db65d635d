"""Counting every model a run loads, and failing any reference computation (for methods that must need none)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator


@contextlib.contextmanager
def count_model_loads(monkeypatch: Any) -> Iterator[list[str]]:
    """Yield the list of model paths loaded through `transformers.PreTrainedModel.from_pretrained` (whatever the
    caller: the engine, a signal, a scorer); reference log-probs computed by any route fail the run."""
    from transformers import PreTrainedModel

    import alignkit.engine.signals as signals
    import alignkit.engine.trainer as trainer

    loads: list[str] = []
    original = PreTrainedModel.from_pretrained.__func__

    def counted(cls: type, path: Any, *args: Any, **kwargs: Any) -> Any:
        loads.append(str(path))
        return original(cls, path, *args, **kwargs)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a reference signal was computed")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(counted))
    monkeypatch.setattr(signals, "compute_sequence_logps", refuse)
    monkeypatch.setattr(trainer.AlignTrainer, "_prepare_ref_model", refuse)
    yield loads


def assert_trains_with_the_policy_alone(recipe_path: str, tmp_path: Any, monkeypatch: Any) -> None:
    """Two steps of a recipe (small batch, the sample pairs as eval set) load exactly one model, the policy, and
    compute no reference."""
    from alignkit.config import load_recipe
    from alignkit.engine.run import train

    recipe = load_recipe(recipe_path, [f"training.output_dir={tmp_path}", "training.max_steps=2",
                                       "training.per_device_train_batch_size=4", "data.eval=data/samples/preference.jsonl"])
    with count_model_loads(monkeypatch) as loads:
        summary = train(recipe)
    assert loads == [recipe.model.path]  # the policy, once; no reference, no frozen copy
    assert summary.reference == "none (the method needs no frozen model)" and summary.steps == 2
