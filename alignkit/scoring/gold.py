"""The gym's gold reward as a scorer (gym prompts only: for tests, gym experiments and held-out evaluation)."""

from __future__ import annotations

import hashlib
from typing import Sequence

from alignkit.data.records import Prompt


def gold_identity() -> str:
    """Changes whenever the gym's world (its rules or fact table) does, so cached gold scores never go stale."""
    import alignkit.gym.world as world

    digest = hashlib.sha256()
    for path in (world.__file__, world.FACTS_FILE):
        with open(path, "rb") as fh:
            digest.update(fh.read())
    return f"gym-gold:{digest.hexdigest()[:16]}"


class GoldScorer:
    """The gym's gold reward of each completion against the task of the prompt's last user turn."""

    def __init__(self) -> None:
        self.identity = gold_identity()

    def score(self, prompt: Prompt, completions: Sequence[str]) -> list[float]:
        """Gold reward of each completion."""
        from alignkit.data.templates import as_messages
        from alignkit.gym.world import gold, task_for_prompt

        task = task_for_prompt(as_messages(prompt)[-1]["content"])
        return [gold(task, c).reward for c in completions]


class GoldCritic:
    """The gym's gold judgment as a critic: for each (prompt, response), whether it is perfect and the
    natural-language judgment naming every problem (gym prompts only)."""

    def critique(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[tuple[bool, str | None]]:
        """(positive, judgment) per response; the judgment is None for a perfect response."""
        from alignkit.data.templates import as_messages
        from alignkit.gym.world import gold, task_for_prompt

        out = []
        for prompt, response in zip(prompts, responses):
            text = as_messages(prompt)[-1]["content"]
            g = gold(task_for_prompt(text), response, text)
            out.append((g.judgment is None, g.judgment))
        return out
