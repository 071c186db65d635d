"""Which checkpoint `--resume` continues from: the newest *complete* one.

transformers' Trainer writes a checkpoint file by file (weights, `optimizer.pt`, `scheduler.pt`,
`rng_state.pth`, `trainer_state.json` last) with no temp-folder rename, so a run killed while saving
leaves a `checkpoint-N` folder that looks like the latest but is not whole. Resuming from it either
crashes (no weights, no trainer state, a truncated safetensors file) or, worse, silently restarts
the optimizer and scheduler. A checkpoint is complete here when:

- `trainer_state.json` parses and has a `global_step`;
- the weights are there and whole: every safetensors file's header parses and the file size equals
  the header's last data offset (a sharded model: every shard its index names); `.bin`/`.pt` files
  are whole zip archives (what `torch.save` writes);
- unless only the model was saved (`save_only_model`), the optimizer (`optimizer.pt`/`optimizer.bin`),
  `scheduler.pt` and an `rng_state*.pth` are there. Under DeepSpeed the weights, the optimizer and
  (with a DeepSpeed scheduler) the scheduler live in a `global_step*` folder, which counts for all
  three when it exists.

`--resume` (no path) falls back to the newest complete checkpoint with a warning naming what the
newer ones lack, or starts from scratch with a warning when none is complete. `--resume PATH` with an
incomplete checkpoint is an error.
"""

from __future__ import annotations

import json
import logging
import re
import struct
import zipfile
from pathlib import Path

from alignkit.errors import AlignkitError

log = logging.getLogger("alignkit")

TRAINER_STATE = "trainer_state.json"
OPTIMIZER_FILES = ("optimizer.pt", "optimizer.bin")
SCHEDULER_FILE = "scheduler.pt"
SAFETENSORS_INDEX = "model.safetensors.index.json"
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "adapter_model.bin")
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(AlignkitError, ValueError):
    """A checkpoint given to `--resume` cannot be resumed from; the message says what is missing."""


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is not whole (unreadable header, or a size that disagrees with it), else None."""
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{path.name} is truncated ({size} bytes, no header)"
            (length,) = struct.unpack("<Q", head)
            if 8 + length > size:
                return f"{path.name} is truncated ({size} bytes, its header alone needs {8 + length})"
            header = json.loads(fh.read(length))
    except (OSError, ValueError) as err:
        return f"{path.name} has an unreadable header ({err})"
    if not isinstance(header, dict):
        return f"{path.name} has an unreadable header (not a JSON object)"
    ends = [t["data_offsets"][1] for name, t in header.items() if name != "__metadata__" and isinstance(t, dict)
            and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2]
    expected = 8 + length + max(ends, default=0)
    if size != expected:
        return f"{path.name} is truncated or corrupt ({size} bytes, its header says {expected})"
    return None


def _zip_problem(path: Path) -> str | None:
    # torch.save writes a zip archive; a cut-off one has no end-of-central-directory record.
    return None if zipfile.is_zipfile(path) else f"{path.name} is truncated or not a torch.save file"


def _weights_problem(folder: Path) -> str | None:
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as err:
            return f"{SAFETENSORS_INDEX} is unreadable ({err})"
        for shard in shards:
            if not (folder / shard).is_file():
                return f"weight shard {shard} missing"
            problem = safetensors_problem(folder / shard)
            if problem:
                return problem
        return None
    for name in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            return safetensors_problem(path) if name.endswith(".safetensors") else _zip_problem(path)
    return f"model weights missing ({' or '.join(('model.safetensors', SAFETENSORS_INDEX, 'adapter_model.safetensors'))})"


def checkpoint_problems(folder: str | Path, save_only_model: bool = False) -> list[str]:
    """What keeps `folder` from being a complete checkpoint (an empty list when it is one)."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    problems = []
    state = folder / TRAINER_STATE
    if not state.is_file():
        problems.append(f"{TRAINER_STATE} missing")
    else:
        try:
            if "global_step" not in json.loads(state.read_text()):
                problems.append(f"{TRAINER_STATE} has no global_step")
        except (OSError, ValueError, TypeError) as err:
            problems.append(f"{TRAINER_STATE} is unreadable ({err})")
    deepspeed = any(p.is_dir() for p in folder.glob("global_step*"))
    if not deepspeed:
        problem = _weights_problem(folder)
        if problem and not any(p.is_dir() and p.name.startswith("pytorch_model_fsdp") for p in folder.iterdir()):
            problems.append(problem)
    if save_only_model:
        return problems
    if not deepspeed:
        optimizer = next((folder / n for n in OPTIMIZER_FILES if (folder / n).is_file()), None)
        sharded = any(p.is_dir() and "optimizer" in p.name for p in folder.iterdir())  # FSDP
        if optimizer is None and not sharded:
            problems.append(f"{OPTIMIZER_FILES[0]} missing (the optimizer state)")
        elif optimizer is not None and optimizer.suffix == ".pt" and _zip_problem(optimizer):
            problems.append(_zip_problem(optimizer))
        if not (folder / SCHEDULER_FILE).is_file():  # DeepSpeed may keep the scheduler in global_step*
            problems.append(f"{SCHEDULER_FILE} missing")
    if not any(folder.glob("rng_state*.pth")):
        problems.append("rng_state.pth missing")
    return problems


def checkpoint_step(folder: str | Path) -> int:
    """The optimizer step a checkpoint was saved at (its `trainer_state.json` global_step)."""
    return int(json.loads((Path(folder) / TRAINER_STATE).read_text())["global_step"])


def checkpoints_newest_first(output_dir: str | Path) -> list[Path]:
    """`checkpoint-N` folders of a run, highest N first."""
    found = []
    for p in Path(output_dir).glob("checkpoint-*"):
        match = CHECKPOINT_PATTERN.match(p.name)
        if match and p.is_dir():
            found.append((int(match.group(1)), p))
    return [p for _, p in sorted(found, reverse=True)]


def latest_complete_checkpoint(output_dir: str | Path, save_only_model: bool = False) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint in `output_dir` (None if there is none), and a warning per skipped one."""
    warnings = []
    for folder in checkpoints_newest_first(output_dir):
        problems = checkpoint_problems(folder, save_only_model)
        if not problems:
            return folder, warnings
        warnings.append(f"{folder.name} is incomplete ({'; '.join(problems)})")
    return None, warnings


def resolve_resume(output_dir: str | Path, resume: bool | str, save_only_model: bool = False) -> str | None:
    """The checkpoint to hand to `Trainer.train(resume_from_checkpoint=...)`, or None to start from scratch.

    `resume=True` takes the newest complete checkpoint in `output_dir`, warning about newer incomplete
    ones; `resume=PATH` must be complete (`CheckpointError` otherwise).
    """
    if not resume:
        return None
    if isinstance(resume, str):
        problems = checkpoint_problems(resume, save_only_model)
        if problems:
            complete, _ = latest_complete_checkpoint(Path(resume).parent, save_only_model)
            hint = f"; the newest complete one there is {complete}" if complete else ""
            raise CheckpointError(f"--resume {resume}: not a complete checkpoint ({'; '.join(problems)}){hint}")
        return resume
    if not checkpoints_newest_first(output_dir):
        log.warning("--resume: no checkpoint in %s; starting from scratch", output_dir)
        return None
    folder, warnings = latest_complete_checkpoint(output_dir, save_only_model)
    if folder is None:
        log.warning("--resume: no complete checkpoint in %s (%s); starting from scratch", output_dir, "; ".join(warnings))
        return None
    if warnings:
        log.warning("--resume: %s; resuming from %s (step %d) instead", "; ".join(warnings), folder.name, checkpoint_step(folder))
    return str(folder)
