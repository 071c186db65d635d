"""Sampling from the policy while it trains (online and on-policy methods).

`PolicySampler.generate(model, prompts, params, step)` draws completions from the *current* weights:

- `hf`: transformers `generate` on the policy itself (eval mode for the call, train mode restored;
  under DeepSpeed ZeRO-3 the sharded parameters are gathered for the call with TRL's public
  `unwrap_model_for_generation`);
- `vllm`: an in-process vLLM engine started once from the initial weights, whose weights are synced
  from the policy whenever the optimizer step has changed since the last sync (a PEFT policy's adapter is
  merged for the copy).

Prompts are encoded with the recipe's template and prompt truncation, so the sampled token ids are the
ids the trainer scores.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Sequence

from alignkit.config import ModelSettings
from alignkit.data.records import Prompt
from alignkit.generation.base import GenerationResult, SamplingParams

log = logging.getLogger("alignkit")


def parallel_unwrapped(model: Any) -> Any:
    """The model inside DDP / DeepSpeed wrappers (a PEFT model stays a PEFT model)."""
    import torch

    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


class PolicySampler:
    """Draws completions from the policy being trained (see the module docstring)."""

    def __init__(self, settings: ModelSettings, tokenizer: Any, template: str, backend: str = "hf",
                 max_prompt_length: int | None = None, engine_args: dict[str, Any] | None = None) -> None:
        if backend not in ("hf", "vllm"):
            raise ValueError(f"policy sampling backend must be hf or vllm, not {backend!r}")
        self.settings, self.tokenizer, self.template = settings, tokenizer, template
        self.backend = backend
        self.max_prompt_length = max_prompt_length
        self.engine_args = dict(engine_args or {})
        self.engine: Any = None
        self.synced_step: int | None = None
        self.seconds = {"generate": 0.0, "sync": 0.0}

    def _vllm(self, unwrapped: Any, step: int) -> Any:
        if self.engine is None:
            from alignkit.generation.vllm_engine import VLLMGenerator

            self.engine = VLLMGenerator(self.settings.model_copy(update={"lora": None}), template=self.template,
                                        max_prompt_length=self.max_prompt_length, **self.engine_args)
            self.synced_step = 0  # the engine starts from the policy's initial weights
        if self.synced_step != step:
            t0 = time.perf_counter()
            self.engine.sync_weights(unwrapped)
            self.seconds["sync"] += time.perf_counter() - t0
            self.synced_step = step
        return self.engine

    def generate(self, model: Any, prompts: Sequence[Prompt], params: SamplingParams, step: int,
                 accelerator: Any = None) -> list[GenerationResult]:
        """Completions of `prompts` under the policy's weights at optimizer step `step`."""
        from alignkit.generation.hf import HFGenerator

        t0 = time.perf_counter()
        inner = parallel_unwrapped(model)
        was_training = inner.training
        inner.eval()
        try:
            with self._gathered(model, accelerator) as unwrapped:  # ZeRO-3 shards gathered for generate or the sync
                if self.backend == "vllm":
                    results = self._vllm(unwrapped, step).generate(list(prompts), params)
                else:
                    generator = HFGenerator(unwrapped, self.tokenizer, self.template, max_prompt_length=self.max_prompt_length)
                    results = generator.generate(list(prompts), params)
        finally:
            inner.train(was_training)
        self.seconds["generate"] += time.perf_counter() - t0
        return results

    @staticmethod
    @contextlib.contextmanager
    def _gathered(model: Any, accelerator: Any) -> Any:
        if accelerator is not None and getattr(accelerator.state, "deepspeed_plugin", None) is not None:
            from trl.models import unwrap_model_for_generation  # public: gathers ZeRO-3 shards for generate

            with unwrap_model_for_generation(model, accelerator) as unwrapped:
                yield unwrapped
        else:
            yield parallel_unwrapped(model)
