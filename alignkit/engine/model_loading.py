"""Load the policy (and tokenizer) a recipe names: dtype, attention, 4/8-bit quantization, LoRA."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from alignkit.config import TINY_MODEL_PREFIX, ModelSettings


class ModelLoadError(OSError):
    """A model or tokenizer could not be loaded; the message names the path and the first line of the cause."""


def _load_failure(what: str, path: str, err: OSError) -> ModelLoadError:
    cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ModelLoadError(f"model {path!r}: could not load the {what}: {cause} "
                          f"(is it a local model folder, or a hub id that is reachable or cached?)")


def resolve_model_path(path: str) -> str:
    """A loadable path: `tiny:<size>` is built into the local cache on first use."""
    if path.startswith(TINY_MODEL_PREFIX):
        from alignkit.gym.tiny_model import resolve_tiny

        return str(resolve_tiny(path))
    return path


def torch_dtype(name: str) -> Any:
    """The torch dtype for a recipe dtype name ('auto' passes through)."""
    import torch

    return name if name == "auto" else getattr(torch, name)


def load_tokenizer(settings: ModelSettings) -> Any:
    """The tokenizer, with a pad token (EOS when the model has none) and right padding."""
    from transformers import AutoTokenizer

    path = resolve_model_path(settings.tokenizer or settings.path)
    try:
        tok = AutoTokenizer.from_pretrained(path, revision=settings.revision, trust_remote_code=settings.trust_remote_code)
    except OSError as err:
        raise _load_failure("tokenizer", settings.tokenizer or settings.path, err) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def load_causal_lm(settings: ModelSettings, trainable: bool = True, gradient_checkpointing: bool = False) -> Any:
    """The causal LM with quantization and (when `trainable`) a fresh LoRA adapter from the settings."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(settings.path)
    kwargs: dict[str, Any] = {"revision": settings.revision, "trust_remote_code": settings.trust_remote_code}
    kwargs["dtype"] = torch_dtype(settings.dtype)
    if settings.attn_implementation:
        kwargs["attn_implementation"] = settings.attn_implementation
    if settings.quantization:
        from transformers import BitsAndBytesConfig

        q = settings.quantization
        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_8bit=True)
            if q.bits == 8
            else BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=q.quant_type, bnb_4bit_use_double_quant=q.double_quant,
                bnb_4bit_compute_dtype=torch_dtype(q.compute_dtype),
            )
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        raise _load_failure("model", settings.path, err) from None
    if not trainable:
        model.eval().requires_grad_(False)
        return model
    if settings.quantization:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": bool(settings.lora)})
        model.config.use_cache = False
    if settings.lora:
        from peft import LoraConfig, get_peft_model

        lora = settings.lora
        config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
            bias=lora.bias, task_type="CAUSAL_LM",
        )
        # autocast_adapter_dtype=False: DeepSpeed >= 0.19.2 fails on mixed-dtype all-gathers otherwise.
        model = get_peft_model(model, config, autocast_adapter_dtype=False)
    return model


def model_fingerprint(settings: ModelSettings) -> str:
    """Identity of the model weights for cache keys: path, revision, config, and weight-file digests.

    Weight files are summarised by size plus a hash of their first and last MiB, which changes whenever
    the weights do in practice, without reading tens of GB.
    """
    path = resolve_model_path(settings.path)
    digest = hashlib.sha256(f"{settings.path}|{settings.revision}|{settings.dtype}".encode())
    folder = Path(path)
    if folder.is_dir():
        for file in sorted(folder.iterdir()):
            if file.name == "config.json":
                digest.update(json.dumps(json.loads(file.read_text()), sort_keys=True).encode())
            elif file.suffix in (".safetensors", ".bin", ".pt"):
                size = file.stat().st_size
                with file.open("rb") as fh:
                    head = fh.read(1 << 20)
                    fh.seek(max(0, size - (1 << 20)))
                    tail = fh.read(1 << 20)
                digest.update(f"{file.name}|{size}|".encode() + hashlib.sha256(head + tail).digest())
    return digest.hexdigest()
