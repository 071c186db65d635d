"""`alignkit export` and `alignkit report`: what a finished run becomes (a model folder, a report page)."""

from __future__ import annotations

import argparse

from alignkit.cli.common import user_errors

# `alignkit report --<key> FILE` flags of method report sections (`ReportSection.key`): name, metavar, help.
METHOD_SECTION_FLAGS = [("tradeoff", "JSON", "an eval/ctrl_tradeoff.py tradeoff.json (repeatable)")]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a standalone model folder (transformers and vLLM load it) with a model card")
    p.add_argument("source", metavar="RUN_OR_CHECKPOINT", help="a run folder (training.output_dir), its final/, or a checkpoint-N folder")
    p.add_argument("--out", required=True, help="the folder to write (must not exist or be empty)")
    p.add_argument("--merge-lora", action="store_true", help="merge a LoRA run's adapter into the base weights")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="weights dtype (default: the checkpoint's own)")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("report", help="one static HTML page comparing runs: curves, before/after, gym, judge, CTRL trade-off")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (training.output_dir), or folders holding runs")
    p.add_argument("--out", default="report.html", help="the HTML file to write (default report.html)")
    p.add_argument("--gym-eval", action="append", default=[], metavar="JSON", help="an eval/gym_eval.py --json file (repeatable)")
    p.add_argument("--judge", action="append", default=[], metavar="REPORT_JSON", help="an alignkit judge report.json (repeatable)")
    for key, metavar, text in METHOD_SECTION_FLAGS:
        p.add_argument(f"--{key}", action="append", default=[], metavar=metavar, help=text)
    p.add_argument("--title", default="alignkit run report")
    p.set_defaults(handler=cmd_report)


def cmd_export(args: argparse.Namespace) -> int:
    from alignkit.engine.export import export_model

    out = export_model(args.source, args.out, merge_lora=args.merge_lora, dtype=args.dtype)
    print(f"exported {args.source} to {out} (model card: {out / 'README.md'})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from alignkit.engine.report import write_report

    sections = {key: getattr(args, key) for key, _, _ in METHOD_SECTION_FLAGS if getattr(args, key)}
    with user_errors(ValueError, OSError):
        out = write_report(args.runs, args.out, args.gym_eval, args.judge, sections, args.title)
    print(f"report written to {out}")
    return 0
