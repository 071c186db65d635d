"""The transformers backend: batched `generate`, the fallback that runs everywhere.

Prompts are rendered with alignkit's templates (the tokenizer's chat template by default), batched
with left padding, and sampled under a fixed seed. Log-probs, when asked for, are recomputed by one
teacher-forced forward pass, so they are the model's raw distribution whatever the temperature/top_p.

A template's own stop strings (URIAL's next query marker) are added to every request; a completion that
a stop string ended is cut before it, text and token ids alike (the token ids keep the fewest tokens that
cover the text). Static prompt prefixes (URIAL) are *not* cached across batches here: `generate` runs the
whole prompt for each batch of `batch_size` prompts (one forward pass per prompt over the prefix, then
decoding with the KV cache as usual). Use the vLLM backend, whose prefix cache computes it once.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import torch

from alignkit.data.records import Prompt
from alignkit.data.templates import finish_completion_text, template_stops
from alignkit.data.tokenization import encode_prompt
from alignkit.generation.base import Completion, GenerationError, GenerationResult, SamplingParams, covering_prefix, with_stops
from alignkit.modeling.batching import pad_rows
from alignkit.modeling.logprobs import sequence_token_logprobs


class HFGenerator:
    """Generate with a transformers causal LM."""

    def __init__(self, model: Any, tokenizer: Any, template: str = "chat", batch_size: int = 32,
                 max_prompt_length: int | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.template = template
        self.batch_size = batch_size
        self.max_prompt_length = max_prompt_length
        self.cancel_event: threading.Event | None = None  # set it to stop a generation in progress (GenerationError)

    @classmethod
    def from_pretrained(cls, path: Any, template: str = "chat", batch_size: int = 32, dtype: str = "auto",
                        max_prompt_length: int | None = None, device: str | None = None) -> "HFGenerator":
        """Load a model folder, `tiny:<size>` or `ModelSettings` (quantization, attention...) for generation, placed
        by the frozen-model rule (`alignkit.modeling.loading.load_frozen`): the process's accelerator (or `device`),
        the settings' dtype (`auto`: bf16 on a GPU, fp32 on the CPU)."""
        from alignkit.config import ModelSettings
        from alignkit.modeling.loading import load_frozen, load_tokenizer

        settings = path if isinstance(path, ModelSettings) else ModelSettings(path=path, dtype=dtype)
        if device is not None:
            settings = settings.model_copy(update={"device": device})
        return cls(load_frozen(settings), load_tokenizer(settings), template, batch_size, max_prompt_length)

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a rendered prompt, left-truncated as in training (`alignkit.data.tokenization`)."""
        return encode_prompt(self.tokenizer, prompt, self.template, self.max_prompt_length)

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[GenerationResult]:
        """n completions per prompt."""
        if params.seed is not None:
            torch.manual_seed(params.seed)
        params = with_stops(params, template_stops(self.template))
        results = [GenerationResult(p) for p in prompts]
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(range(start, min(start + self.batch_size, len(prompts))))
            encoded = [self.encode(prompts[i]) for i in chunk]
            for i, completion in zip((i for i in chunk for _ in range(params.n)), self._sample(encoded, params)):
                results[i].completions.append(completion)
        return results

    def _sample(self, encoded: list[list[int]], params: SamplingParams) -> list[Completion]:
        width = max(len(e) for e in encoded)
        pad = self.tokenizer.pad_token_id
        device = next(self.model.parameters()).device
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
        sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p} if params.temperature > 0 else {"do_sample": False}
        if params.repetition_penalty != 1.0:
            sampling["repetition_penalty"] = params.repetition_penalty
        if self.cancel_event is not None:
            from transformers import StoppingCriteriaList

            sampling["stopping_criteria"] = StoppingCriteriaList([_cancelled(self.cancel_event)])
        out = self.model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=params.max_tokens, min_new_tokens=params.min_tokens or None,
            num_return_sequences=params.n,
            pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id, top_k=None,
            stop_strings=list(params.stop) or None, tokenizer=self.tokenizer if params.stop else None, **sampling,
        )
        if self.cancel_event is not None and self.cancel_event.is_set():
            raise GenerationError("generation cancelled (the server is shutting down)")
        completions = []
        for row, prompt in zip(out[:, width:].tolist(), (e for e in encoded for _ in range(params.n))):
            tokens, finish = _cut(row, self.tokenizer.eos_token_id, pad)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            cut = min((text.index(s) for s in params.stop if s in text), default=None)
            if cut is not None:
                text, finish = text[:cut], "stop"
            finished = finish_completion_text(self.template, text)
            if cut is not None or finished != text:  # the ids end where the text does (EOS stays otherwise)
                tokens = tokens[: covering_prefix(self._decode, tokens, finished)]
            completions.append(Completion(finished, tokens, finish))
        if params.logprobs:
            prompts = [e for e in encoded for _ in range(params.n)]
            for c, lp in zip(completions, self.score(prompts, [c.token_ids for c in completions])):
                c.logprobs = lp
        return completions

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @torch.no_grad()
    def score(self, prompts: Sequence[list[int]], completions: Sequence[list[int]]) -> list[list[float]]:
        """Per-token log-probs of completions given prompts (token ids), by teacher forcing."""
        out = []
        for start in range(0, len(prompts), self.batch_size):
            rows = list(zip(prompts[start : start + self.batch_size], completions[start : start + self.batch_size]))
            device = next(self.model.parameters()).device
            batch = {k: v.to(device) for k, v in pad_rows(rows, self.tokenizer.pad_token_id).items()}
            logps, mask = sequence_token_logprobs(self.model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
            out += [lp[m].tolist() for lp, m in zip(logps, mask)]
        return out


def _cut(row: list[int], eos: int, pad: int) -> tuple[list[int], str]:
    """Completion tokens up to and including EOS, and why generation stopped."""
    if eos in row:
        return row[: row.index(eos) + 1], "stop"
    while row and row[-1] == pad:
        row = row[:-1]
    return row, "length"


def _cancelled(event: threading.Event) -> Any:
    """A `generate` stopping criterion that ends every sequence once `event` is set."""
    from transformers import StoppingCriteria

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device)

    return Cancelled()
