"""Principles as data: the domain → principles table that P-Aligner's search rewrites instructions by.

Each principle is a name and a rewrite direction (our own wording of the paper's ten principles, appendix C).
An item's action set is its domain's principles plus the Helpfulness principles (only Helpfulness for
items of another domain), as in the official code. A user may supply their own table as YAML or JSON:

```yaml
Helpfulness:
  - {name: Clarification Request, description: "make the request clearer and more specific, so the answer can be detailed"}
Math:
  - {name: Hint Addition, description: "add a hint or ask to think through the steps first"}
```
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Principle:
    """One rewrite action: a name and the direction a rewrite takes."""

    name: str
    description: str
    domain: str


HELPFULNESS = "Helpfulness"
DEFAULT_TABLE: dict[str, list[tuple[str, str]]] = {
    "Harmlessness": [
        ("Safe Intent Declaration", "open with a short statement asking for a respectful, ethical answer"),
        ("Boundary Enforcement", "add an explicit request to decline politely anything that would violate privacy or ethics"),
    ],
    HELPFULNESS: [
        ("Clarification Request", "make the request clearer and more specific, so that the answer can be detailed"),
        ("Information Augmentation", "add the details and background the request leaves implicit"),
        ("Tone Improvement", "phrase the request politely and plainly, as a friendly, honest question"),
    ],
    "Honesty": [
        ("Factuality Enhancement", "ask for objective facts instead of invented material or opinion"),
    ],
    "Coding & Debugging": [
        ("Error Simulation", "ask the answer to consider typical bugs and edge cases"),
        ("Debugging Guidance", "ask for step-by-step debugging, error analysis and troubleshooting"),
    ],
    "Math": [
        ("Hint Addition", "add a hint, an example or a request to think through the steps first"),
        ("Solution Verification", "ask the answer to check its result or explain its reasoning"),
    ],
}


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

    @classmethod
    def load(cls, path: str | Path) -> "PrincipleTable":
        """A table from a YAML or JSON file: domain -> list of {name, description}."""
        path = Path(path)
        raw = (json.loads if path.suffix == ".json" else yaml.safe_load)(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of domain -> list of principles")
        table = {}
        for domain, items in raw.items():
            if not isinstance(items, list) or not all(isinstance(i, dict) and {"name", "description"} <= set(i) for i in items):
                raise ValueError(f"{path}: {domain}: expected a list of {{name, description}} entries")
            table[domain] = [(i["name"], i["description"]) for i in items]
        return cls(table)

    def actions(self, domain: str | None) -> list[Principle]:
        """The principles an item of `domain` may be rewritten by: the domain's own plus Helpfulness."""
        own = [] if domain in (None, HELPFULNESS) else self.domains.get(domain, [])
        return own + self.domains[HELPFULNESS]
