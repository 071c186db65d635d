"""Prompt templates: how a record's prompt becomes the text the model is conditioned on.

- `chat`: the tokenizer's chat template with a generation prompt (chat models).
- `alpaca`: the Alpaca-style template of the official CUT code (github wwxu21/CUT templates/alpaca.json).
- `pku`: the PKU-Alignment safe-rlhf conversation format of `alpaca-7b-reproduced`, the model that wrote
  the PKU-SafeRLHF responses: "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:" (one user turn).
- `raw`: the prompt text as is (a message list is rendered as "role: content" lines).
- `urial` (or `urial:PATH` for your own prefix file): URIAL's static in-context prefix (system text and
  K = 3 examples) and the query as a `# Query:` block; generation stops at the next query marker
  (`template_stops`), the answer's closing fence is dropped (`finish_completion_text`), and the prefix is
  never cut by prompt truncation (`static_prefix`). See `alignkit.data.urial`.
- a custom format string containing `{prompt}` (and, for CUT's judgment context, `{judgment}`), e.g.
  `"### Question: {prompt}\\n### Answer:"`; one user turn.

The completion is appended to the rendered prompt with no separator; the tokenizer's EOS follows it.
"""

from __future__ import annotations

from typing import Any

from alignkit.data.records import Message, Prompt
from alignkit.data.urial import URIAL_PREFIX, URIAL_STOP, clean_urial_answer, load_urial_prefix, prefix_fingerprint, query_block

ALPACA_PLAIN = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_JUDGE = (
    "Below is an instruction that describes a task. Write a response to the instruction and the response should "
    "match the corresponding judgment.\n\n### Instruction:\n{instruction}\n\n### Judgment:\n{judgment}\n\n### Response:\n"
)
PKU = "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:"
TEMPLATES = ("chat", "alpaca", "pku", "raw", "urial")
URIAL_FILE_PREFIX = "urial:"


def check_template(template: str) -> str:
    """`template` if it is a known name or a format string with a `{prompt}` field; else ValueError."""
    if template in TEMPLATES:
        return template
    if template.startswith(URIAL_FILE_PREFIX):
        load_urial_prefix(template[len(URIAL_FILE_PREFIX):])
        return template
    if "{prompt}" not in template:
        raise ValueError(f"unknown template {template!r}: use one of {', '.join(TEMPLATES)}, urial:PATH or a format string "
                         "containing {prompt} (and optionally {judgment})")
    try:
        template.format(prompt="", judgment="")
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"template {template!r} is not a valid format string: only {{prompt}} and {{judgment}} may "
                         f"appear in braces (write {{{{ and }}}} for literal braces): {err}") from None
    return template


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    """The prompt as a list of chat-message dicts."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [m.model_dump() if isinstance(m, Message) else dict(m) for m in prompt]


def _single_instruction(prompt: Prompt, template: str) -> str:
    if isinstance(prompt, str):
        return prompt
    turns = as_messages(prompt)
    if len(turns) != 1 or turns[0]["role"] != "user":
        raise ValueError(f"the {template!r} template takes one user instruction; got a {len(turns)}-turn conversation (use template: chat)")
    return turns[0]["content"]


def static_prefix(template: str) -> str | None:
    """The text every prompt of `template` starts with, kept whole by prompt truncation and tokenised on its
    own so it is token-identical across prompts (prefix caching); None for templates without one."""
    if template == "urial":
        return URIAL_PREFIX
    if template.startswith(URIAL_FILE_PREFIX):
        return load_urial_prefix(template[len(URIAL_FILE_PREFIX):])
    return None


def is_urial(template: str) -> bool:
    """Whether `template` is URIAL's (built-in or from a prefix file)."""
    return template == "urial" or template.startswith(URIAL_FILE_PREFIX)


def template_stops(template: str) -> tuple[str, ...]:
    """Stop strings the prompt format needs (URIAL: the next query marker), added by every generator."""
    return (URIAL_STOP,) if is_urial(template) else ()


def finish_completion_text(template: str, text: str) -> str:
    """A completion's text after what the prompt format appends to an answer is removed (URIAL: the closing
    fence and trailing whitespace); other templates return it unchanged."""
    return clean_urial_answer(text) if is_urial(template) else text


def template_identity(template: str) -> str:
    """What a cache key should hold for `template`: the name, plus a hash of the text a named prefix stands for."""
    prefix = static_prefix(template)
    return template if prefix is None else f"{template}@{prefix_fingerprint(prefix)}"


def render_prompt(prompt: Prompt, template: str, tokenizer: Any = None, judgment: str | None = None) -> str:
    """Render a prompt (optionally with a judgment, for CUT's Align-N context) as model input text."""
    if is_urial(template):
        if judgment is not None:
            raise ValueError("the URIAL template has no judgment form; use a custom template with {judgment} for CUT")
        return static_prefix(template) + query_block(as_messages(prompt))
    if template == "alpaca":
        instruction = _single_instruction(prompt, template)
        if judgment is None:
            return ALPACA_PLAIN.format(instruction=instruction)
        return ALPACA_JUDGE.format(instruction=instruction, judgment=judgment)
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'chat' needs a tokenizer with a chat template (use template: alpaca or raw)")
        messages = as_messages(prompt)
        if judgment is not None:
            # CUT's chat variant: the judgment joins the last user turn.
            last = messages[-1]
            messages[-1] = {**last, "content": f"{last['content']}\n\nJudgment of the response to write: {judgment}"}
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if template == "raw":
        text = prompt if isinstance(prompt, str) else "".join(f"{m['role']}: {m['content']}\n" for m in as_messages(prompt)) + "assistant: "
        return text if judgment is None else f"{text}\nJudgment: {judgment}\n"
    if template == "pku":
        if judgment is not None:
            raise ValueError("the 'pku' template has no judgment form; use a custom template with {judgment} for CUT")
        return PKU.format(prompt=_single_instruction(prompt, template))
    check_template(template)
    if judgment is not None and "{judgment}" not in template:
        raise ValueError(f"template {template!r} has no {{judgment}} field, which CUT's judgment context needs")
    return template.format(prompt=_single_instruction(prompt, "custom"), judgment=judgment or "")
