"""The generation interface every backend implements (HF transformers, in-process vLLM, OpenAI-compatible endpoints)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence

from alignkit.data.records import Prompt


class GenerationError(RuntimeError):
    """A backend failed: an engine that did not start, an endpoint that is down, a weight sync that failed."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: n completions per prompt, temperature (0 = greedy), nucleus top_p, length, stops, seed.

    `min_tokens` suppresses EOS until that many tokens were generated (fixed-length benchmarks).
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    stop: tuple[str, ...] = ()
    seed: int | None = 0
    logprobs: bool = False
    min_tokens: int = 0

    def __post_init__(self) -> None:
        if (self.n < 1 or self.max_tokens < 1 or self.temperature < 0 or not 0 < self.top_p <= 1
                or not 0 <= self.min_tokens <= self.max_tokens):
            raise ValueError(f"invalid sampling parameters: {self}")


@dataclass
class Completion:
    """One sampled completion: text, token ids, per-token log-probs (raw model distribution), finish reason."""

    text: str
    token_ids: list[int]
    finish_reason: Literal["stop", "length"]
    logprobs: list[float] | None = None

    @property
    def logprob(self) -> float | None:
        """Summed log-probability of the completion (None unless log-probs were requested)."""
        return None if self.logprobs is None else float(sum(self.logprobs))


@dataclass
class GenerationResult:
    """The completions of one prompt."""

    prompt: Prompt
    completions: list[Completion] = field(default_factory=list)


class Generator(Protocol):
    """Anything that turns prompts (text or chat messages) into completions."""

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[GenerationResult]: ...
