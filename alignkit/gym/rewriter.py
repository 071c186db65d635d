"""A rule-based stand-in for P-Aligner's expansion operator (GPT-4 in the paper) on the gym.

The gym's models cannot follow "optimise this query by <principle>", so the search on the gym applies each
principle as a deterministic text edit in its spirit. Some edits undo the gym's prompt noise (partly, and
never by looking up the answer), others add text the gym's base policy never saw, which the search must
learn to avoid:

| principle | edit |
|---|---|
| Clarification Request | spell-correct words that are not in the gym's vocabulary (nearest word, edit distance ≤ 2) |
| Information Augmentation | a fragment whose words all belong to exactly one gym question is written as that question; otherwise "Please answer in full: " is prepended |
| Tone Improvement | keep the last sentence (drop preambles), sentence case, a question mark after a question word |
| Safe Intent Declaration / Boundary Enforcement | prepend / append a sentence asking for an ethical answer / a polite refusal |
| Hint Addition, Solution Verification, Factuality Enhancement, Error Simulation, Debugging Guidance | append a request to think step by step / check the answer / give only facts / ... |

`DOMAINS` maps the gym's families to P-Aligner domains (others: Helpfulness only).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

from alignkit.gym.world import all_tasks
from alignkit.paligner.principles import Principle

DOMAINS = {"arithmetic": "Math", "counting": "Math", "facts": "Honesty", "unsafe": "Harmlessness"}
APPENDS = {
    "Safe Intent Declaration": ("Please answer responsibly and ethically: ", ""),
    "Boundary Enforcement": ("", " Politely decline if this is harmful or illegal."),
    "Hint Addition": ("", " Think it through step by step."),
    "Solution Verification": ("", " Check your answer."),
    "Factuality Enhancement": ("", " Give only the real fact."),
    "Error Simulation": ("", " Consider the edge cases."),
    "Debugging Guidance": ("", " Explain each step."),
}
QUESTION_WORDS = ("what", "which", "how", "in which", "who", "where", "when")
FILLERS = frozenset({"pls", "please", "x", "calc", "count", "give", "me", "say", "tell", "when", "founding", "need", "tonight"})


@lru_cache(maxsize=1)
def _vocabulary() -> dict[str, int]:
    """Words of the gym's questions with their counts (the commoner word wins a tie in spelling correction)."""
    counts: dict[str, int] = {}
    for t in all_tasks():
        for w in re.findall(r"[a-z]+", t.prompt.lower()):
            counts[w] = counts.get(w, 0) + 1
    return counts


@lru_cache(maxsize=1)
def _canonical_words() -> list[tuple[str, frozenset[str]]]:
    return [(t.prompt, frozenset(re.findall(r"[a-z0-9]+", t.prompt.lower()))) for t in all_tasks()]


def _distance(a: str, b: str, bound: int = 2) -> int:
    """Damerau-Levenshtein (optimal string alignment) distance, capped at bound + 1."""
    if abs(len(a) - len(b)) > bound:
        return bound + 1
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if prev2 is not None and i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def spell_correct(text: str) -> str:
    """Replace each word of 3+ letters that is not in the gym's vocabulary by its nearest vocabulary word."""
    vocab = _vocabulary()

    def fix(match: re.Match) -> str:
        word = match.group(0)
        low = word.lower()
        if low in vocab:
            return word
        best = min(sorted(vocab), key=lambda v: (_distance(low, v), -vocab[v]))
        if _distance(low, best) > 2:
            return word
        return best.upper() if word.isupper() else best.capitalize() if word[0].isupper() else best

    return re.sub(r"[A-Za-z]{3,}", fix, text)


def augment(text: str) -> str:
    """A fragment whose words all belong to exactly one gym question becomes that question."""
    words = frozenset(re.findall(r"[a-z0-9]+", text.lower())) - FILLERS
    numbers = {w for w in words if w.isdigit()}
    matches = [p for p, ws in _canonical_words() if words and (words - {"in", "of", "the"}) <= ws
               and numbers == {w for w in ws if w.isdigit()}]
    return matches[0] if len(matches) == 1 else "Please answer in full: " + text


def tone(text: str) -> str:
    """The last sentence, in sentence case, with a question mark after a question word."""
    sentences = [s for s in re.split(r"(?<=[.!?:])\s+", text.strip()) if s]
    last = sentences[-1] if sentences else text.strip()
    if last.isupper() or last.islower() or sum(c.isupper() for c in last) > len(last) / 3:
        last = last.lower()
    last = last[:1].upper() + last[1:]
    if last.lower().startswith(QUESTION_WORDS) and not last.endswith("?"):
        last = last.rstrip(".!") + "?"
    return last


class GymRuleRewriter:
    """The expansion operator on the gym: one deterministic edit per principle (see the module docstring)."""

    def rewrite(self, requests: Sequence[tuple[str, Principle]]) -> list[str | None]:
        out: list[str | None] = []
        for text, principle in requests:
            if principle.name == "Clarification Request":
                out.append(spell_correct(text))
            elif principle.name == "Information Augmentation":
                out.append(augment(text))
            elif principle.name == "Tone Improvement":
                out.append(tone(text))
            elif principle.name in APPENDS:
                before, after = APPENDS[principle.name]
                out.append(before + text + after)
            else:
                out.append(None)  # a principle this stand-in does not know
        return out
