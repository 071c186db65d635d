"""What a scorer is: anything that gives each completion of a prompt one float (a reward model, the gym's
gold reward, a pointwise LLM judge). Best-of-N selection, reward signals for training and evaluation all
take this protocol, so new scorers plug in without touching their callers."""

from __future__ import annotations

from typing import Protocol, Sequence

from alignkit.data.records import Prompt


class Scorer(Protocol):
    """Scores completions of a prompt; `identity` names what the scores depend on (for cache keys)."""

    identity: str

    def score(self, prompt: Prompt, completions: Sequence[str]) -> list[float]: ...


def score_groups(scorer: Scorer, prompts: Sequence[Prompt], completions: Sequence[Sequence[str]],
                 progress: bool = False, desc: str = "score") -> list[list[float]]:
    """Scores of every prompt's completions; batched across prompts when the scorer has `score_batch`."""
    batch = getattr(scorer, "score_batch", None)
    if batch is not None:
        flat = batch([p for p, cs in zip(prompts, completions) for _ in cs], [c for cs in completions for c in cs],
                     progress=progress, desc=desc)
        out, i = [], 0
        for cs in completions:
            out.append(flat[i : i + len(cs)])
            i += len(cs)
        return out
    from tqdm.auto import tqdm

    return [scorer.score(p, list(cs)) for p, cs in tqdm(list(zip(prompts, completions)), desc=desc, unit="prompt",
                                                         disable=not progress)]
