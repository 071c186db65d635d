"""A judge report (`alignkit.judge.report`) as Markdown tables and as a confusion-matrix PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def format_number(x: Any, digits: int = 3) -> str:
    """A report cell: "–" for None, a float to `digits` places ("nan" as such), anything else as text."""
    if x is None:
        return "–"
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


_fmt = format_number


def to_markdown(report: dict[str, Any], title: str = "Judge report") -> str:
    """The report as Markdown tables."""
    lines = [f"# {title}", "", f"Judge: `{report.get('judge', '?')}` · items: {report['n']} · unparsed: {report['unparsed']}"
             f" · low-confidence: {report['low_confidence']}"]
    if report["kind"] == "pairwise":
        lines[-1] += f" · inconsistent orders (ties): {report['inconsistent']} ({_fmt(report['inconsistency_rate'])})"
    if report["kind"] != "binary":
        lines += ["", "## Per model", ""]
    if report["kind"] == "binary":
        conv = report.get("conventions", {})
        lines[-1] += f" · no verdict: {report.get('no_verdict', report['unparsed'])} · parse rate: {_fmt(report.get('parse_rate'))}"
        human_hedged = ("; low-confidence human labels "
                        + ("are no label (0)" if conv.get("human_low_confidence", "separate") == "separate" else "keep their label")
                        + f" ({report.get('human_low_confidence', 0)})") if report.get("human_low_confidence") else ""
        lines.append(f"Conventions: low-confidence verdicts {'are no verdict' if conv.get('low_confidence') == 'separate' else 'keep their label'}"
                     f"; judge accuracy {'counts no verdict as incorrect' if conv.get('unparsed') == 'incorrect' else 'excludes no verdict'}"
                     f"{human_hedged}.")
        lines += ["", "## Per model", "",
                  "| model | n | judge accuracy | no verdict = incorrect | parsed only | human accuracy | Δ | agreement | Scott π |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for m, e in report["per_model"].items():
            both = e.get("judge_accuracy_conventions", {})
            lines.append(f"| {m} | {e['n']} | {_fmt(e['judge_accuracy'])} | {_fmt(both.get('unparsed_incorrect'))} | "
                         f"{_fmt(both.get('parsed_only'))} | {_fmt(e.get('human_accuracy'))} | "
                         f"{_fmt(e.get('score_delta'))} | {_fmt(e.get('percent_agreement'))} | {_fmt(e.get('scott_pi'))} |")
    elif report["kind"] == "score":
        lines += ["| model | n | mean score | SE |", "|---|---:|---:|---:|"]
        for m, e in report["per_model"].items():
            lines.append(f"| {m} | {e['n']} | {_fmt(e.get('mean'))} | {_fmt(e.get('standard_error'))} |")
    else:
        if report.get("pair_rule"):
            lines += [f"Both presentation orders combined by the rule `{report['pair_rule']}`.", ""]
        lines += ["| model | n | win rate (ties ½) | SE | wins | ties (judged / orders disagree) | losses | win / tie / loss share | LC win rate (%) |",
                  "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
        for m, e in report["per_model"].items():
            lc = e.get("length_controlled", {}).get("length_controlled_win_rate")
            shares = " / ".join(_fmt(e.get(k)) for k in ("win_share", "tie_share", "loss_share")) if "win_share" in e else "–"
            lines.append(f"| {m} | {e.get('n_total', 0)} | {_fmt(e.get('win_rate'))} | {_fmt(e.get('standard_error'))} | "
                         f"{e.get('n_wins', '–')} | {e.get('n_ties', '–')} ({e.get('ties_judged', '–')} / {e.get('ties_inconsistent', '–')}) | "
                         f"{e.get('n_losses', '–')} | {shares} | {_fmt(lc, 1)} |")
    if "agreement" in report:
        lines += ["", f"## Agreement with human labels (n = {report['agreement']['n']}, 95% bootstrap CI)", "",
                  "| statistic | value | CI |", "|---|---:|---|"]
        for name, e in report["agreement"].items():
            if isinstance(e, dict) and "value" in e:
                ci = f"[{_fmt(e['ci'][0])}, {_fmt(e['ci'][1])}]" if e.get("ci") else e.get("note", "–")
                lines.append(f"| {name} | {_fmt(e['value'])} | {ci} |")
        across = report["agreement"].get("scott_pi_across_models")
        if across:
            lines.append(f"| Scott π across models (mean ± std) | {_fmt(across['mean'])} ± {_fmt(across['std'])} | |")
    if "accuracy" in report:
        for key, label in (("unparsed_incorrect", "accuracy (no verdict = incorrect)"), ("parsed_only", "accuracy (parsed only)")):
            e = report["accuracy"][key]
            ci = f"[{_fmt(e['ci'][0])}, {_fmt(e['ci'][1])}]" if e.get("ci") else e.get("note", "–")
            star = " (headline)" if report["accuracy"]["headline"] == key else ""
            lines.append(f"| {label}{star}, n = {e['n']} | {_fmt(e['value'])} | {ci} |")
    for key, label in (("precision", "precision (correct)"), ("recall", "recall (correct)")):
        if key in report:
            lines.append(f"| {label} | {_fmt(report[key])} | |")
    if isinstance(report.get("leniency"), dict) and "p_correct_application" in report["leniency"]:
        le = report["leniency"]
        lines.append(f"| leniency P_c / P₊ | {_fmt(le['p_correct_application'])} / {_fmt(le['p_lenient_guess'])} | |")
    if "human_binary" in report:
        hb = report["human_binary"]
        lines += ["", f"Score vs human correct/incorrect: mean {_fmt(hb['mean_score_correct'])} vs {_fmt(hb['mean_score_incorrect'])}, "
                  f"AUC {_fmt(hb['auc'])}"]
    if "ranking" in report:
        r = report["ranking"]
        lines += ["", "## Ranking of models, judge vs human", "",
                  f"Spearman ρ {_fmt(r.get('spearman'))}, Kendall τ {_fmt(r.get('kendall'))}" if "spearman" in r else r.get("note", "")]
        st = r.get("stability")
        if st and "spearman" in st:
            lines.append(f"Over all {st['n_subsets']} subsets of {st['subset_size']} of the {st['n_models']} models: Spearman ρ mean "
                         f"{_fmt(st['spearman']['mean'])} (std {_fmt(st['spearman']['std'])}, min {_fmt(st['spearman']['min'])}, "
                         f"share ≥ {st['threshold']:g}: {_fmt(st['spearman']['share_above'])}); Kendall τ mean {_fmt(st['kendall']['mean'])} "
                         f"(min {_fmt(st['kendall']['min'])})." + (f" Note: {st['note']}." if st.get("note") else ""))
        elif st:
            lines.append(f"Subset stability: {st['note']}.")
    if report["unparsed_items"]:
        lines += ["", "## Unparsed judge outputs", ""]
        for u in report["unparsed_items"][:20]:
            lines.append(f"- item {u['index']} ({u['model']}): {' | '.join(repr(x[:80]) for x in u['raw'])}")
        if len(report["unparsed_items"]) > 20:
            lines.append(f"- … {len(report['unparsed_items']) - 20} more in report.json")
    return "\n".join(lines) + "\n"


def plot_confusion(report: dict[str, Any], path: str | Path) -> Path | None:
    """The confusion matrix (human rows, judge columns) as a PNG; None when the report has none."""
    if "confusion" not in report:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(report["confusion"]["matrix"])
    labels = report["confusion"]["labels"]
    fig, ax = plt.subplots(figsize=(1.4 * len(labels) + 2, 1.2 * len(labels) + 1.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("judge")
    ax.set_ylabel("human")
    for (i, k), count in np.ndenumerate(matrix):
        ax.text(k, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    ax.set_title(f"{report.get('judge', 'judge')} vs human")
    fig.tight_layout()
    from alignkit.cache import write_atomic

    try:
        write_atomic(path, lambda fh: fig.savefig(fh, dpi=100, format="png"), mode="wb")
    finally:
        plt.close(fig)
    return Path(path)

