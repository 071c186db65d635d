"""The `alignkit` command line. Heavy libraries are imported inside commands, so `--help` is instant."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

LAUNCHED_ENV = "ALIGNKIT_LAUNCHED"
# Variables set by accelerate/torchrun for the processes they start.
LAUNCHER_ENVS = ("LOCAL_RANK", "WORLD_SIZE", "ACCELERATE_USE_DEEPSPEED", LAUNCHED_ENV)


class CliError(Exception):
    """An error to print as one clean message with exit code 2."""


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set training.learning_rate=1e-5 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="alignkit", description="Align language models with preferences and judgments.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the method a recipe names")
    p.add_argument("recipe")
    _add_set(p)
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from the last checkpoint in output_dir (or the one given)")
    p.add_argument("--no-launch", action="store_true", help="run in this process even if the recipe asks for several")

    p = sub.add_parser("prepare", help="compute and cache a recipe's reference signals (no training)")
    p.add_argument("recipe")
    _add_set(p)

    p = sub.add_parser("recipes", help="inspect recipes")
    rsub = p.add_subparsers(dest="recipes_command", required=True)
    show = rsub.add_parser("show", help="validate a recipe and print it fully resolved")
    show.add_argument("recipe")
    show.add_argument("--schema-only", action="store_true", help="validate keys and types but not that files exist (e.g. GPU recipes on a laptop)")
    _add_set(show)

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

    p = sub.add_parser("gym", help="the alignment gym: tiny models and synthetic data")
    gsub = p.add_subparsers(dest="gym_command", required=True)
    t = gsub.add_parser("tiny-model", help="build a tiny tokenizer + random Llama that loads offline")
    t.add_argument("--out", required=True)
    t.add_argument("--size", default="xs")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--classifier", action="store_true", help="a 1-label sequence classifier (reward model)")
    pt = gsub.add_parser("pretrain", help="train the gym's base policy (SFT on mixed-quality gym data)")
    pt.add_argument("--out", required=True)
    pt.add_argument("--size", default="s", help="tiny size: s for the base policy, m for a distillation teacher")
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--save-dtype", default="float32", choices=["float32", "bfloat16"], help="dtype of the saved weights")
    _add_set(pt)
    m = gsub.add_parser("make-data", help="write the gym's datasets (train/held-out splits share no prompt)")
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--heldout-fraction", type=float, default=0.25)
    m.add_argument("--responses-per-prompt", type=int, default=4)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `alignkit` console script."""
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        handler = {"train": cmd_train, "prepare": cmd_prepare, "recipes": cmd_recipes, "data": cmd_data, "gym": cmd_gym}
        return handler[args.command](args)
    except CliError as err:
        print(f"alignkit: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # RecipeError, DataError and validation problems carry their own locations
        from alignkit.config import RecipeError
        from alignkit.data.loaders import DataError

        if isinstance(err, (RecipeError, DataError)):
            print(f"alignkit: {err}", file=sys.stderr)
            return 2
        raise


def _setup_logging() -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(show_path=False, show_time=False)])
    logging.getLogger("alignkit").setLevel(logging.INFO)


def _load(args: argparse.Namespace):
    from alignkit.config import load_recipe

    return load_recipe(args.recipe, args.overrides)


def _launched() -> bool:
    return any(k in os.environ for k in LAUNCHER_ENVS)


def launch_command(recipe_path: str, recipe, extra: Sequence[str]) -> list[str]:
    """The `accelerate launch` command that re-runs this training under the recipe's launch settings."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if recipe.launch.config_file:
        cmd += ["--config_file", recipe.launch.config_file]
    elif recipe.launch.num_processes > 1:
        cmd += ["--multi_gpu"]  # `--cpu --num_processes N` silently runs one process; gloo is picked on CPU
    cmd += ["--num_processes", str(recipe.launch.num_processes), "--num_machines", str(recipe.launch.num_machines)]
    if recipe.launch.main_process_port:
        cmd += ["--main_process_port", str(recipe.launch.main_process_port)]
    cmd += list(recipe.launch.extra_args)
    return cmd + ["-m", "alignkit", "train", recipe_path, *extra]


def cmd_train(args: argparse.Namespace) -> int:
    recipe = _load(args)
    if (recipe.launch.num_processes > 1 or recipe.launch.config_file) and not _launched() and not args.no_launch:
        extra = [x for o in args.overrides for x in ("--set", o)]
        if args.resume:
            extra += ["--resume"] + ([args.resume] if isinstance(args.resume, str) else [])
        cmd = launch_command(args.recipe, recipe, extra)
        logging.getLogger("alignkit").info("launching: %s", " ".join(cmd))
        return subprocess.call(cmd, env={**os.environ, LAUNCHED_ENV: "1"})
    from rich.console import Console

    from alignkit.engine.run import format_summary, summary_lines, train

    summary = train(recipe, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        console = Console(width=max(100, Console().width))
        console.print(format_summary(summary))
        for line in summary.notes + summary_lines(summary):
            console.print(line, highlight=False, soft_wrap=True)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from alignkit.engine.run import prepare

    print(prepare(_load(args)))
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from alignkit.config import load_recipe, recipe_to_yaml

    print(recipe_to_yaml(load_recipe(args.recipe, args.overrides, check_files=not args.schema_only)), end="")
    return 0


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


def cmd_gym(args: argparse.Namespace) -> int:
    if args.gym_command == "pretrain":
        from alignkit.gym.pretrain import pretrain

        out = pretrain(args.out, args.size, args.seed, overrides=args.overrides, save_dtype=args.save_dtype)
        print(f"gym base policy (tiny:{args.size}, seed {args.seed}) written to {out}; evaluate it with: python eval/gym_eval.py {out}")
        return 0
    if args.gym_command == "make-data":
        from alignkit.gym.make_data import make_data

        manifest = make_data(args.out, args.seed, args.heldout_fraction, args.responses_per_prompt)
        for name, n in manifest["files"].items():
            print(f"{args.out}/{name}.jsonl: {n} rows")
        return 0
    from alignkit.gym.tiny_model import build_tiny_model

    out = build_tiny_model(Path(args.out), args.size, args.seed, classifier=args.classifier)
    print(f"tiny {'classifier' if args.classifier else 'causal LM'} (size {args.size}, seed {args.seed}) written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
