"""The process group as alignkit sees it, on GPUs and on CPU-only machines, and "main computes, the
others wait, everyone reads the same file" for work done once per machine.

Without CUDA, accelerate gives a multi-process launch no backend and then reports a single process:
DDP runs N identical copies on the same data, and DeepSpeed ZeRO-3 fails its batch-size check. Creating
the state here with gloo (and handing it to `TrainingArguments` through `use_configured_state`) gives
the true world size, a `DistributedSampler`, and DDP's gradient all-reduce.
"""

from __future__ import annotations

import os
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def world_size_from_env() -> int:
    """The number of processes the launcher started (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def uses_deepspeed() -> bool:
    """True when accelerate launched this process with DeepSpeed."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def cpu_multiprocess() -> bool:
    """True in a multi-process launch (DDP or DeepSpeed) on a machine without CUDA."""
    import torch

    return world_size_from_env() > 1 and not torch.cuda.is_available()


def distributed_state() -> Any:
    """The accelerate `PartialState`, created once with the right backend for this machine."""
    from accelerate import PartialState

    if cpu_multiprocess():
        # DeepSpeed keeps its own distributed type; plain data parallel on CPU is accelerate's MULTI_CPU.
        return PartialState(backend="gloo") if uses_deepspeed() else PartialState(cpu=True, backend="gloo")
    return PartialState()


def main_process_first(load: Callable[[], T | None], compute: Callable[[], T]) -> tuple[T, bool]:
    """(value, computed): the local main process `load()`s, or on a miss runs `compute()` (which must also
    store its result), while the others wait at a barrier; then they `load()` what it stored.

    Every process reaches the barrier exactly once, whatever it would have found in the cache, so a fast
    main process can never leave another waiting alone."""
    state = distributed_state()
    value, computed = None, False
    if state.is_local_main_process:
        value = load()
        if value is None:
            value, computed = compute(), True
    if state.num_processes > 1:
        state.wait_for_everyone()
    if value is None:
        value = load()
        if value is None:
            raise RuntimeError("the main process computed a cached value that this process cannot read; is the cache "
                               "folder (ALIGNKIT_CACHE) shared by the processes of this machine?")
    return value, computed


def shutdown() -> None:
    """End the process group cleanly once a launched run is done: every process waits for the others, then the
    group is destroyed. A process that exits with a live gloo group can abort in its threads' destructors at
    interpreter exit ("terminate called without an active exception") and fail a run that had finished."""
    import torch.distributed as dist

    # Only a launched process owns its group: in-process callers (tests, notebooks) may hold one that an
    # in-process vLLM engine created and still uses.
    if world_size_from_env() > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
