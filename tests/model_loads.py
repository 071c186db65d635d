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
