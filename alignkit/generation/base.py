"""The generation interface every backend implements (HF transformers, in-process vLLM, OpenAI-compatible endpoints)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol, Sequence

from alignkit.errors import AlignkitError
from alignkit.data.records import Prompt


class GenerationError(AlignkitError, RuntimeError):
    """A backend failed: an engine that did not start, an endpoint that is down, a weight sync that failed."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: n completions per prompt, temperature (0 = greedy), nucleus top_p, length, stops, seed.

    `min_tokens` suppresses EOS until that many tokens were generated (fixed-length benchmarks).
    `repetition_penalty` (1.0 = off; URIAL's paper uses 1.1 on base models) is the CTRL-paper penalty as
    transformers and vLLM implement it: the logit of every token already in the prompt or the completion so
    far is divided by it when positive and multiplied by it when negative.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    stop: tuple[str, ...] = ()
    seed: int | None = 0
    logprobs: bool = False
    min_tokens: int = 0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if self.n < 1:
            problems.append(f"n must be at least 1, got {self.n}")
        if self.max_tokens < 1:
            problems.append(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            problems.append(f"min_tokens must be in [0, max_tokens={self.max_tokens}], got {self.min_tokens}")
        if not self.repetition_penalty > 0:
            problems.append(f"repetition_penalty must be > 0 (1.0 = off), got {self.repetition_penalty}")
        if self.temperature == 0 and self.n > 1:  # greedy decoding gives n identical copies
            problems.append(f"temperature 0 is greedy decoding: all n={self.n} completions of a prompt would be identical; "
                            f"use n=1, or a temperature above 0 to sample {self.n} different ones")
        if problems:
            raise ValueError("invalid sampling parameters: " + "; ".join(problems))


def with_stops(params: SamplingParams, stops: Sequence[str]) -> SamplingParams:
    """`params` with `stops` (a template's own stop strings) added to its stop strings."""
    extra = tuple(s for s in stops if s not in params.stop)
    return dataclasses.replace(params, stop=params.stop + extra) if extra else params


def covering_prefix(decode: Callable[[list[int]], str], token_ids: Sequence[int], text: str) -> int:
    """How many of `token_ids` a completion cut to `text` keeps: the fewest whose decoding starts with `text`
    (a token that straddles the cut is kept), or all of them when none does."""
    ids = list(token_ids)
    if not decode(ids).startswith(text):
        return len(ids)
    lo, hi = 0, len(ids)  # decodings of longer prefixes extend shorter ones: binary search for the first that covers
    while lo < hi:
        mid = (lo + hi) // 2
        if decode(ids[:mid]).startswith(text):
            hi = mid
        else:
            lo = mid + 1
    return lo


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
