"""Verdicts and the strict parsers that turn a judge's raw output into one.

Every verdict keeps the judge's raw output, the parsed value and a parse status:
- `ok`: parsed with confidence;
- `low_confidence`: parsed from a hedged answer ("maybe correct");
- `unparsed`: the output matched no accepted form. Its value is None: it is counted and listed in the
  report, never silently mapped to a label;
- `inconsistent` (pairwise only): the two presentation orders disagreed, so the pair is a tie (or, under
  the `average` order rule, the mean of the two orders).

Binary parsing follows Judging the Judges (`LLMEvaluator._parse_eval`): lower-case, strip, then test
the prefixes "correct", "incorrect", "maybe correct", "maybe incorrect". Leading punctuation, quotes and
markdown emphasis are stripped first, the only leniency added here.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("ok", "low_confidence", "unparsed", "inconsistent")
CORRECT, INCORRECT = "correct", "incorrect"


@dataclass
class Verdict:
    """One judgment. `value`: "correct"/"incorrect" (reference), a float score (pointwise, reward model),
    or P(candidate wins) in {0, 0.5, 1} (pairwise). `raw` holds every judge output used."""

    value: Any
    status: str
    raw: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown verdict status {self.status!r}; known: {', '.join(STATUSES)}")

    @property
    def parsed(self) -> bool:
        return self.status != "unparsed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_LEAD = re.compile(r"^[\s\"'`*_.:>\-\[\(]+")


def _clean(text: str) -> str:
    return _LEAD.sub("", text.strip().lower())


def parse_binary(text: str) -> Verdict:
    """correct / incorrect / maybe correct / maybe incorrect, by prefix; anything else is unparsed."""
    t = _clean(text)
    for prefix, value, status in (("incorrect", INCORRECT, "ok"), ("correct", CORRECT, "ok"),
                                  ("maybe incorrect", INCORRECT, "low_confidence"), ("maybe correct", CORRECT, "low_confidence")):
        if t.startswith(prefix):
            return Verdict(value, status, [text])
    return Verdict(None, "unparsed", [text])


_TAG = re.compile(r"<evaluation>(.*?)</evaluation>", re.IGNORECASE | re.DOTALL)


def parse_tagged_binary(text: str) -> Verdict:
    """The chain-of-thought variant: the binary verdict inside the last <evaluation>...</evaluation>."""
    found = _TAG.findall(text)
    if not found:
        return Verdict(None, "unparsed", [text])
    verdict = parse_binary(found[-1])
    return Verdict(verdict.value, verdict.status, [text])


_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_BARE_NUMBER = re.compile(r"^\s*(?:rating\s*:\s*)?(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*\.?\s*$", re.IGNORECASE)


def parse_rating(text: str, low: float = 1, high: float = 10) -> Verdict:
    """A rating as "[[N]]" anywhere, or an output that is only a number ("7", "Rating: 7", "7/10");
    out-of-range or several different bracketed ratings are unparsed."""
    found = {float(x) for x in _RATING.findall(text)}
    if len(found) > 1:
        return Verdict(None, "unparsed", [text], {"reason": "several ratings"})
    if not found:
        bare = _BARE_NUMBER.match(text)
        found = {float(bare.group(1))} if bare else set()
    if not found:
        return Verdict(None, "unparsed", [text])
    (value,) = found
    if not low <= value <= high:
        return Verdict(None, "unparsed", [text], {"reason": f"rating {value:g} outside [{low:g}, {high:g}]"})
    return Verdict(value, "ok", [text])


_CHOICE = re.compile(r"^(?:response\s+)?([ab])(?:\b|$)", re.IGNORECASE)


def parse_choice(text: str) -> str | None:
    """'A' or 'B' (also 'Response A', '[[A]]', '**B**'), else None."""
    t = _clean(text)
    bracketed = re.fullmatch(r"\[?\[?([ab])\]?\]?\.?", t)
    if bracketed:
        return bracketed.group(1).upper()
    m = _CHOICE.match(t)
    return m.group(1).upper() if m else None


_BRACKETED = re.compile(r"\[\[\s*([abc])\s*\]\]", re.IGNORECASE)


def parse_bracketed_choice(text: str) -> str | None:
    """MT-Bench's pairwise verdict: "[[A]]", "[[B]]" or "[[C]]" (a tie) anywhere in the output, e.g. after an
    explanation; 'A', 'B' or 'C', else None. Unlike MT-Bench, which takes the first of A, B, C it finds in
    that order, an output with two different bracketed verdicts is None (unparsed)."""
    found = {m.upper() for m in _BRACKETED.findall(text)}
    return found.pop() if len(found) == 1 else None
