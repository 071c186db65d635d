"""The parser of every subcommand, and `main`: parse, run the subcommand, map an `AlignkitError` to one line and its
exit code. Heavy libraries are imported inside the subcommands, so `--help` is instant."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from alignkit.cli import data, gym, judge, paligner, runs, train
from alignkit.cli import generate as generation
from alignkit.errors import AlignkitError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand (each subcommand module registers its own)."""
    parser = argparse.ArgumentParser(prog="alignkit", description="Align language models with preferences and judgments.")
    sub = parser.add_subparsers(dest="command", required=True)
    train.register(sub)  # train, prepare, recipes
    data.register(sub)
    gym.register(sub)
    generation.register_serve_generate(sub)  # serve, generate
    judge.register(sub)  # judge, judge-serve
    generation.register_bon(sub)
    paligner.register(sub)  # paligner, rewrite
    runs.register(sub)  # export, report
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `alignkit` console script."""
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        return args.handler(args)
    except AlignkitError as err:  # the one place errors become messages: a bad recipe, record, model, endpoint or flag
        print(f"alignkit: {err}", file=sys.stderr)
        return err.exit_code


def _setup_logging() -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(show_path=False, show_time=False)])
    logging.getLogger("alignkit").setLevel(logging.INFO)
