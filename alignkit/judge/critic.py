"""A critic: an LLM asked for a natural-language judgment of a response (what is wrong with it), not a label.

    from alignkit.judge.critic import Critic, critique, make_critic
    text = critique(generator, "What is 7 plus 5?", "7 plus 5 is 13.")   # "The answer is wrong: 7 plus 5 is 12, not 13."
    critic = make_critic("data/gym/judge-s", backend="hf")            # or an OpenAI-compatible endpoint URL
    critic.critique(prompts, responses)                                # [(positive, judgment or None), ...]

The prompt is a template with `{question}` and `{response}` (default: `templates/critic.txt`, the one the
gym's judge model is trained on; `critic_cut` is the CUT paper's GPT-4 annotation prompt, which asks for the
single word "perfect" when nothing is wrong); decoding is greedy, one user chat message, cached and
de-duplicated like every LLM judge (`alignkit.judge.llm.LLMJudge`). A judgment saying the response has no
problem (`is_perfect`: it starts with `PERFECT_JUDGMENT`, the gym critic's words, or with "perfect", the CUT
paper's rule for its GPT-4 judgments) makes the response a positive; any other non-empty judgment is the
signal CUT-style trainers learn from. `critique` returns `(positive, judgment)` per response, the interface
of online rounds (`alignkit.engine.rounds`), as the gym's `GoldCritic` does; an empty output is
`(False, None)`: no judgment, which the rounds count and leave out.
"""

from __future__ import annotations

from typing import Any, Sequence

from alignkit.data.records import Prompt
from alignkit.generation.base import Generator
from alignkit.judge.llm import LLMJudge

PERFECT_JUDGMENT = "The response is correct, polite and concise."
PAPER_PERFECT = "perfect"  # CUT (Xu et al.), App. A.2: GPT-4 judgments that start with "Perfect" are positives
_LEADING = " \t\n\"'*`>#-_:"


def is_perfect(judgment: str) -> bool:
    """True when a critic's judgment says the response has no problem: it starts with `PERFECT_JUDGMENT` (the
    gym critic) or with the word "perfect" (the CUT paper's annotation prompt), ignoring case, spacing and
    leading quotes or markdown."""
    text = " ".join(judgment.split()).lower().lstrip(_LEADING)
    if text.startswith(PERFECT_JUDGMENT.lower()):
        return True
    return text.startswith(PAPER_PERFECT) and not text[len(PAPER_PERFECT):len(PAPER_PERFECT) + 1].isalpha()


def parse_critique(text: str) -> tuple[bool, str | None]:
    """(positive, judgment) of a critic's output: (True, None) when `is_perfect`, (False, the stripped text) for
    any other judgment, (False, None) for an empty output (no judgment at all)."""
    text = text.strip()
    if not text:
        return False, None
    if is_perfect(text):
        return True, None
    return False, text


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

    def critique(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[tuple[bool, str | None]]:
        """(positive, judgment) per response (`parse_critique`); a chat prompt is judged by its last user turn."""
        from alignkit.data.templates import as_messages

        requests = [p if isinstance(p, str) else as_messages(p)[-1]["content"] for p in prompts]
        return [parse_critique(text) for text in self.critiques(requests, responses)]


def make_critic(model: str, template: str | None = None, backend: str = "auto", max_tokens: int = 64,
                api_key: str | None = None, model_name: str | None = None, cache: bool = True,
                endpoint_options: dict[str, Any] | None = None) -> Critic:
    """A `Critic` on a model folder (the `auto`, `hf` or `vllm` backend; an `hf` model is placed by the frozen-model
    rule) or on the model at an OpenAI-compatible endpoint URL (`model_name`: the served name, default the
    server's). The template is checked before the model loads; answers are cached under the model's identity."""
    from alignkit.judge.llm import TEMPLATES, load_template
    from alignkit.judge.run import load_judge_model

    load_template(template or TEMPLATES["critic"], "critic")
    url = model.startswith(("http://", "https://"))
    generator, model_id = load_judge_model(model_name if url else model, model if url else None, backend, api_key,
                                           endpoint_options)
    return Critic(generator, template, max_tokens=max_tokens, model_id=model_id, cache=cache)


def critique(generator: Generator, prompt: str, response: str, template: str | None = None, **options: Any) -> str:
    """One judgment of `response` to `prompt` (for many, build a `Critic` once and call `critiques`)."""
    options.setdefault("progress", False)
    return Critic(generator, template, **options).critiques([prompt], [response])[0]
