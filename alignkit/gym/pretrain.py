"""`alignkit gym pretrain`: the gym's base (or teacher) policy, SFT on the mixed-quality gym data."""

from __future__ import annotations

import shutil
from pathlib import Path

BASE_RECIPE = "recipes/gym_base_tiny.yaml"


def pretrain(out: str | Path, size: str = "s", seed: int = 0, recipe: str = BASE_RECIPE, overrides: list[str] | None = None,
             save_dtype: str = "float32") -> Path:
    """Train the base policy of `recipe` at a tiny size and seed; write model + tokenizer to `out`."""
    from alignkit.config import load_recipe
    from alignkit.engine.run import train

    out = Path(out)
    run_dir = out.parent / f".{out.name}.run"
    settings = load_recipe(recipe, [f"model.path=tiny:{size}", f"training.seed={seed}", f"training.output_dir={run_dir}", *(overrides or [])])
    summary = train(settings)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(summary.checkpoint, out, ignore=shutil.ignore_patterns("training_args.bin"))
    shutil.rmtree(run_dir, ignore_errors=True)
    if save_dtype != "float32":
        resave(out, save_dtype)
    return out


def resave(folder: str | Path, dtype: str) -> None:
    """Store a model folder's weights in another dtype (bfloat16 halves a shipped checkpoint)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    classifier = any(a.endswith("ForSequenceClassification") for a in AutoConfig.from_pretrained(folder).architectures or [])
    cls = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    model = cls.from_pretrained(folder, dtype=getattr(torch, dtype))
    model.save_pretrained(folder)


def ship(run_model: str | Path, out: str | Path, dtype: str = "float32") -> Path:
    """Copy a trained model folder to `out` for shipping: weights, config, tokenizer and the alignkit recipe
    that made it, without training state; optionally in another dtype."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(run_model, out, ignore=shutil.ignore_patterns("training_args.bin", "checkpoint-*", "*.pt", "*.pth"))
    if dtype != "float32":
        resave(out, dtype)
    return out
