"""Principles as data: the domain → principles table that P-Aligner's search rewrites instructions by.

Each principle is a name and a rewrite direction (our own wording of the paper's ten principles, appendix C).
A direction completes the sentence "You should optimize this prompt by ..." (the rewrite prompts of
`alignkit.paligner.rewrite`), so, as in the official `online_synthesis/rules/rule_P-Aligner.json`, it is a
gerund phrase ending with its own full stop ("making it clearer ..."), not an imperative ("make it clearer"
would read "by make it clearer"). An item's action set is its domain's principles plus the Helpfulness
principles (only Helpfulness for items of another domain), as in the official code. A user may supply their
own table as YAML or JSON; the official rules file loads as it is (its `content` is read as `description`):

```yaml
Helpfulness:
  - {name: Clarification Request, description: "making the request clearer and more specific, so the answer can be detailed."}
Math:
  - {name: Hint Addition, description: "adding a hint or asking to think through the steps first."}
```
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

log = logging.getLogger("alignkit")


@dataclass(frozen=True)
class Principle:
    """One rewrite action: a name and the direction a rewrite takes."""

    name: str
    description: str
    domain: str


HELPFULNESS = "Helpfulness"
DEFAULT_TABLE: dict[str, list[tuple[str, str]]] = {
    "Harmlessness": [
        ("Safe Intent Declaration", "adding a short preface that asks for a respectful, ethical answer free of harmful content."),
        ("Boundary Enforcement", "appending an explicit instruction to decline politely anything that would violate privacy or ethics."),
    ],
    HELPFULNESS: [
        ("Clarification Request", "making it clearer and more instructive, so that the answer can go into detail."),
        ("Information Augmentation", "making it more detailed and informative, for example by adding the background it leaves implicit."),
        ("Tone Improvement", "improving its tone so that it is more polite, helpful, honest and friendly."),
    ],
    "Honesty": [
        ("Factuality Enhancement", "asking for objective facts rather than invented material or subjective interpretation."),
    ],
    "Coding & Debugging": [
        ("Error Simulation", "adding a request to consider the common bugs and edge cases it involves."),
        ("Debugging Guidance", "asking for step-by-step debugging instructions, error analysis and troubleshooting tips."),
    ],
    "Math": [
        ("Hint Addition", "introducing hints, examples or a request to think through the steps first, to make the problem easier."),
        ("Solution Verification", "asking the answer to verify its result or to explain its reasoning in detail."),
    ],
}


def reads_as_gerund(description: str) -> bool:
    """Whether a direction completes "optimize this prompt by ..." (its first word ends in -ing)."""
    first = description.strip().split(maxsplit=1)[0].lower() if description.strip() else ""
    return first.endswith("ing")


class PrincipleTable:
    """The domain → principles table and the per-item action sets."""

    def __init__(self, table: dict[str, list[tuple[str, str]]] | None = None) -> None:
        table = table or DEFAULT_TABLE
        if HELPFULNESS not in table:
            raise ValueError(f"a principle table needs a {HELPFULNESS!r} domain (every item's actions include it)")
        self.domains = {d: [Principle(n, desc, d) for n, desc in items] for d, items in table.items()}
        names = [p.name for ps in self.domains.values() for p in ps]
        if len(set(names)) != len(names):
            raise ValueError(f"principle names must be unique across domains, got {names}")
        self.by_name = {p.name: p for ps in self.domains.values() for p in ps}
        odd = [p.name for p in self.by_name.values() if not reads_as_gerund(p.description)]
        if odd:
            log.warning("principles %s: a direction completes 'You should optimize this prompt by ...', so it should be a "
                        "gerund phrase ('making it clearer.'), as in the official rules", ", ".join(odd))

    @classmethod
    def load(cls, path: str | Path) -> "PrincipleTable":
        """A table from a YAML or JSON file: domain -> list of {name, description} (or the official rules file's
        {name, content})."""
        path = Path(path)
        raw = (json.loads if path.suffix == ".json" else yaml.safe_load)(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of domain -> list of principles")
        table = {}
        for domain, items in raw.items():
            if not isinstance(items, list) or not all(isinstance(i, dict) and "name" in i and ({"description", "content"} & set(i))
                                                      for i in items):
                raise ValueError(f"{path}: {domain}: expected a list of {{name, description}} (or {{name, content}}) entries")
            table[domain] = [(i["name"], i.get("description", i.get("content"))) for i in items]
        return cls(table)

    def actions(self, domain: str | None) -> list[Principle]:
        """The principles an item of `domain` may be rewritten by: the domain's own plus Helpfulness."""
        own = [] if domain in (None, HELPFULNESS) else self.domains.get(domain, [])
        return own + self.domains[HELPFULNESS]
