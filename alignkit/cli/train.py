"""`alignkit train`, `alignkit prepare`, `alignkit recipes show`: recipe files of any shape, through the run orchestrator
(`alignkit.engine.orchestrator`) and the one recipe loader (`alignkit.config.load_plan`)."""

from __future__ import annotations

import argparse

from alignkit.cli.common import add_set


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the method a recipe names")
    p.add_argument("recipe")
    add_set(p)
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from the last checkpoint in output_dir (or the one given)")
    p.add_argument("--no-launch", action="store_true", help="run in this process even if the recipe asks for several")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("prepare", help="compute and cache a recipe's reference signals (no training)")
    p.add_argument("recipe")
    add_set(p)
    p.set_defaults(handler=cmd_prepare)

    p = sub.add_parser("recipes", help="inspect recipes")
    rsub = p.add_subparsers(dest="recipes_command", required=True)
    show = rsub.add_parser("show", help="validate a recipe and print it fully resolved")
    show.add_argument("recipe")
    show.add_argument("--schema-only", action="store_true", help="validate keys and types but not that files exist (e.g. GPU recipes on a laptop)")
    add_set(show)
    p.set_defaults(handler=cmd_recipes)


def cmd_train(args: argparse.Namespace) -> int:
    from alignkit.engine.orchestrator import run_recipe

    outcome = run_recipe(args.recipe, args.overrides, resume=args.resume, launch=not args.no_launch)
    if outcome.kind == "staged" and outcome.exit_code == 0:
        print("stages: " + ", ".join(f"{s.name} -> {s.output}" for s in outcome.stages))
    for s in outcome.rounds:
        print(f"round {s['round']}: {s.get('samples', '?')} judged samples, {100 * s.get('positive', float('nan')):.0f}% judged fine "
              f"-> {s['checkpoint']}")
    return outcome.exit_code


def cmd_prepare(args: argparse.Namespace) -> int:
    from alignkit.engine.orchestrator import prepare_recipe

    print(prepare_recipe(args.recipe, args.overrides))
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from alignkit.config import describe_plan, load_plan

    notes: list[str] = []  # what cannot be checked here (hub models and datasets while offline), printed as comments
    print(describe_plan(load_plan(args.recipe, args.overrides, check_files=not args.schema_only, notes=notes)), end="")
    return 0
