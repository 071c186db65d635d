"""`alignkit data validate | stats`: check and describe data files."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="validate and describe data files")
    dsub = p.add_subparsers(dest="data_command", required=True)
    v = dsub.add_parser("validate", help="check every record of a file against a format")
    v.add_argument("file", nargs="+")
    v.add_argument("--format", required=True)
    v.add_argument("--skip-invalid", action="store_true", help="skip bad records and report them instead of failing")
    s = dsub.add_parser("stats", help="counts and length statistics of a data file")
    s.add_argument("file", nargs="+")
    s.add_argument("--format", default=None, help="format name (detected from the first row when omitted)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=cmd_data)


def cmd_data(args: argparse.Namespace) -> int:
    from alignkit.data.loaders import load_records

    if args.data_command == "validate":
        result = load_records(args.file, args.format, skip_invalid=args.skip_invalid)
        print(result.summary())
        for example in result.examples.values():
            print(f"  e.g. {example}")
        return 1 if result.skipped else 0
    from alignkit.data.stats import data_stats, format_stats

    stats = data_stats(args.file, args.format)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        from rich.console import Console

        Console().print(format_stats(stats))
    return 0
