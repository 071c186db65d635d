"""Run a judge over a data file and write verdicts and the report (`alignkit judge` and its Python API).

    from alignkit.judge import make_judge, run_judge
    judge = make_judge("llm", model="data/gym/base-s", backend="hf")
    report = run_judge("data/gym/heldout_judge.jsonl", judge, out_dir="runs/judge")

Output folder: `verdicts.jsonl` (each input row plus `verdict`, `verdict_status`, `judge_raw`),
`report.json`, `report.md`, and `confusion.png` when there are human labels to compare with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignkit.data.records import JudgeItem
from alignkit.judge.kinds import FieldJudge, report_kind  # noqa: F401  (re-exported: part of this module's API)

JUDGES = ("llm", "pointwise", "pairwise", "exact", "contains", "normalized-exact", "reward", "reward-pairwise", "field", "remote")
LLM_KINDS = {"llm": "reference", "pointwise": "pointwise", "pairwise": "pairwise"}


def make_judge(kind: str, model: str | None = None, endpoint: str | None = None, template: str | None = None,
               backend: str = "auto", field: str | None = None, api_key: str | None = None, cache: bool = True,
               max_tokens: int | None = None, endpoint_options: dict[str, Any] | None = None, pair_rule: str = "both",
               reward_options: dict[str, Any] | None = None, truncation: str = "newlinequestion") -> Any:
    """A judge by name. LLM judges (`llm` = reference-based, `pointwise`, `pairwise`) need `model` (a
    folder, for the hf/vllm backends) or `endpoint` (an OpenAI-compatible URL); `reward*` need `model`;
    `remote` needs `endpoint`, an `alignkit judge-serve` URL. `endpoint_options` (timeout, max_retries,
    allow_plain_http_key) go to the endpoint's client; `reward_options` (trust_remote_code, output, device, ...) to
    a reward model. `truncation` (a preset of `alignkit.judge.truncation`, default the paper's "newlinequestion")
    is how the `llm` and lexical judges cut and strip each answer before reading it. An LLM judge's template is checked before its model loads."""
    if kind not in JUDGES:
        raise ValueError(f"unknown judge {kind!r}; known: {', '.join(JUDGES)}")
    if kind == "remote":
        from alignkit.judge.server import RemoteJudge

        if not endpoint:
            raise ValueError("--judge remote needs --endpoint URL (an `alignkit judge-serve` server)")
        options = dict(endpoint_options or {})
        return RemoteJudge(endpoint, api_key, timeout=options.get("timeout", 120.0), max_retries=options.get("max_retries", 2),
                           allow_plain_http_key=options.get("allow_plain_http_key", False))
    if kind in ("exact", "contains", "normalized-exact"):
        from alignkit.judge.lexical import LexicalJudge

        return LexicalJudge(kind, truncation)
    if kind == "field":
        if not field:
            raise ValueError("--judge field needs --field NAME (the column holding the labels to evaluate)")
        return FieldJudge(field)
    if kind.startswith("reward"):
        from alignkit.judge.reward_model import RewardModelJudge

        if not model:
            raise ValueError(f"--judge {kind} needs --model (a sequence-classification reward model)")
        return RewardModelJudge(model, "pairwise" if kind == "reward-pairwise" else "pointwise", **(reward_options or {}))
    if not (model or endpoint):
        raise ValueError(f"--judge {kind} needs --model PATH or --endpoint URL")
    from alignkit.judge.llm import PAIR_RULES, TEMPLATES, PairwiseJudge, PointwiseJudge, ReferenceJudge, load_template

    load_template(template or TEMPLATES[LLM_KINDS[kind]], LLM_KINDS[kind])  # a bad template fails before the model loads
    if kind == "pairwise" and pair_rule not in PAIR_RULES:
        raise ValueError(f"pair_rule must be one of {', '.join(PAIR_RULES)}, got {pair_rule!r}")
    from alignkit.judge.truncation import check_truncation

    check_truncation(truncation)
    generator, model_id = load_judge_model(model, endpoint, backend, api_key, endpoint_options)
    cls = {"llm": ReferenceJudge, "pointwise": PointwiseJudge, "pairwise": PairwiseJudge}[kind]
    options: dict[str, Any] = {"model_id": model_id, "cache": cache}
    if max_tokens:
        options["max_tokens"] = max_tokens
    if kind == "pairwise":
        options["pair_rule"] = pair_rule
    if kind == "llm":
        options["truncation"] = truncation
    return cls(generator, template, **options)


def load_judge_model(model: str | None, endpoint: str | None = None, backend: str = "auto", api_key: str | None = None,
                     endpoint_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The generator of an LLM judge (a local `model` folder, or the model at an OpenAI-compatible `endpoint`)
    and the identity its answers are cached under (weight fingerprint, or endpoint + served model name)."""
    from alignkit.generation.backends import load_generator
    from alignkit.generation.rollouts import model_identity

    if endpoint:
        generator = load_generator(endpoint, "openai", api_key=api_key, **(endpoint_options or {}),
                                   **({"model_name": model} if model else {}))
        return generator, f"{endpoint}|{generator.model_name}"
    return load_generator(model, backend), model_identity(model)


def load_judge_rows(path: str | Path) -> tuple[list[JudgeItem], list[dict[str, Any]]]:
    """Validated judge items and their raw rows (which keep extra fields such as annotator labels)."""
    items, rows, _ = _judge_rows_with_locations(path)
    return items, rows


def _judge_rows_with_locations(path: str | Path) -> tuple[list[JudgeItem], list[dict[str, Any]], list[str]]:
    from alignkit.data.loaders import iter_rows, load_records

    items = load_records(path, "judge").records
    located = list(iter_rows(path))
    if len(items) != len(located):  # the judge format never filters, so this means a broken file
        raise ValueError(f"{path}: {len(located)} rows but {len(items)} judge items")
    return items, [row for _, row in located], [loc for loc, _ in located]


def run_judge(data: str | Path, judge: Any, out_dir: str | Path | None = None, human_field: str | None = "human_label",
              group_field: str | None = "model", n_resamples: int = 2000, seed: int = 0, low_confidence: str = "fold",
              unparsed: str = "incorrect", ranking_threshold: float = 0.9, human_low_confidence: str = "separate") -> dict[str, Any]:
    """Judge every item of `data`; return the report and, with `out_dir`, write the report files.

    `low_confidence` ("fold" | "separate"), `human_low_confidence` ("separate" | "fold") and `unparsed`
    ("incorrect" | "exclude") set how hedged judge verdicts, hedged human labels and unparsed verdicts enter the
    statistics; the defaults are the official Judging the Judges coding (see `alignkit.judge.report.binary_report`);
    `ranking_threshold` is the correlation the ranking-stability share counts.
    """
    from alignkit.judge.report import LOW_CONFIDENCE, REPORTS, UNPARSED, check_human_labels, plot_confusion, to_markdown

    if low_confidence not in LOW_CONFIDENCE or human_low_confidence not in LOW_CONFIDENCE or unparsed not in UNPARSED:
        raise ValueError(f"low_confidence and human_low_confidence must be one of {', '.join(LOW_CONFIDENCE)} and unparsed one of "
                         f"{', '.join(UNPARSED)}, got {low_confidence!r}, {human_low_confidence!r} and {unparsed!r}")
    items, rows, locations = _judge_rows_with_locations(data)
    kind = report_kind(judge)
    if human_field and not any(r.get(human_field) is not None for r in rows):
        raise ValueError(f"{data}: no row has the human label field {human_field!r} (use --human-labels FIELD, or none)")
    if human_field:  # before any judge model is asked
        check_human_labels(rows, locations, human_field, kind)
    if isinstance(judge, FieldJudge):
        judge.rows = rows
    verdicts = judge.judge(items)
    options = {"binary": {"low_confidence": low_confidence, "unparsed": unparsed, "ranking_threshold": ranking_threshold,
                          "human_low_confidence": human_low_confidence},
               "score": {"ranking_threshold": ranking_threshold}}.get(kind, {})
    report = REPORTS[kind](verdicts, rows, human_field, group_field, n_resamples, seed, **options)
    report = {"judge": judge.name, "data": str(data), "human_field": human_field, **report}
    if getattr(judge, "pair_rule", None):
        report["pair_rule"] = judge.pair_rule
    if getattr(judge, "calls", None) is not None:
        report["judge_model_calls"] = judge.calls
    if out_dir:
        from alignkit.cache import write_atomic
        from alignkit.generation.rollouts import write_jsonl

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        # Each file is written atomically: a failure leaves the previous file (or none), never half of one or a .tmp.
        write_jsonl(out / "verdicts.jsonl", [{**row, "verdict": v.value, "verdict_status": v.status, "judge_raw": v.raw,
                                              **({"verdict_detail": v.detail} if v.detail else {})}
                                             for row, v in zip(rows, verdicts)])
        report_json = json.dumps(report, indent=2, default=float) + "\n"
        write_atomic(out / "report.json", lambda fh: fh.write(report_json))
        write_atomic(out / "report.md", lambda fh: fh.write(to_markdown(report)))
        png = plot_confusion(report, out / "confusion.png")
        report["files"] = [str(out / n) for n in ("verdicts.jsonl", "report.json", "report.md")] + ([str(png)] if png else [])
    return report
