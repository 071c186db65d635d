"""One tokenisation for training, scoring and sampling.

- **Prompts** are rendered with a template and tokenised alone, then left-truncated to
  `max_prompt_length` (`truncate_prompt`). Every generator and every trainer use this same function, so
  a sequence is scored under exactly the token ids it was sampled from.
- **Completions** are tokenised *together with* their prompt, and the joint ids are split at the prompt
  boundary. Tokenising the completion on its own gives different ids with SentencePiece tokenizers
  (Llama-2, Mistral add a word-start marker to the first token) and whenever the template ends without a
  separator: the model would then be trained on token ids it never produces at inference.
- **Fallback** (the tokenizer merges the prompt's last token with the completion's first, so the prompt's
  ids are not a prefix of the joint ids): the boundary moves left to the longest common prefix, as TRL's
  DPO tokenisation does; the merged token is then scored as part of the completion. Such records are
  counted (`stats["boundary_merged"]`) and reported by the engine.
- **Static prefixes** (URIAL's in-context prefix, `templates.static_prefix`) are kept whole: truncation
  cuts the per-prompt part after them, and `max_prompt_length` still bounds the whole prompt (prefix
  included), so it must exceed the prefix's length. The prefix is tokenised on its own and the prompt's
  ids start with exactly those ids (joint tokenisation when it keeps them, else prefix ids + part ids),
  so every prompt shares a token-identical prefix that a prefix cache can reuse.
- EOS is appended to every completion; completions are right-truncated so prompt + completion fits
  `max_length`. Truncations are counted in `stats` too.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Sequence

from alignkit.data.records import Prompt
from alignkit.data.templates import as_messages, render_prompt, static_prefix


def truncate_prompt(ids: Sequence[int], max_prompt_length: int | None, keep: int = 0) -> list[int]:
    """The last `max_prompt_length` prompt ids (the end of the prompt sits next to the response); the first
    `keep` ids (a template's static prefix) are always kept and count towards the limit."""
    ids = list(ids)
    if max_prompt_length is None or len(ids) <= max_prompt_length:
        return ids
    if keep <= 0:
        return ids[-max_prompt_length:]
    if max_prompt_length <= keep:
        raise ValueError(f"max_prompt_length={max_prompt_length} leaves no room for the query after the template's "
                         f"{keep}-token static prefix (URIAL); raise it above {keep} (prefix + the longest query)")
    return ids[:keep] + ids[len(ids) - (max_prompt_length - keep):]


def adds_special_tokens(template: str) -> bool:
    """Chat templates carry their own BOS; every other template gets the tokenizer's special tokens."""
    return template != "chat"


def _special_suffix(tokenizer: Any) -> list[int]:
    """Ids the tokenizer appends after the text when it adds special tokens (e.g. an automatic EOS)."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[start + len(plain) :]
    return []


def _text_ids(tokenizer: Any, text: str, add_special_tokens: bool, suffix: Sequence[int]) -> list[int]:
    ids = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
    if suffix and ids[-len(suffix):] == list(suffix):
        ids = ids[: -len(suffix)]
    return ids


def prefixed_text_ids(tokenizer: Any, text: str, template: str, add_special_tokens: bool,
                      suffix: Sequence[int] = ()) -> tuple[list[int], int]:
    """(ids of model-input text, length of its static prefix in ids): with a static prefix the ids start
    with the prefix's own ids, so they are the same for every prompt (0 and plain ids without one)."""
    prefix = static_prefix(template)
    if prefix is None or not text.startswith(prefix):
        return _text_ids(tokenizer, text, add_special_tokens, suffix), 0
    head = _text_ids(tokenizer, prefix, add_special_tokens, suffix)
    ids = _text_ids(tokenizer, text, add_special_tokens, suffix)
    if ids[: len(head)] != head:  # the tokenizer merged across the boundary: split it there instead
        ids = head + tokenizer(text[len(prefix):], add_special_tokens=False)["input_ids"]
    return ids, len(head)


def encode_prompt(tokenizer: Any, prompt: Prompt, template: str, max_prompt_length: int | None = None,
                  judgment: str | None = None) -> list[int]:
    """Token ids of a rendered prompt, left-truncated to `max_prompt_length` (the rule every generator uses)."""
    text = render_prompt(prompt, template, tokenizer, judgment=judgment)
    suffix = _special_suffix(tokenizer) if adds_special_tokens(template) else []
    ids, keep = prefixed_text_ids(tokenizer, text, template, adds_special_tokens(template), suffix)
    return truncate_prompt(ids, max_prompt_length, keep)


class PromptCompletionTokenizer:
    """Render a prompt with a template and tokenise it jointly with one or more completions."""

    def __init__(self, tokenizer: Any, template: str, max_length: int, max_prompt_length: int) -> None:
        if max_prompt_length >= max_length:
            raise ValueError(f"max_prompt_length ({max_prompt_length}) must be below max_length ({max_length})")
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.add_special_tokens = adds_special_tokens(template)
        self._suffix = _special_suffix(tokenizer) if self.add_special_tokens else []
        self.stats: collections.Counter = collections.Counter()
        if self.static_prefix_length and self.static_prefix_length >= max_prompt_length:
            raise ValueError(f"max_prompt_length={max_prompt_length} cannot hold the template's {self.static_prefix_length}-token "
                             "static prefix (URIAL) plus a query: it bounds the whole prompt and the prefix is never cut")

    def text_ids(self, text: str) -> list[int]:
        """Token ids of model-input text (special tokens as the template wants, no automatic suffix; a static
        prefix tokenised on its own)."""
        return prefixed_text_ids(self.tokenizer, text, self.template, self.add_special_tokens, self._suffix)[0]

    @functools.cached_property
    def static_prefix_length(self) -> int:
        """Ids of the template's static prefix (0 without one): kept whole when prompts are truncated."""
        prefix = static_prefix(self.template)
        return 0 if prefix is None else prefixed_text_ids(self.tokenizer, prefix, self.template, self.add_special_tokens, self._suffix)[1]

    def encode_prompt(self, prompt: Prompt, judgment: str | None = None) -> list[int]:
        """Prompt ids, left-truncated to max_prompt_length (counted in `stats`)."""
        ids = self.text_ids(render_prompt(prompt, self.template, self.tokenizer, judgment=judgment))
        if len(ids) > self.max_prompt_length:
            self.stats["prompt_truncated"] += 1
        return truncate_prompt(ids, self.max_prompt_length, self.static_prefix_length)

    def truncate_completion(self, ids: Sequence[int], budget: int) -> list[int]:
        """Completion ids right-truncated to `budget` tokens (counted in `stats`)."""
        ids = list(ids)
        if len(ids) > budget:
            self.stats["completion_truncated"] += 1
            return ids[:budget]
        return ids

    def joint(self, prompt: Prompt, completions: Sequence[str], judgment: str | None = None) -> tuple[list[int], int, list[list[int]]]:
        """(full prompt ids, boundary, completion ids...) before truncation and without EOS: each completion
        tokenised jointly with the prompt; `boundary` < len(prompt ids) when the tokenizer merged across it."""
        text = render_prompt(prompt, self.template, self.tokenizer, judgment=judgment)
        prompt_ids = self.text_ids(text)
        joints = [self.text_ids(text + c) for c in completions]
        boundary = len(prompt_ids)
        for joint in joints:
            common = 0
            for a, b in zip(prompt_ids, joint):
                if a != b:
                    break
                common += 1
            boundary = min(boundary, common)
        if boundary < len(prompt_ids):
            self.stats["boundary_merged"] += 1
        return prompt_ids, boundary, [joint[boundary:] for joint in joints]

    def encode(self, prompt: Prompt, completions: Sequence[str], judgment: str | None = None) -> tuple[list[int], ...]:
        """(prompt_ids, completion_ids...): each completion tokenised jointly with the prompt, plus EOS, every
        prompt + completion within max_length. The prompt is the same for every completion."""
        prompt_ids, boundary, completion_ids = self.joint(prompt, completions, judgment)
        if boundary > self.max_prompt_length:
            self.stats["prompt_truncated"] += 1
        keep = self.static_prefix_length if boundary >= self.static_prefix_length else 0
        head = truncate_prompt(prompt_ids[:boundary], self.max_prompt_length, keep)
        budget = self.max_length - len(head)
        eos = self.tokenizer.eos_token_id
        return (head, *(self.truncate_completion(ids + [eos], budget) for ids in completion_ids))

    def encode_conversation(self, prompt: Prompt, completion: str) -> list[int]:
        """Token ids of the whole conversation, the prompt's turns and the completion as the last assistant turn,
        for training on every token (the released ADPA recipes' SFT): with the `chat` template the conversation
        rendered by the chat template as it stands (its own BOS and turn ends, no special tokens added, as TRL's
        SFTTrainer with `add_special_tokens: false`); with any other template the rendered prompt, the completion
        and EOS. Right-truncated to max_length (counted in `stats`)."""
        if self.template == "chat":
            messages = as_messages(prompt) + [{"role": "assistant", "content": completion}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = self.text_ids(render_prompt(prompt, self.template, self.tokenizer) + completion) + [self.tokenizer.eos_token_id]
        if len(ids) > self.max_length:
            self.stats["conversation_truncated"] += 1
            ids = ids[: self.max_length]
        return ids

    def report(self) -> str:
        """One line on what tokenisation changed (empty when nothing was truncated or merged)."""
        parts = []
        if self.stats["prompt_truncated"]:
            parts.append(f"{self.stats['prompt_truncated']} prompts left-truncated to max_prompt_length={self.max_prompt_length}")
        if self.stats["completion_truncated"]:
            parts.append(f"{self.stats['completion_truncated']} completions right-truncated to fit max_length={self.max_length}")
        if self.stats["conversation_truncated"]:
            parts.append(f"{self.stats['conversation_truncated']} conversations right-truncated to max_length={self.max_length}")
        if self.stats["boundary_merged"]:
            parts.append(f"{self.stats['boundary_merged']} prompts whose last token the tokenizer merged with the "
                         "completion (boundary moved left, TRL's rule)")
        return "; ".join(parts)
