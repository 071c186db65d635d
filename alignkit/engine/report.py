"""`alignkit report RUN [RUN ...] --out report.html`: one static HTML page comparing training runs.

The page is self-contained: plots are embedded as base64 PNG, styles are inline, and it has no script and no
network asset. It has these sections:

- the runs: method, model, steps, time, and the data sources with records used;
- training curves of every metric each method logged, one plot per metric with a line per run. They come from
  `run_summary.json` (written when training ends) or, for an unfinished run, the newest
  `checkpoint-*/trainer_state.json`;
- the before/after evaluation table, and the win rate against the reference by sampling (`eval:`) over steps;
- the gym's gold-reward table for each `eval/gym_eval.py --json` file;
- judge agreement and win rates for each `alignkit judge` `report.json`;
- each method's own sections (`ReportSection`s its `Method` declares, `alignkit.engine.contract`), e.g. CTRL's
  KL–win-rate trade-off from `eval/ctrl_tradeoff.py`'s `tradeoff.json`. The engine renders them without
  knowing the method: the registered methods declare them, and this module lends them its table and plot helpers
  (`table`, `img`, `figure`, `png`, `esc`, `num`, `mean_se`).

These files are given with `--gym-eval`, `--judge` and a method section's `--<key>` (e.g. `--tradeoff`), or
found in a run folder (`gym_eval*.json`, `*/report.json`, and each section's patterns, e.g. `tradeoff.json`).
A folder that holds several runs, for example a staged recipe's `output_dir`, adds each of them.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from alignkit.config import RUN_SUMMARY

if TYPE_CHECKING:
    from alignkit.engine.contract import ReportSection

_SKIP_TRAIN = {"epoch", "step", "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss"}
_SKIP_EVAL_SUFFIX = ("_runtime", "_per_second", "_preparation_time")


@dataclass
class Run:
    """What one run folder recorded."""

    name: str
    path: Path
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    recipe: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # where the log history came from


def _is_run(path: Path) -> bool:
    return (path / RUN_SUMMARY).is_file() or any(path.glob("checkpoint-*/trainer_state.json"))


def find_runs(paths: Sequence[str | Path]) -> list[Run]:
    """The runs of each path: a run folder, its final/, or a folder holding run folders (one level down)."""
    runs = []
    for given in paths:
        path = Path(given)
        if path.name == "final" and _is_run(path.parent):
            path = path.parent
        if _is_run(path):
            runs.append(load_run(path, path.name))
            continue
        inner = sorted(p for p in path.iterdir() if p.is_dir() and _is_run(p)) if path.is_dir() else []
        if not inner:
            raise ValueError(f"{given}: no run here (no {RUN_SUMMARY} and no checkpoint-*/trainer_state.json, here or one level down)")
        runs += [load_run(p, f"{path.name}/{p.name}") for p in inner]
    return runs


def _checkpoint_step(path: Path) -> int:
    try:
        return int(path.parent.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def load_run(path: Path, name: str) -> Run:
    """A run's summary, log history and recipe."""
    run = Run(name, path)
    if (path / RUN_SUMMARY).is_file():
        run.summary = json.loads((path / RUN_SUMMARY).read_text())
        run.history = run.summary.get("log_history") or []
        run.recipe = run.summary.get("recipe") or {}
        run.source = RUN_SUMMARY
    else:
        state = max(path.glob("checkpoint-*/trainer_state.json"), key=_checkpoint_step)
        run.history = json.loads(state.read_text()).get("log_history", [])
        run.source = str(state.relative_to(path))
    if not run.recipe:
        from alignkit.engine.export import read_run_recipe

        run.recipe = read_run_recipe(path / "final", path) or {}
    return run


def method_sections(runs: Sequence[Run] = ()) -> dict[str, ReportSection]:
    """The report sections every registered method declares (and the runs' own methods, when a recipe names a module)."""
    from alignkit.config import method_module, method_names
    from alignkit.engine.contract import report_sections_of

    names = list(dict.fromkeys(method_names() + [str(r.recipe["method"]) for r in runs if r.recipe.get("method")]))
    classes = []
    for name in names:
        try:
            classes.append(method_module(name).Method)
        except (ImportError, ValueError, AttributeError):  # a run trained by a method this installation lacks
            continue
    return report_sections_of(classes)


def discover(runs: Sequence[Run], sections: dict[str, ReportSection] | None = None) -> dict[str, list[Path]]:
    """Evaluation files found in the run folders, by kind (gym, judge, and each method section's key)."""
    sections = method_sections(runs) if sections is None else sections
    found: dict[str, list[Path]] = {"gym": [], "judge": [], **{key: [] for key in sections}}
    for run in runs:
        found["gym"] += sorted(run.path.glob("gym_eval*.json"))
        for key, section in sections.items():
            for pattern in section.patterns:
                found[key] += sorted(run.path.glob(pattern))
        found["judge"] += sorted(run.path.glob("*/report.json"))
    return found


# -- curves -------------------------------------------------------------------------------------------------------


def curves(runs: Sequence[Run]) -> tuple[dict[str, dict[str, list[tuple[int, float]]]], dict[str, dict[str, list[tuple[int, float]]]]]:
    """(train, eval) curves: metric -> run name -> [(step, value)], from every log record with a number."""
    train: dict[str, dict[str, list[tuple[int, float]]]] = {}
    evaluation: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for run in runs:
        for record in run.history:
            step = record.get("step")
            if step is None:
                continue
            is_eval = any(k.startswith("eval_") for k in record)
            for key, value in record.items():
                if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                    continue
                if is_eval:
                    if not key.startswith("eval_") or key.endswith(_SKIP_EVAL_SUFFIX):
                        continue
                    evaluation.setdefault(key[5:], {}).setdefault(run.name, []).append((step, float(value)))
                elif key not in _SKIP_TRAIN:
                    train.setdefault(key, {}).setdefault(run.name, []).append((step, float(value)))
    return train, evaluation


def _ordered(metrics: dict[str, Any]) -> list[str]:
    return sorted(metrics, key=lambda k: (k != "loss", k.startswith(("learning_rate", "grad_norm", "time/")), k))


# -- plots ----------------------------------------------------------------------------------------------------------


def png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def figure(width: float = 4.4, height: float = 2.8) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height))
    ax.grid(alpha=0.3)
    return fig, ax


def curve_plot(title: str, series: dict[str, list[tuple[int, float]]], ylabel: str = "") -> str:
    """One metric over steps, a line per run, as a base64 PNG."""
    fig, ax = figure()
    for name, points in series.items():
        points = sorted(points)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, marker="o" if len(xs) < 25 else None, ms=3, lw=1.4, label=name)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("optimizer step", fontsize=8)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    if len(series) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png(fig)


def win_rate_plot(runs: Sequence[Run]) -> str | None:
    """The win rate against the reference (by sampling during training) over steps, ± 1 SE, per run."""
    fig, ax = figure(5.5, 3.2)
    drawn = False
    for run in runs:
        points = sorted((h["step"], h["eval_gen/win_rate"], h.get("eval_gen/win_rate_se", 0.0)) for h in run.history
                        if "eval_gen/win_rate" in h and "step" in h)
        if not points:
            continue
        xs, ys, se = zip(*points)
        ax.errorbar(xs, ys, yerr=se, marker="o", ms=3, capsize=3, label=run.name)
        drawn = True
    if not drawn:
        import matplotlib.pyplot as plt

        plt.close(fig)
        return None
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("optimizer step", fontsize=8)
    ax.set_ylabel("win rate vs reference (± SE)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return png(fig)


# -- HTML -----------------------------------------------------------------------------------------------------------


def esc(value: Any) -> str:
    return html.escape(str(value))


def num(value: Any, digits: int = 4) -> str:
    """A number cell ("–" for None), escaped."""
    from alignkit.judge.report_format import format_number

    return esc(format_number(value, digits))


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1, numeric_to: int | None = None) -> str:
    """An HTML table of already-escaped cells; columns numeric_from..numeric_to (exclusive) are right-aligned numbers."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    end = len(header) if numeric_to is None else numeric_to
    body = "".join("<tr>" + "".join(f"<td class=num>{c}</td>" if numeric_from <= i < end else f"<td>{c}</td>" for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def img(data: str, alt: str) -> str:
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}"><figcaption>{esc(alt)}</figcaption></figure>'


def mean_se(value: Any) -> str:
    if isinstance(value, dict) and "mean" in value:
        se = value.get("se", value.get("standard_error"))
        return f"{num(value['mean'], 3)} ± {num(se, 3)}" if se is not None else num(value["mean"], 3)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(x, (int, float)) for x in value):
        return f"{num(float(value[0]), 3)} ± {num(float(value[1]), 3)}"
    return num(value, 3)


def runs_section(runs: Sequence[Run]) -> str:
    """The runs table and each run's data sources."""
    rows = []
    for run in runs:
        s, recipe = run.summary, run.recipe
        method = s.get("method") or recipe.get("method") or "?"
        model = s.get("model") or (recipe.get("model") or {}).get("path") or "?"
        steps = s.get("steps") if s else max((h.get("step", 0) for h in run.history), default=0)
        data = "<br>".join(f"{esc(split)}: {esc(src['source'])} ({src['records']} of {src['loaded']})"
                           for split, sources in (s.get("data") or {}).items() for src in sources) or "–"
        rows.append([esc(run.name), esc(method), esc(model), num(steps), num(s.get("seconds"), 1) if s else "–",
                     num(s.get("train_examples")) if s else "–", data, esc(run.source)])
    return "<h2>Runs</h2>" + table(["run", "method", "model", "steps", "seconds", "train examples", "data (records used of loaded)",
                                     "log history from"], rows, numeric_from=3, numeric_to=6)


def before_after_section(runs: Sequence[Run]) -> str:
    """The before/after evaluation of every run, with the change."""
    rows = []
    for run in runs:
        before, after = run.summary.get("before") or {}, run.summary.get("after") or {}
        for key in sorted(set(before) | set(after)):
            b, a = before.get(key), after.get(key)
            delta = a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
            rows.append([esc(run.name), esc(key), num(b), num(a), num(delta)])
    if not rows:
        return "<h2>Before and after training</h2><p>No run has a persisted summary with a before/after evaluation.</p>"
    return "<h2>Before and after training</h2>" + table(["run", "metric", "before", "after", "change"], rows, numeric_from=2)


def gym_section(path: Path) -> str:
    """A gym evaluation (`eval/gym_eval.py --json`) as a table: model × figure (mean ± SE over prompts)."""
    data = json.loads(path.read_text())
    models = data.get("models") or []
    columns = list(dict.fromkeys(k for m in models for k, v in m.items() if isinstance(v, dict) and "mean" in v))
    rows = [[esc(m.get("model", "?"))] + [mean_se(m.get(c)) for c in columns] for m in models]
    meta = ", ".join(f"{k}: {esc(data[k])}" for k in ("prompts", "samples", "temperature", "seed", "noisy") if data.get(k) is not None)
    out = f"<h3>{esc(path)}</h3><p class=meta>{meta}</p>" + table(["model", *columns], rows)
    best = data.get("best_of_n")
    if best:
        bon_rows = [[esc(model), esc(quantity)] + [mean_se(v) for _, v in sorted(row.items(), key=lambda kv: int(kv[0]))]
                    for model, by_quantity in best.items() for quantity, row in by_quantity.items()]
        ns = sorted({int(n) for by_quantity in best.values() for row in by_quantity.values() for n in row})
        out += "<h4>Best-of-N by the reward model vs by gold</h4>" + table(["model", "quantity", *[f"N={n}" for n in ns]], bon_rows, 2)
    return out


def judge_section(path: Path) -> str:
    """An `alignkit judge` report: per-model scores or win rates, and agreement with human labels (with CIs)."""
    report = json.loads(path.read_text())
    meta = (f"kind {esc(report.get('kind'))}, judge {esc(report.get('judge', '?'))}, {report.get('n')} items, "
            f"{report.get('unparsed', 0)} unparsed")
    per_model = report.get("per_model") or {}
    columns = list(dict.fromkeys(k for e in per_model.values() for k, v in e.items() if isinstance(v, (int, float)) and not isinstance(v, bool)))
    rows = [[esc(m)] + [num(e.get(c), 3) for c in columns] for m, e in per_model.items()]
    out = f"<h3>{esc(path)}</h3><p class=meta>{meta}</p>" + table(["model", *columns], rows)
    agreement = report.get("agreement") or {}
    arows = []
    for name, e in agreement.items():
        if isinstance(e, dict) and "value" in e:
            ci = f"[{num(e['ci'][0], 3)}, {num(e['ci'][1], 3)}]" if e.get("ci") else esc(e.get("note", "–"))
            arows.append([esc(name), num(e["value"], 3), ci])
    if arows:
        out += f"<h4>Agreement with human labels (n = {agreement.get('n')}, 95% bootstrap CI)</h4>" + table(["statistic", "value", "CI"], arows)
    ranking = report.get("ranking") or {}
    if "spearman" in ranking:
        out += f"<p>Ranking of models, judge vs human: Spearman ρ {num(ranking['spearman'], 3)}, Kendall τ {num(ranking.get('kendall'), 3)}</p>"
    return out


STYLE = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px 32px;color:#1f2328;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:14px;margin:18px 0 4px;font-family:monospace} h4{font-size:13px;margin:12px 0 4px}
p.meta{color:#57606a;font-size:12px;margin:2px 0 8px}
table{border-collapse:collapse;font-size:12px;margin:4px 0 12px} th,td{border:1px solid #d0d7de;padding:3px 8px;vertical-align:top}
th{background:#f6f8fa;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.grid{display:flex;flex-wrap:wrap;gap:8px} figure{margin:0;border:1px solid #eaeef2;padding:4px}
figcaption{font-size:11px;color:#57606a;text-align:center} img{display:block;max-width:100%}
"""


def render(runs: Sequence[Run], gym: Sequence[Path] = (), judge: Sequence[Path] = (),
           extra: Sequence[tuple[ReportSection, Sequence[Path]]] = (), title: str = "alignkit run report") -> str:
    """The whole page (`extra`: method sections with their files)."""
    train, evaluation = curves(runs)
    parts = [f"<h1>{esc(title)}</h1><p class=meta>{len(runs)} run(s): {esc(', '.join(r.name for r in runs))}</p>",
             runs_section(runs), before_after_section(runs)]
    win = win_rate_plot(runs)
    if win:
        parts.append("<h2>Win rate against the reference, sampled during training</h2>" + img(win, "win rate vs reference"))
    parts.append("<h2>Training curves</h2>")
    parts.append('<div class="grid">' + "".join(img(curve_plot(f"train: {k}", train[k]), f"train/{k}") for k in _ordered(train)) + "</div>"
                 if train else "<p>No training log records.</p>")
    plain_eval = {k: v for k, v in evaluation.items() if not k.startswith("gen/")}
    if plain_eval:
        parts.append("<h2>Evaluation curves</h2>")
        parts.append('<div class="grid">' + "".join(img(curve_plot(f"eval: {k}", plain_eval[k]), f"eval/{k}") for k in _ordered(plain_eval))
                     + "</div>")
    if gym:
        parts.append("<h2>Gym: gold reward and figures per model (mean ± SE over prompts)</h2>" + "".join(gym_section(p) for p in gym))
    if judge:
        parts.append("<h2>Judge agreement and win rates</h2>" + "".join(judge_section(p) for p in judge))
    for section, files in extra:
        if files:
            parts.append(f"<h2>{esc(section.title)}</h2>" + "".join(section.render(p) for p in files))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head><body>" + "\n".join(parts) + "</body></html>\n")


def write_report(paths: Sequence[str | Path], out: str | Path, gym: Sequence[str | Path] = (), judge: Sequence[str | Path] = (),
                 sections: Mapping[str, Sequence[str | Path]] | None = None, title: str = "alignkit run report") -> Path:
    """Find the runs and evaluation files, render the page and write it atomically. `sections` gives files for
    method sections by key (e.g. `{"tradeoff": [...]}`); a key no method declares is an error."""
    from alignkit.cache import write_text_atomic

    runs = find_runs(paths)
    declared = method_sections(runs)
    unknown = sorted(set(sections or {}) - set(declared))
    if unknown:
        raise ValueError(f"no method declares a report section {', '.join(unknown)}; known: {', '.join(sorted(declared)) or 'none'}")
    found = discover(runs, declared)
    given = {"gym": gym, "judge": judge, **{key: (sections or {}).get(key, ()) for key in declared}}
    files = {kind: list(dict.fromkeys([Path(p) for p in given[kind]] + found[kind])) for kind in given}
    for kind, paths_ in files.items():
        for p in paths_:
            if not p.is_file():
                raise ValueError(f"--{'gym-eval' if kind == 'gym' else kind} {p}: file not found")
    extra = [(declared[key], files[key]) for key in declared]
    return write_text_atomic(out, render(runs, files["gym"], files["judge"], extra, title))
