"""Prompt templates: how a record's prompt becomes the text the model is conditioned on.

- `chat`: the tokenizer's chat template with a generation prompt (chat models).
- `alpaca`: the Alpaca-style template of the official CUT code (github wwxu21/CUT templates/alpaca.json).
- `pku`: the PKU-Alignment safe-rlhf conversation format of `alpaca-7b-reproduced`, the model that wrote
  the PKU-SafeRLHF responses: "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:" (one user turn).
- `raw`: the prompt text as is (a message list is rendered as "role: content" lines).
- a custom format string containing `{prompt}` (and, for CUT's judgment context, `{judgment}`), e.g.
  `"### Question: {prompt}\\n### Answer:"`; one user turn.

The completion is appended to the rendered prompt with no separator; the tokenizer's EOS follows it.
"""

from __future__ import annotations

from typing import Any

from alignkit.data.records import Message, Prompt

ALPACA_PLAIN = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_JUDGE = (
    "Below is an instruction that describes a task. Write a response to the instruction and the response should "
    "match the corresponding judgment.\n\n### Instruction:\n{instruction}\n\n### Judgment:\n{judgment}\n\n### Response:\n"
)
PKU = "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:"
TEMPLATES = ("chat", "alpaca", "pku", "raw")


def check_template(template: str) -> str:
    """`template` if it is a known name or a format string with a `{prompt}` field; else ValueError."""
    if template in TEMPLATES:
        return template
    if "{prompt}" not in template:
        raise ValueError(f"unknown template {template!r}: use one of {', '.join(TEMPLATES)} or a format string "
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


def render_prompt(prompt: Prompt, template: str, tokenizer: Any = None, judgment: str | None = None) -> str:
    """Render a prompt (optionally with a judgment, for CUT's Align-N context) as model input text."""
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
