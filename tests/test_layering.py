"""The layering of docs/architecture.md, read from its "Layers" table: a module imports only from its own layer or
the layers below (every import counts, also those inside functions), no two files import each other in a cycle,
only the method registry imports modules by name, the engine names no method, and no file is over 450 lines."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "alignkit"
DOC = REPO / "docs" / "architecture.md"
REGISTRY = "alignkit.config.registry"  # the one module that may import a module by name
MAX_LINES = 450
EXEMPT_FROM_MAX_LINES = {"alignkit/gym/": "the gym's world is being split into tasks, language, gold, variants, tokenizer"}
# Imports that go up a layer on purpose, each with its reason (docs/architecture.md names them too).
ALLOWED_UPWARD = {
    ("eval.real_path_check", "alignkit.cli"): "a GPU check script that runs the command-line routes end to end, as a user does",
    ("eval.trace_layers", "alignkit.cli"): "measures the path from the command line to a method's loss, so it starts there",
}
# Words that are registered method names and also plain words the engine must use (a "reward" signal, role "reward").
GENERIC_METHOD_WORDS = {"reward", "sft"}
LOADS = {"import_module", "__import__", "module_from_spec", "exec_module", "load_module", "reload", "run_module", "run_path"}


def layer_table(doc: Path = DOC) -> dict[str, int]:
    """{module prefix: layer} from the table under "## Layers" in docs/architecture.md (the modules column)."""
    section = doc.read_text().split("\n## Layers", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            for name in re.findall(r"`((?:alignkit|eval)(?:\.\w+)*)`", cells[1]):
                assert name not in table, f"{name} is in two rows of the layer table"
                table[name] = int(cells[0])
    assert table, f"no layer table found in {doc}"
    return table


LAYERS = layer_table()


def part_of(module: str) -> str | None:
    """The longest table entry that is the module or a package above it."""
    matches = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return max(matches, key=len) if matches else None


def modules() -> dict[str, Path]:
    """Every module of the package and every `eval/` script, by dotted name."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(REPO).with_suffix("")
        out[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    for path in (REPO / "eval").glob("*.py"):
        out[f"eval.{path.stem}"] = path
    return out


MODULES = modules()


def _resolve(name: str) -> str:
    """The module a dotted import name refers to (the nearest enclosing module that exists)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports(module: str) -> dict[str, int]:
    """{imported alignkit module: line} of every import in the file, at the top or inside a function; `from pkg import
    name` counts as an import of `pkg.name` when that is a module, else of `pkg`."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package upwards
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            if target.startswith("alignkit"):
                found.setdefault(_resolve(target), node.lineno)
    return found


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if part_of(m) is None)
    assert not missing, f"modules in no row of the layer table in {DOC.name}: {missing}"


def test_every_import_goes_to_the_same_or_a_lower_layer():
    problems = []
    for name in sorted(MODULES):
        for target, line in sorted(imports(name).items()):
            src, dst = LAYERS[part_of(name)], LAYERS[part_of(target)]
            if dst > src and (name, part_of(target)) not in ALLOWED_UPWARD:
                problems.append(f"{MODULES[name].relative_to(REPO)}:{line}: {name} (layer {src}) imports {target} (layer {dst})")
    assert not problems, "\n".join(problems)


def test_no_file_level_import_cycle():
    graph = {name: set(imports(name)) - {name} for name in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    assert not cycles, f"files that import each other (directly or through others): {cycles}"


def test_modules_are_imported_by_name_only_in_the_registry():
    problems = []
    for name, path in sorted(MODULES.items()):
        if name == REGISTRY:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if func in LOADS:
                    problems.append(f"{path.relative_to(REPO)}:{node.lineno}: {func}(...)")
            elif isinstance(node, ast.ImportFrom) and node.module in ("importlib", "runpy"):
                problems += [f"{path.relative_to(REPO)}:{node.lineno}: from {node.module} import {a.name}" for a in node.names if a.name in LOADS]
    assert not problems, f"only {REGISTRY} imports modules by name:\n" + "\n".join(problems)
    assert any(isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "import_module"
               for n in ast.walk(ast.parse(MODULES[REGISTRY].read_text()))), "the registry no longer loads methods"


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def test_the_engine_names_no_method():
    from alignkit.config import METHODS

    names = {m.lower() for m in METHODS} - GENERIC_METHOD_WORDS
    names |= {"d²o"}  # D2O's own spelling
    problems = []
    for name, path in sorted(MODULES.items()):
        if not name.startswith("alignkit.engine"):
            continue
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                words = set(re.findall(r"[\w²]+", node.value.lower()))
            elif isinstance(node, ast.Name):
                words = set(node.id.lower().split("_"))
            elif isinstance(node, ast.Attribute):
                words = set(node.attr.lower().split("_"))
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                words = set(node.name.lower().split("_"))
            else:
                continue
            for word in sorted(words & names):
                problems.append(f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}: names the method {word!r}")
    assert not problems, "\n".join(problems)


def test_no_file_over_the_line_limit():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if any(rel.startswith(prefix) for prefix in EXEMPT_FROM_MAX_LINES):
            continue
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            long.append(f"{rel}: {lines} lines")
    assert not long, f"files over {MAX_LINES} lines:\n" + "\n".join(long)


def test_the_table_places_the_gym_by_layer():
    """The gym spans layers: its world is pure (1), its tiny models sit with modeling (3), its pipelines on top (6)."""
    for module, layer in {"alignkit.gym.world": 1, "alignkit.gym.tasks": 1, "alignkit.gym.gold": 1, "alignkit.gym.make_data": 1,
                          "alignkit.gym.shapes": 1, "alignkit.gym.tiny_model": 3, "alignkit.gym.pretrain": 6,
                          "alignkit.gym.evaluation": 6, "alignkit.gym.rewriter": 6, "alignkit.engine": 5, "alignkit.cli": 7}.items():
        assert LAYERS[part_of(module)] == layer, module
