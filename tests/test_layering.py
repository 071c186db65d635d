"""The layering of docs/engine.md: a module imports only from its own layer or the layers below (every
import counts, including those inside functions), and no two parts of one layer import each other in a cycle."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "alignkit"

# (layer, part): the longest matching prefix decides a module's part. Mirrors the table in docs/engine.md.
PARTS = {
    "alignkit": 1, "alignkit.data": 1, "alignkit.rewards": 1, "alignkit.gym.world": 1, "alignkit.gym.shapes": 1,
    "alignkit.cache": 1, "alignkit.distributed": 1,
    "alignkit.config": 2,
    "alignkit.modeling": 3, "alignkit.gym.tiny_model": 3, "alignkit.generation": 3,
    "alignkit.scoring": 4, "alignkit.judge": 4,
    "alignkit.engine": 5,
    "alignkit.trainers": 6, "alignkit.paligner": 6, "alignkit.gym": 6,
    "alignkit.cli": 7, "alignkit.__main__": 7,
}


def part_of(module: str) -> str:
    return max((p for p in PARTS if module == p or module.startswith(p + ".")), key=len)


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = path
    return out


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("alignkit")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("alignkit") and node.level == 0:
            found.add(node.module)
    return found


def test_every_import_goes_to_the_same_or_a_lower_layer():
    problems = []
    for name, path in sorted(modules().items()):
        for target in sorted(imports(path)):
            src, dst = part_of(name), part_of(target)
            if PARTS[dst] > PARTS[src]:
                problems.append(f"{name} (layer {PARTS[src]}) imports {target} (layer {PARTS[dst]})")
    assert not problems, "\n".join(problems)


def test_no_import_cycle_between_parts():
    edges: dict[str, set[str]] = {}
    for name, path in modules().items():
        src = part_of(name)
        for target in imports(path):
            dst = part_of(target)
            if dst != src:
                edges.setdefault(src, set()).add(dst)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(p for p in edges if reaches(p, p, {p}))
    assert not cycles, f"parts in an import cycle: {cycles}"
