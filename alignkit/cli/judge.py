"""`alignkit judge` and `alignkit judge-serve`: judging a data file, and serving a judge over HTTP."""

from __future__ import annotations

import argparse
import os

from alignkit.cli.common import CliError, add_judge_model_options, check_model_arg, endpoint_options, reward_options, user_errors

JUDGE_KINDS = ["llm", "pointwise", "pairwise", "exact", "contains", "normalized-exact", "reward", "reward-pairwise"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("judge", help="judge answers (LLM, lexical, reward model) and report agreement with human labels")
    p.add_argument("--data", required=True, help="judge items: question, answer, reference, model, human_label (JSONL/JSON/CSV/Parquet)")
    p.add_argument("--judge", required=True, choices=[*JUDGE_KINDS, "field", "remote"],
                   help="llm = reference-based correct/incorrect; pairwise compares `answer` with `reference` in both orders; "
                        "remote = a judge served by `alignkit judge-serve` at --endpoint")
    add_judge_model_options(p)
    p.add_argument("--field", help="for --judge field: the column with the labels to evaluate")
    p.add_argument("--low-confidence", default="fold", choices=["fold", "separate"],
                   help="hedged judge verdicts ('maybe correct'): fold = count the hedged label (default; the official Judging "
                        "the Judges code codes every parsed verdict +1/-1); separate = no verdict (0), like an unparsed one")
    p.add_argument("--human-low-confidence", default="separate", choices=["separate", "fold"],
                   help="hedged human labels ('maybe correct'): separate = no label (0) in the agreement statistics (default; "
                        "the official code's coding of a human who was not confident); fold = count the hedged label")
    p.add_argument("--unparsed", default="incorrect", choices=["incorrect", "exclude"],
                   help="judge accuracy with no-verdict items counted as 'incorrect' (default; the official convention) or left "
                        "out; both are reported, this picks the headline")
    p.add_argument("--human-labels", default="human_label", help="column with the human labels ('none' for no comparison)")
    p.add_argument("--group-by", default="model", help="column naming the evaluated model (per-model scores, ranking)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the CIs")
    p.add_argument("--out", default="runs/judge", help="output folder")
    p.set_defaults(handler=cmd_judge)
    p = sub.add_parser("judge-serve", help="serve a judge over HTTP (POST /v1/judge) for training loops on other machines")
    p.add_argument("--judge", required=True, choices=JUDGE_KINDS, help="the judge to serve (as for `alignkit judge`)")
    add_judge_model_options(p, key_flag="--endpoint-api-key")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--api-key", dest="serve_api_key", default=os.environ.get("ALIGNKIT_API_KEY"),
                   help="require this bearer token from clients (default: $ALIGNKIT_API_KEY); --endpoint-api-key is the key "
                        "for the judge model's --endpoint")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="serve on a non-loopback --host without --api-key (anyone who reaches the port can use it)")
    p.set_defaults(handler=cmd_judge_serve)


def _make_judge(args: argparse.Namespace):
    """The judge the command line names; a bad option or template fails here, before any model loads."""
    from alignkit.judge.run import make_judge

    if not args.endpoint:
        check_model_arg("--model", args.model)
    options = endpoint_options(args)
    with user_errors(ValueError):
        return make_judge(args.judge, args.model, args.endpoint, args.template, args.backend, getattr(args, "field", None),
                          options.pop("api_key"), cache=not args.no_cache, max_tokens=args.max_tokens, endpoint_options=options,
                          pair_rule=args.pair_rule, reward_options=reward_options(args), truncation=args.truncate)


def cmd_judge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from alignkit.judge.report import to_markdown
    from alignkit.judge.run import run_judge

    if not Path(args.data).exists():
        raise CliError(f"data file {args.data} does not exist")
    human = None if args.human_labels.lower() == "none" else args.human_labels
    judge = _make_judge(args)
    with user_errors(ValueError):
        report = run_judge(args.data, judge, args.out, human, args.group_by or None, args.bootstrap,
                           low_confidence=args.low_confidence, unparsed=args.unparsed,
                           human_low_confidence=args.human_low_confidence)
    print(to_markdown(report))
    print("written: " + ", ".join(report["files"]))
    return 0


def cmd_judge_serve(args: argparse.Namespace) -> int:
    from alignkit.generation.serve import check_bind
    from alignkit.judge.server import serve_judge

    with user_errors(ValueError):
        check_bind(args.host, args.serve_api_key, args.allow_unauthenticated)  # before the judge model loads
    return serve_judge(_make_judge(args), args.host, args.port, args.serve_api_key, args.allow_unauthenticated)
