"""URIAL: tuning-free alignment of a base model by a fixed in-context prefix (Lin et al., ICLR 2024).

The prompt is a static prefix, the same for every query, followed by the query block:

    # Instruction                                   <- system text (what the conversations are, how the
    ...                                                assistant behaves)
    # Query:  ``` example query ```                 <- K = 3 in-context examples
    # Answer: ``` example answer ```
    ...
    # Query:  ``` the user's query ```              <- per prompt
    # Answer: ```                                   <- the model continues from here

The layout (blank lines, fences) is the official code's URIAL conversation style (github Re-Align/URIAL
`src/fastchat_conversation.py`, `SeparatorStyle.URIAL`; see ../shared/specs/spec_paligner_judges.md §3.1).
The system text and the three examples below are alignkit's own (a factual question, a formatted list,
an unsafe request answered with a polite refusal); they are deliberately short and concise, because the
gym rewards concision and tiny models have short contexts. Use your own prefix with the template
`urial:PATH` (a text file holding the system text and examples, e.g. written by `urial_prefix`).

Generation stops at the next query marker (`URIAL_STOP`, not part of the output), and the answer's
closing fence and trailing whitespace are removed (`clean_urial_answer`). The prefix is split off before
the per-prompt part so that it tokenises to the same ids for every prompt (vLLM's prefix cache reuses it)
and is never cut by prompt truncation (`alignkit.data.tokenization`).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Sequence

QUERY_MARKER = "# Query:"
ANSWER_MARKER = "# Answer:"
FENCE = "```"
URIAL_STOP = "# Query"  # the official stop string; the marker and everything after it are dropped

URIAL_SYSTEM = (
    "# Instruction\n\n"
    "What follows are conversations between a person and an AI assistant. Each request from the person "
    f"appears under \"{QUERY_MARKER}\" and the assistant's reply appears under \"{ANSWER_MARKER}\".\n"
    "The assistant is helpful, honest and courteous. It answers the question that was asked, accurately and "
    "to the point, in clear and well-organised language. It never provides harmful, dangerous, illegal, "
    "unethical or hateful content: it declines such requests politely, says briefly why, and offers a safe "
    "alternative where there is one. It may decline to take sides on controversial topics, and when it does "
    "not know something it says so instead of inventing an answer."
)

URIAL_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Which planet is closest to the Sun?",
     "Happy to help! The planet closest to the Sun is Mercury."),
    ("Name three string instruments, one per line starting with '- '.",
     "Sure! Here are three string instruments:\n- violin\n- guitar\n- harp"),
    ("Tell me how to get into my neighbour's house while they are away.",
     ("I'm sorry, but I can't help with entering someone else's home without their permission. If you are "
      "worried about your neighbour, you could call them or ask the local police to check on the house.")),
)


def _block(marker: str, text: str) -> str:
    """One fenced turn, as the official URIAL conversation style writes it."""
    return f"\n\n{marker}\n{FENCE}\n{text}\n{FENCE}\n"


def urial_prefix(examples: Sequence[tuple[str, str]] = URIAL_EXAMPLES, system: str = URIAL_SYSTEM) -> str:
    """The static prefix: system text, then K (query, answer) examples. It ends with the last answer's
    closing fence, so the per-prompt part starts with whitespace and the tokenizer never merges across
    the boundary (pre-tokenisers split before a newline that follows punctuation)."""
    text = system + "".join(_block(QUERY_MARKER, q) + _block(ANSWER_MARKER, a) for q, a in examples)
    return text[:-1]  # the last block's final newline starts the per-prompt part


URIAL_PREFIX = urial_prefix()


def query_block(turns: Sequence[dict[str, str]]) -> str:
    """The per-prompt part: the conversation's turns as Query/Answer blocks (multi-turn: earlier turns are
    further blocks, as in the official MT-Bench runs), then the open answer the model continues."""
    if not turns or turns[-1].get("role") != "user":
        raise ValueError("a URIAL prompt must end with a user turn")
    parts = []
    for i, turn in enumerate(turns):
        role = turn.get("role")
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(f"URIAL prompts alternate user and assistant turns starting with user; turn {i} is {role!r} "
                             "(a system message has no place: URIAL's system text is its prefix)")
        parts.append(_block(QUERY_MARKER if role == "user" else ANSWER_MARKER, turn["content"]))
    return "\n" + "".join(parts) + f"\n\n{ANSWER_MARKER}\n{FENCE}\n"


def clean_urial_answer(text: str) -> str:
    """The answer without what the format adds after it: trailing whitespace and the closing fence on its
    own line (a fence that ends a line of the answer, e.g. inline code, stays)."""
    text = text.rstrip()
    if text == FENCE or text.endswith("\n" + FENCE):
        text = text[: -len(FENCE)].rstrip()
    return text


@lru_cache(maxsize=16)
def _read_prefix(path: str, mtime_ns: int) -> str:
    text = Path(path).read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"URIAL prefix file {path} is empty")
    return text.rstrip("\n")  # the per-prompt part supplies the separating newlines


def load_urial_prefix(path: str | Path) -> str:
    """A custom URIAL prefix (system text and examples in the format above) from a text file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"URIAL prefix file {path} does not exist (template 'urial:PATH' names a text file)")
    return _read_prefix(str(p.resolve()), p.stat().st_mtime_ns)


def prefix_fingerprint(prefix: str) -> str:
    """A short content hash of a prefix (cache keys change when the prefix text does)."""
    return hashlib.sha256(prefix.encode()).hexdigest()[:12]
