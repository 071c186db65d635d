"""Lexical reference judges (Judging the Judges §2.2), case-insensitive as in its final configuration.

- `exact`: correct iff the lower-cased response equals a lower-cased reference.
- `contains`: correct iff a lower-cased reference is a substring of the lower-cased response.
- `normalized-exact` (the "eleutherai" variant): truncate at the first newline, "." or ",", strip
  punctuation and the articles a/an/the, collapse whitespace, lower-case, then compare exactly.

Every judge first truncates and strips the response (`alignkit.judge.truncation`; default: cut at the
first "\\nQ:" and strip, as the official pipeline does before every evaluator), or applies a callable
`truncate`. Lexical verdicts always parse.
"""

from __future__ import annotations

import re
import string
from typing import Callable, Sequence

from alignkit.data.records import JudgeItem
from alignkit.judge.truncation import DEFAULT_TRUNCATION, truncate_response
from alignkit.judge.verdict import CORRECT, INCORRECT, Verdict


def truncate_at_next_question(response: str) -> str:
    """Cut a response at the first "\\nQ:" and strip it (a few-shot exam-taker continuing with the next question)."""
    return truncate_response(response, "newlinequestion")


_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """The normalised-EM form of an answer."""
    text = re.split(r"[\n.,]", text, maxsplit=1)[0]
    text = text.translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split()).lower()


def _references(item: JudgeItem) -> list[str]:
    refs = item.reference
    if refs is None or refs == [] or refs == "":
        raise ValueError(f"lexical judges need a reference answer; item {item.question!r} has none")
    return [refs] if isinstance(refs, str) else list(refs)


class LexicalJudge:
    """A reference-based correctness judge by string comparison."""

    KINDS = ("exact", "contains", "normalized-exact")

    def __init__(self, kind: str = "contains", truncate: str | Callable[[str], str] | None = DEFAULT_TRUNCATION) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown lexical judge {kind!r}; known: {', '.join(self.KINDS)}")
        self.kind = kind
        if isinstance(truncate, str):
            preset = truncate
            self.truncate: Callable[[str], str] = lambda s: truncate_response(s, preset)
            truncate_response("", preset)  # an unknown preset fails here
        else:
            self.truncate = truncate or (lambda s: s)
        self.name = kind

    def _match(self, response: str, refs: Sequence[str]) -> bool:
        if self.kind == "exact":
            return response.lower() in {r.lower() for r in refs}
        if self.kind == "contains":
            return any(r.lower() in response.lower() for r in refs)
        return normalize_answer(response) in {normalize_answer(r) for r in refs}

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        out = []
        for item in items:
            response = self.truncate(item.answer)
            label = CORRECT if self._match(response, _references(item)) else INCORRECT
            out.append(Verdict(label, "ok", [response]))
        return out
