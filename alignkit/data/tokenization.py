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
- EOS is appended to every completion; completions are right-truncated so prompt + completion fits
  `max_length`. Truncations are counted in `stats` too.
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

from alignkit.data.records import Prompt
from alignkit.data.templates import render_prompt


def truncate_prompt(ids: Sequence[int], max_prompt_length: int | None) -> list[int]:
    """The last `max_prompt_length` prompt ids (the end of the prompt sits next to the response)."""
    ids = list(ids)
    return ids if max_prompt_length is None or len(ids) <= max_prompt_length else ids[-max_prompt_length:]


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


def encode_prompt(tokenizer: Any, prompt: Prompt, template: str, max_prompt_length: int | None = None,
                  judgment: str | None = None) -> list[int]:
    """Token ids of a rendered prompt, left-truncated to `max_prompt_length` (the rule every generator uses)."""
    text = render_prompt(prompt, template, tokenizer, judgment=judgment)
    ids = tokenizer(text, add_special_tokens=adds_special_tokens(template))["input_ids"]
    suffix = _special_suffix(tokenizer) if adds_special_tokens(template) else []
    if suffix and ids[-len(suffix):] == suffix:
        ids = ids[: -len(suffix)]
    return truncate_prompt(ids, max_prompt_length)


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

    def text_ids(self, text: str) -> list[int]:
        """Token ids of model-input text (special tokens as the template wants, no automatic suffix)."""
        ids = self.tokenizer(text, add_special_tokens=self.add_special_tokens)["input_ids"]
        if self._suffix and ids[-len(self._suffix):] == self._suffix:
            ids = ids[: -len(self._suffix)]
        return ids

    def encode_prompt(self, prompt: Prompt, judgment: str | None = None) -> list[int]:
        """Prompt ids, left-truncated to max_prompt_length (counted in `stats`)."""
        ids = self.text_ids(render_prompt(prompt, self.template, self.tokenizer, judgment=judgment))
        if len(ids) > self.max_prompt_length:
            self.stats["prompt_truncated"] += 1
        return truncate_prompt(ids, self.max_prompt_length)

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
        head = truncate_prompt(prompt_ids[:boundary], self.max_prompt_length)
        budget = self.max_length - len(head)
        eos = self.tokenizer.eos_token_id
        return (head, *(self.truncate_completion(ids + [eos], budget) for ids in completion_ids))

    def report(self) -> str:
        """One line on what tokenisation changed (empty when nothing was truncated or merged)."""
        parts = []
        if self.stats["prompt_truncated"]:
            parts.append(f"{self.stats['prompt_truncated']} prompts left-truncated to max_prompt_length={self.max_prompt_length}")
        if self.stats["completion_truncated"]:
            parts.append(f"{self.stats['completion_truncated']} completions right-truncated to fit max_length={self.max_length}")
        if self.stats["boundary_merged"]:
            parts.append(f"{self.stats['boundary_merged']} prompts whose last token the tokenizer merged with the "
                         "completion (boundary moved left, TRL's rule)")
        return "; ".join(parts)
