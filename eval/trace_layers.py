"""How a recipe travels through alignkit's layers, from the command line to its loss, measured with `sys.setprofile`.

    python eval/trace_layers.py                       # a tiny CTRL recipe and a tiny online CUT recipe, both traced
    python eval/trace_layers.py --route ctrl --json runs/trace.json

Each route runs `alignkit.cli.main(["train", RECIPE, ...])` in this process (one optimizer step, tiny settings, a
temporary output folder) with a profile function that sees every Python call and return in alignkit's files, until
the method's `loss` is first called. Layers are those of the "Layers" table of `docs/architecture.md` (`--layers`
reads another copy, e.g. to measure an older checkout with today's table). Import-time code (module bodies and
what they call) is left out: it is not part of the flow.

It prints, per route:
- **stack at the loss**: the alignkit frames on the call stack when the loss is called, outermost first, and their
  layers with repeats collapsed; "each layer once" holds when no layer appears twice in that path;
- **calls between files**: calls from one alignkit file into another, the files entered, and the calls that go *up*
  a layer, split into those through the method contract (the engine calling the method's hooks, and the
  config validating `method_args` with the method's `Args`), those into a function a caller passed down as an
  argument (a nested function or lambda: `main_process_first(load, compute)`, `write_atomic(path, write)`), and
  the others (a lower layer calling up by name: what the layering forbids);
- **returns to a file already left**: how often execution comes back to a file it had left (on a call or a return).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the Layers table is read as tests/test_layering.py reads it
from test_layering import layer_table  # noqa: E402

ROUTES = {
    "ctrl": ["recipes/ctrl_tiny.yaml", "method_args.calibration_samples=4", "method_args.calibration_prompts=2",
             "method_args.num_samples=2", "method_args.sample_max_tokens=8", "method_args.sample_backend=hf",
             "method_args.heldout_reward=null", "data.eval=[]", "training.max_steps=1", "training.per_device_train_batch_size=2",
             "training.logging_steps=1"],
    "online": ["recipes/cut_online_tiny.yaml", "online.rounds=1", "online.prompts_per_round=2", "online.samples_per_prompt=1",
               "online.sampling={temperature: 1.0, max_tokens: 8}", "training.max_steps=1", "training.per_device_train_batch_size=2",
               "data.eval=[]"],
}


class Tracer:
    """The profile function: alignkit calls between files, by layer, until the method's loss is called."""

    def __init__(self, package: Path, layers: dict[str, int], method_file: str) -> None:
        self.root, self.package, self.layers, self.method_file = package.parent, str(package), layers, method_file
        self.names: dict[str, str | None] = {}
        self.imports = 0
        self.files: list[str] = []  # the alignkit file executing, each time it changes
        self.calls: Counter = Counter()  # (caller module, callee module, callee function) -> count
        self.stack: list[tuple[str, str]] | None = None
        self.done = False

    def module(self, filename: str) -> str | None:
        if filename not in self.names:
            name = None
            if filename.startswith(self.package) and filename.endswith(".py"):
                rel = Path(filename).relative_to(self.root).with_suffix("")
                name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            self.names[filename] = name
        return self.names[filename]

    def layer(self, module: str) -> int:
        return self.layers[max((p for p in self.layers if module == p or module.startswith(p + ".")), key=len)]

    def _enclosing(self, frame):  # the nearest alignkit frame above this one, and its module
        frame = frame.f_back
        while frame is not None and self.module(frame.f_code.co_filename) is None:
            frame = frame.f_back
        return (frame, self.module(frame.f_code.co_filename)) if frame is not None else (None, None)

    def _enter(self, module: str) -> None:
        if not self.files or self.files[-1] != module:
            self.files.append(module)

    def __call__(self, frame, event, arg):
        if self.done or event not in ("call", "return"):
            return
        module = self.module(frame.f_code.co_filename)
        if module is None:
            return
        if frame.f_code.co_name == "<module>":
            self.imports += 1 if event == "call" else -1
            return
        if self.imports > 0:
            return
        caller, caller_module = self._enclosing(frame)
        if event == "return":
            if caller_module is not None:
                self._enter(caller_module)
            return
        if caller_module is not None and caller.f_code.co_name == "<module>":
            return
        self._enter(module)
        if caller_module is not None and caller_module != module:
            nested = "<locals>" in getattr(frame.f_code, "co_qualname", "") or frame.f_code.co_name == "<lambda>"
            self.calls[(caller_module, module, frame.f_code.co_name, nested)] += 1
        if frame.f_code.co_name == "loss" and frame.f_code.co_filename.endswith(self.method_file):
            chain, f = [], frame
            while f is not None:
                m = self.module(f.f_code.co_filename)
                if m is not None:
                    chain.append((m, f.f_code.co_name))
                f = f.f_back
            self.stack = chain[::-1]
            self.done = True

    def report(self, method_module: str) -> dict:
        path = [self.layer(m) for m, _ in self.stack or []]
        collapsed = [x for i, x in enumerate(path) if i == 0 or x != path[i - 1]]
        climbs = Counter()
        for (src, dst, fn, nested), n in self.calls.items():
            if self.layer(dst) > self.layer(src):
                through = ("contract" if dst == method_module and src.startswith(("alignkit.engine", "alignkit.config"))
                           else "callback" if nested else "other")
                climbs[(through, f"{src} -> {dst}.{fn}")] += n
        returns = sum(1 for i, m in enumerate(self.files) if m in self.files[:i])
        return {
            "reached_loss": self.stack is not None,
            "stack_at_loss": [f"{m}.{fn} ({self.layer(m)})" for m, fn in self.stack or []],
            "layer_path": collapsed,
            "each_layer_once": self.stack is not None and len(collapsed) == len(set(collapsed)),
            "calls_between_files": sum(self.calls.values()),
            "distinct_call_edges": len(self.calls),
            "files_entered": len(set(self.files)),
            "upward_calls_through_contract": sum(n for (t, _), n in climbs.items() if t == "contract"),
            "upward_calls_callback": sum(n for (t, _), n in climbs.items() if t == "callback"),
            "upward_calls_other": sum(n for (t, _), n in climbs.items() if t == "other"),
            "upward_call_edges": sorted(f"{t}: {e} x{n}" for (t, e), n in climbs.items()),
            "file_changes": len(self.files) - 1,
            "returns_to_a_file_already_left": returns,
        }


def trace(route: str, layers: dict[str, int]) -> dict:
    import alignkit
    from alignkit.cli import main

    recipe, *sets = ROUTES[route]
    method = "alignkit.trainers.ctrl" if route == "ctrl" else "alignkit.trainers.cut"
    tracer = Tracer(Path(alignkit.__file__).parent, layers, method.replace(".", "/") + ".py")
    with tempfile.TemporaryDirectory() as tmp:
        out = [f"training.output_dir={tmp}/run"] if route == "ctrl" else [f"online.output_dir={tmp}/run"]
        argv = ["train", recipe, *[x for s in [*sets, *out] for x in ("--set", s)]]
        sys.setprofile(tracer)
        try:
            code = main(argv)
        finally:
            sys.setprofile(None)
    result = tracer.report(method)
    result["exit_code"] = code
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--route", choices=[*ROUTES, "all"], default="all")
    parser.add_argument("--layers", default=str(REPO / "docs" / "architecture.md"), help="the doc whose Layers table to use")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    layers = layer_table(Path(args.layers))
    results = {r: trace(r, layers) for r in (ROUTES if args.route == "all" else [args.route])}
    for route, r in results.items():
        print(f"\n## {route}: {ROUTES[route][0]} (exit {r['exit_code']})")
        print("stack at the loss:\n  " + "\n  ".join(r["stack_at_loss"]))
        print(f"layer path {r['layer_path']}: each layer once: {r['each_layer_once']}")
        print(f"calls between files {r['calls_between_files']} ({r['distinct_call_edges']} distinct), files entered "
              f"{r['files_entered']}, file changes {r['file_changes']}, returns to a file already left {r['returns_to_a_file_already_left']}")
        print(f"calls up a layer: {r['upward_calls_through_contract']} through the method contract, {r['upward_calls_callback']} "
              f"to a function passed down as an argument (a callback), {r['upward_calls_other']} other")
        for edge in r["upward_call_edges"]:
            print(f"  {edge}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if all(r["reached_loss"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
