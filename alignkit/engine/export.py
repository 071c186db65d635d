"""`alignkit export RUN_OR_CHECKPOINT --out DIR [--merge-lora] [--dtype bfloat16]`: a standalone model folder.

The folder is what transformers' `from_pretrained` and vLLM load with no alignkit and no PEFT: weights as
safetensors (in `--dtype`, or the checkpoint's own dtype), config, generation config and tokenizer (with its chat
template). A LoRA run's adapter is merged into the unquantized base weights (`--merge-lora`). Training state
(optimizer, scheduler, RNG, `training_args.bin`) is left out. Beside the model go the run's
`alignkit_recipe.yaml` and `run_summary.json`, when the run has them, and a model card (`README.md`). The card
holds the recipe, the data sources with their record counts, and the run's before/after metrics.

RUN_OR_CHECKPOINT is a run folder (`training.output_dir`; its `final/` model is exported), its `final/`, or a
`checkpoint-N` folder. A checkpoint's metrics come from its `trainer_state.json` log history, up to that step.
The folder is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alignkit.errors import AlignkitError
from alignkit.config import RUN_SUMMARY, SAVED_RECIPE

DTYPES = ("float32", "bfloat16", "float16")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class ExportError(AlignkitError, ValueError):
    """The source cannot be exported as asked; the message says why and what to do."""


@dataclass
class ExportSource:
    """A model folder to export, the run it belongs to, and what that run recorded."""

    model_dir: Path
    run_dir: Path | None
    recipe: dict[str, Any] | None
    summary: dict[str, Any] | None
    step: int | None  # the checkpoint's step (None for final/)

    @property
    def is_lora(self) -> bool:
        """Whether the folder holds a PEFT LoRA adapter instead of full weights."""
        return (self.model_dir / "adapter_config.json").is_file()


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def resolve_source(path: str | Path) -> ExportSource:
    """The model folder and run of a run folder, a `final/` folder or a `checkpoint-N` folder."""
    path = Path(path)
    if not path.is_dir():
        raise ExportError(f"{path}: not a folder (give a run folder, its final/ or a checkpoint-N folder)")
    if not _is_model_dir(path) and _is_model_dir(path / "final"):
        path = path / "final"
    if not _is_model_dir(path):
        raise ExportError(f"{path}: no model here (no config.json or adapter_config.json, and no final/ model inside)")
    match = _CHECKPOINT.match(path.name)
    run_dir = path.parent if (match or path.name == "final") else None
    recipe = read_run_recipe(path, run_dir)
    summary = None
    if run_dir is not None and not match and (run_dir / RUN_SUMMARY).is_file():
        summary = json.loads((run_dir / RUN_SUMMARY).read_text())
    elif match and (path / "trainer_state.json").is_file():
        summary = _checkpoint_summary(path, recipe)
    return ExportSource(path, run_dir, recipe, summary, int(match.group(1)) if match else None)


def read_run_recipe(model_dir: Path, run_dir: Path | None) -> dict[str, Any] | None:
    """The recipe that trained the model: saved beside the model, else beside the run's final model or stage/round."""
    candidates = [model_dir / SAVED_RECIPE]
    if run_dir is not None:
        candidates += [run_dir / "final" / SAVED_RECIPE, run_dir / "stage_recipe.yaml", run_dir / "round_recipe.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return yaml.safe_load(candidate.read_text())
    return None


def _checkpoint_summary(checkpoint: Path, recipe: dict[str, Any] | None) -> dict[str, Any]:
    """Before/after metrics of a checkpoint from its trainer state: the first evaluation and the last one up to it."""
    from alignkit.engine.run import strip_eval

    state = json.loads((checkpoint / "trainer_state.json").read_text())
    history = state.get("log_history", [])
    evals = [h for h in history if "eval_loss" in h]
    return {"method": (recipe or {}).get("method"), "model": ((recipe or {}).get("model") or {}).get("path"),
            "steps": state.get("global_step"), "before": strip_eval(evals[0]) if evals else {},
            "after": strip_eval(evals[-1]) if len(evals) > 1 else {}, "log_history": history, "data": {}}


def export_model(source: str | Path, out: str | Path, merge_lora: bool = False, dtype: str | None = None) -> Path:
    """Write the standalone folder (see the module docstring); returns it."""
    import torch

    from alignkit.cache import atomic_path

    src = resolve_source(source)
    out = Path(out)
    if dtype is not None and dtype not in DTYPES:
        raise ExportError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not empty; choose another --out or remove it")
    if src.is_lora and not merge_lora:
        base = _lora_base(src)
        raise ExportError(f"{src.model_dir} is a LoRA adapter on {base}; pass --merge-lora to merge it into the base "
                          "weights (a standalone folder that transformers and vLLM load without PEFT)")
    with atomic_path(out, directory=True) as tmp:
        model, tokenizer, notes = _load_for_export(src, dtype)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name, folder in ((SAVED_RECIPE, src.model_dir), (RUN_SUMMARY, src.run_dir)):
            if folder is not None and (folder / name).is_file():
                shutil.copy2(folder / name, tmp / name)
        saved_dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        (tmp / "README.md").write_text(model_card(src, out.name, saved_dtype, notes))
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return out


def _lora_base(src: ExportSource) -> str:
    """The base model a LoRA adapter applies to: the recipe's model, else the adapter config's base."""
    model = (src.recipe or {}).get("model") or {}
    if model.get("path"):
        return model["path"]
    config = json.loads((src.model_dir / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise ExportError(f"{src.model_dir}: the adapter names no base model and no alignkit recipe is beside it")
    return base


def _auto_class(config: dict[str, Any]) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    archs = config.get("architectures") or []
    return AutoModelForSequenceClassification if any(a.endswith("ForSequenceClassification") for a in archs) else AutoModelForCausalLM


def _load_for_export(src: ExportSource, dtype: str | None) -> tuple[Any, Any, list[str]]:
    """The model to save (merged when LoRA) in the export dtype, its tokenizer, and notes for the card."""
    import torch
    from transformers import AutoTokenizer

    from alignkit.config import ModelSettings
    from alignkit.modeling.loading import resolve_model_path

    notes: list[str] = []
    recipe_model = (src.recipe or {}).get("model") or {}
    if src.is_lora:
        from peft import PeftModel

        adapter = json.loads((src.model_dir / "adapter_config.json").read_text())
        base = _lora_base(src)
        settings = ModelSettings(path=base, revision=recipe_model.get("revision"), trust_remote_code=bool(recipe_model.get("trust_remote_code")))
        base_path = resolve_model_path(settings.path)
        base_config = json.loads((Path(base_path) / "config.json").read_text()) if (Path(base_path) / "config.json").is_file() else {}
        kwargs: dict[str, Any] = {"revision": settings.revision, "dtype": torch.float32, "trust_remote_code": settings.trust_remote_code}
        if adapter.get("task_type") == "SEQ_CLS":  # a reward model: a one-output head on the base
            from transformers import AutoModelForSequenceClassification as auto

            kwargs["num_labels"] = 1
        else:
            auto = _auto_class(base_config)
        # Merge in float32 into the unquantized base (8/4-bit weights cannot take a merged update), then cast.
        model = auto.from_pretrained(base_path, **kwargs)
        model = PeftModel.from_pretrained(model, str(src.model_dir)).merge_and_unload()
        target = dtype or (recipe_model.get("dtype") if recipe_model.get("dtype") not in (None, "auto") else "float32")
        model = model.to(getattr(torch, target))
        notes.append(f"LoRA adapter (r={adapter.get('r')}, alpha={adapter.get('lora_alpha')}, targets "
                     f"{adapter.get('target_modules')}) merged into the base weights of `{base}` in float32, saved as {target}")
        if recipe_model.get("quantization"):
            notes.append(f"the run trained on a {recipe_model['quantization'].get('bits')}-bit quantized base; the adapter is "
                         "merged into the unquantized base weights")
    else:
        config = json.loads((src.model_dir / "config.json").read_text())
        model = _auto_class(config).from_pretrained(src.model_dir, dtype=getattr(torch, dtype) if dtype else "auto")
        if dtype:
            notes.append(f"weights saved as {dtype}")
    tokenizer_dir = src.model_dir if (src.model_dir / "tokenizer_config.json").is_file() else resolve_model_path(
        recipe_model.get("tokenizer") or recipe_model.get("path") or _lora_base(src))
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return model, tokenizer, notes


# -- the model card ------------------------------------------------------------------------------------------------


def _hub_datasets(recipe: dict[str, Any] | None) -> list[str]:
    out = []
    for entry in (((recipe or {}).get("data") or {}).get("train") or []) + (((recipe or {}).get("data") or {}).get("eval") or []):
        path = entry.get("path") if isinstance(entry, dict) else entry
        if isinstance(path, str) and path.startswith("hf:") and path.count("/") == 1 and not path[3:].startswith((".", "/", "~")):
            out.append(path[3:])
    return list(dict.fromkeys(out))


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def model_card(src: ExportSource, name: str, dtype: str, notes: list[str]) -> str:
    """The README.md of an exported folder: provenance, data, before/after metrics, the recipe, how to load it."""
    recipe, summary = src.recipe or {}, src.summary or {}
    method = recipe.get("method") or summary.get("method") or "unknown"
    base = (recipe.get("model") or {}).get("path") or summary.get("model") or "unknown"
    datasets = _hub_datasets(recipe)
    front = {"library_name": "transformers", "tags": ["alignkit", method]}
    if base.count("/") == 1 and not base.startswith((".", "/", "~", "tiny:")) and not Path(base).exists():  # a hub id
        front["base_model"] = base
    if datasets:
        front["datasets"] = datasets
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {name}", "",
             f"Trained with alignkit (method `{method}`) from `{base}`"
             + (f" (checkpoint at step {src.step})" if src.step is not None else "") + f"; exported from `{src.model_dir}` "
             f"as a standalone {dtype} model.", ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    data = summary.get("data") or {}
    if data:
        lines += ["## Data", "", "| split | source | records used | records loaded |", "|---|---|---:|---:|"]
        for split, sources in data.items():
            lines += [f"| {split} | `{s['source']}` | {s['records']} | {s['loaded']} |" for s in sources]
        lines.append("")
    elif recipe.get("data"):
        entries = [(split, e) for split in ("train", "eval") for e in recipe["data"].get(split) or []]
        lines += ["## Data", ""] + [f"- {split}: `{e.get('path') if isinstance(e, dict) else e}`" for split, e in entries] + [""]
    before, after = summary.get("before") or {}, summary.get("after") or {}
    if before or after:
        where = f" on {summary['eval_name']} ({summary.get('eval_examples')} examples)" if summary.get("eval_name") else ""
        lines += [f"## Evaluation before and after training{where}", "", "| metric | before | after |", "|---|---:|---:|"]
        lines += [f"| {k} | {_fmt(before.get(k, '–'))} | {_fmt(after.get(k, '–'))} |" for k in sorted(set(before) | set(after))]
        lines.append("")
    wins = [h for h in summary.get("log_history") or [] if "eval_gen/win_rate" in h]
    if wins:
        first, last = wins[0], wins[-1]
        lines += ["## Win rate against the reference policy (sampled during training)", "",
                  f"{first['eval_gen/win_rate']:.3f} ± {first['eval_gen/win_rate_se']:.3f} at step {first.get('step')}, "
                  f"{last['eval_gen/win_rate']:.3f} ± {last['eval_gen/win_rate_se']:.3f} at step {last.get('step')}.", ""]
    if summary.get("steps") is not None:
        lines += ["## Training", "", f"{summary['steps']} optimizer steps"
                  + (f", {summary['train_examples']} training examples, {summary['seconds']:.0f} s" if "seconds" in summary else "")
                  + (f". Reference: {summary['reference']}" if summary.get("reference") else "") + ".", ""]
    if recipe:
        lines += ["## Recipe", "", "```yaml", yaml.safe_dump(recipe, sort_keys=False).strip(), "```", ""]
    lines += ["## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f'model = AutoModelForCausalLM.from_pretrained("{name}")', f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
              "```", "", "```python", "from vllm import LLM", "", f'llm = LLM(model="{name}")', "```", ""]
    return "\n".join(lines)
