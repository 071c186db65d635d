"""A critic: an LLM asked for a natural-language judgment of a response (what is wrong with it), not a label.

    from alignkit.judge.critic import Critic, critique
    text = critique(generator, "What is 7 plus 5?", "7 plus 5 is 13.")   # "The answer is wrong: 7 plus 5 is 12, not 13."

The prompt is a template with `{question}` and `{response}` (default: `templates/critic.txt`, the one the
gym's judge model is trained on); decoding is greedy, one user chat message, cached and de-duplicated like
every LLM judge (`alignkit.judge.llm.LLMJudge`). A judgment that says the response has no problem is
`PERFECT_JUDGMENT`; `is_perfect` recognises it. CUT-style trainers take such judgments as their signal.
"""

from __future__ import annotations

from typing import Any, Sequence

from alignkit.generation.base import Generator
from alignkit.judge.llm import LLMJudge

PERFECT_JUDGMENT = "The response is correct, polite and concise."


def is_perfect(judgment: str) -> bool:
    """True when a critic's judgment says the response has no problem (it starts with `PERFECT_JUDGMENT`)."""
    return " ".join(judgment.split()).lower().startswith(PERFECT_JUDGMENT.lower())


def critic_prompt(template: str, prompt: str, response: str) -> str:
    """The prompt a critic sends: the template text filled with the user's prompt and the response."""
    return template.format(question=prompt, response=response)


class Critic(LLMJudge):
    """Ask a model for a judgment of each (prompt, response); `max_tokens` 64 by default."""

    kind = "critic"

    def __init__(self, generator: Generator, template: str | None = None, max_tokens: int = 64, **options: Any) -> None:
        super().__init__(generator, template, max_tokens=max_tokens, **options)

    def critiques(self, prompts: Sequence[str], responses: Sequence[str]) -> list[str]:
        """The judgment of each response to its prompt (stripped)."""
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
        return [out.strip() for out in self.ask([critic_prompt(self.template, p, r) for p, r in zip(prompts, responses)])]


def critique(generator: Generator, prompt: str, response: str, template: str | None = None, **options: Any) -> str:
    """One judgment of `response` to `prompt` (for many, build a `Critic` once and call `critiques`)."""
    options.setdefault("progress", False)
    return Critic(generator, template, **options).critiques([prompt], [response])[0]
