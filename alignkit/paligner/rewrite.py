"""The P-Aligner rewriter: its chat format, output parsing, and rewriting prompts before decoding.

The rewriter is a chat model trained to answer

    user: "You are an expert prompt engineer. Please help me optimize this prompt to get better response:\\n\\n
           [The Start of Raw Prompt]\\n{x}\\n[The End of Raw Prompt]"
    assistant: "The Optimized Prompt:\\n\\n[The Start of Optimized Prompt]\\n{x'}\\n[The End of Optimized Prompt]"

(the official prompt; SinglePO, the single-step rewriter, adds "\\n\\nYou should optimize this prompt by {principle}",
the principle's direction being a gerund phrase with its own full stop, as in the official rules).
At inference it runs once, greedily (temperature 0; the official pipeline's), with up to 4096 new tokens;
`parse_rewrite` takes the text between the optimized-prompt markers and falls back to the raw prompt when they
are missing (the official parser is remote code; this is the spec's stated assumption). The rewritten prompt
goes to the downstream model as a plain user turn.

The MCTS expansion operator (`ModelRewriter`) decodes as the official code does: the GPT-4-style `operator`
(system "You are an assistant who helps optimize user queries.", the user prompt with the official line breaks)
at temperature 1, the OpenAI API's default, which the official call leaves unset; the `singlepo` operator
greedily (temperature 0) with up to 4096 tokens, as the official local operator. Both are settings.
"""

from __future__ import annotations

from typing import Any, Sequence

from alignkit.paligner.principles import Principle

REQUEST = ("You are an expert prompt engineer. Please help me optimize this prompt to get better response:\n\n"
           "[The Start of Raw Prompt]\n{prompt}\n[The End of Raw Prompt]")
STEP_SUFFIX = "\n\nYou should optimize this prompt by {principle}"  # the direction carries its own full stop
START, END = "[The Start of Optimized Prompt]", "[The End of Optimized Prompt]"
ANSWER = "The Optimized Prompt:\n\n" + START + "\n{prompt}\n" + END
# The online expansion operator's prompt (a general chat model such as GPT-4; spec §1.3, appendix Fig. 3), laid out as
# the official `online_synthesis/support.py` sends it: " \n" line breaks, and "by {principle}." after a direction
# that already ends with a full stop (so the official prompt has two).
OPERATOR_SYSTEM = "You are an assistant who helps optimize user queries."
OPERATOR = ("The user query to be paraphrased is [{prompt}]. \nYou should optimize this query by {principle}. \n"
            "You should also return the optimized version directly, without any prefix.")
# Decoding of each operator style as the official code does it: (temperature, max_tokens).
OPERATOR_DECODING = {"operator": (1.0, 4096), "singlepo": (0.0, 4096)}


def rewrite_request(prompt: str, principle: Principle | None = None) -> list[dict[str, str]]:
    """The rewriter's input as chat messages (with a principle: the SinglePO single-step form)."""
    text = REQUEST.format(prompt=prompt) + (STEP_SUFFIX.format(principle=principle.description) if principle else "")
    return [{"role": "user", "content": text}]


def rewrite_answer(prompt: str) -> str:
    """The rewriter's target output for an optimized prompt."""
    return ANSWER.format(prompt=prompt)


def parse_rewrite(text: str, raw: str) -> tuple[str, bool]:
    """(the optimized prompt, whether it parsed): the text between the markers, else the raw prompt."""
    start = text.find(START)
    if start < 0:
        return raw, False
    rest = text[start + len(START):]
    end = rest.find(END)
    body = (rest[:end] if end >= 0 else "").strip()
    return (body, True) if body else (raw, False)


class ModelRewriter:
    """The MCTS expansion operator on a model through the generation interface: a general chat model given the
    operator prompt (`style="operator"`, as GPT-4 in the paper's online search; temperature 1 by default), or a
    SinglePO-style rewriter (`style="singlepo"`; greedy by default). See the module docstring."""

    def __init__(self, generator: Any, style: str = "operator", max_tokens: int | None = None,
                 temperature: float | None = None, seed: int = 0) -> None:
        if style not in OPERATOR_DECODING:
            raise ValueError(f"rewriter style must be operator or singlepo, not {style!r}")
        default_temperature, default_tokens = OPERATOR_DECODING[style]
        self.generator, self.style, self.seed = generator, style, seed
        self.temperature = default_temperature if temperature is None else temperature
        self.max_tokens = default_tokens if max_tokens is None else max_tokens

    def rewrite(self, requests: Sequence[tuple[str, Principle]]) -> list[str | None]:
        """One rewrite per (instruction, principle); None where the model gave nothing usable."""
        from alignkit.generation.base import SamplingParams

        if self.style == "operator":
            prompts = [[{"role": "system", "content": OPERATOR_SYSTEM},
                        {"role": "user", "content": OPERATOR.format(prompt=x, principle=p.description)}] for x, p in requests]
        else:
            prompts = [rewrite_request(x, p) for x, p in requests]
        params = SamplingParams(n=1, temperature=self.temperature, max_tokens=self.max_tokens, seed=self.seed)
        results = self.generator.generate(prompts, params)
        out: list[str | None] = []
        for (raw, _), result in zip(requests, results):
            text = result.completions[0].text.strip()
            if self.style == "singlepo":
                text, parsed = parse_rewrite(text, raw)
                out.append(text if parsed else None)
            else:
                out.append(text or None)
        return out


def rewrite_prompts(generator: Any, prompts: Sequence[str], max_tokens: int = 4096) -> list[tuple[str, bool]]:
    """Rewrite every prompt once, greedily, through a trained rewriter: (prompt, parsed) per prompt; a prompt
    whose output has no markers keeps its raw form (parsed False: a fallback)."""
    from alignkit.generation.base import SamplingParams
    from alignkit.generation.rollouts import generate_with_progress

    results = generate_with_progress(generator, [rewrite_request(p) for p in prompts],
                                     SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens, seed=0), desc="rewrite")
    return [parse_rewrite(result.completions[0].text, raw) for raw, result in zip(prompts, results)]


def rewrite_file(model: str, prompts: str, out: str, format: str | None = None, backend: str = "auto",
                 max_tokens: int = 4096, limit: int | None = None) -> tuple[int, int]:
    """`alignkit rewrite`: rewrite every prompt of a prompt file with a trained rewriter (a model folder or an endpoint
    URL) into a JSONL file of rows with `prompt` (rewritten), `raw_prompt` and `parsed`, plus the input row's fields.
    Returns (prompts rewritten, prompts that kept their raw form)."""
    from alignkit.generation.backends import load_generator
    from alignkit.generation.rollouts import read_prompt_rows, write_jsonl

    url = model.startswith(("http://", "https://"))
    rows = read_prompt_rows(prompts, format)
    if limit:
        rows = rows[:limit]
    raws = [r["prompt"] if isinstance(r["prompt"], str) else r["prompt"][-1]["content"] for r in rows]
    rewritten = rewrite_prompts(load_generator(model, "openai" if url else backend), raws, max_tokens)
    write_jsonl(out, [{**r, "prompt": new, "raw_prompt": raw, "parsed": parsed} for r, raw, (new, parsed) in zip(rows, raws, rewritten)])
    return len(rows), sum(not parsed for _, parsed in rewritten)
