"""`alignkit paligner synthesize | export` and `alignkit rewrite`: P-Aligner's instruction rewrites."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from alignkit.cli.common import CliError, add_set, check_model_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("paligner", help="P-Aligner: MCTS synthesis of instruction rewrites and their training data")
    psub = p.add_subparsers(dest="paligner_command", required=True)
    s = psub.add_parser("synthesize", help="run (or resume) the principle-guided MCTS over a config's seed instructions")
    s.add_argument("--config", required=True, help="synthesis YAML (see docs/paligner.md)")
    add_set(s)
    e = psub.add_parser("export", help="training data from finished trees (ablations: --limit, --random)")
    e.add_argument("--trees", required=True, help="trees.jsonl written by synthesize")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--limit", type=int, help="use only each tree's first N expansions (the paper's truncated-tree ablation)")
    e.add_argument("--random", action="store_true", help="a random node instead of the best (ablation)")
    e.add_argument("--principles", help="the principle table the trees were searched with (default: built-in)")
    p.set_defaults(handler=cmd_paligner)
    r = sub.add_parser("rewrite", help="rewrite prompts with a trained P-Aligner rewriter (greedy, once) into a prompt file")
    r.add_argument("--model", required=True, help="the rewriter model folder (or an endpoint URL)")
    r.add_argument("--prompts", required=True, help="data file with prompts (any prompt-bearing format)")
    r.add_argument("--format", default=None)
    r.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm", "openai"])
    r.add_argument("--max-tokens", type=int, default=4096, help="the rewriter's decoding length (greedy; 4096 as the official pipeline)")
    r.add_argument("--limit", type=int)
    r.add_argument("--out", required=True, help="output JSONL: prompt (rewritten), raw_prompt, parsed, plus the input row's fields")
    r.set_defaults(handler=cmd_rewrite)


def cmd_paligner(args: argparse.Namespace) -> int:
    if args.paligner_command == "synthesize":
        from alignkit.paligner.synthesis import load_config, make_rewriter, synthesize

        config = load_config(args.config, args.overrides)
        print(json.dumps(synthesize(config, make_rewriter(config.rewriter)), indent=1))
        return 0
    from alignkit.paligner.export import write_training_data

    if not Path(args.trees).is_file():
        raise CliError(f"--trees: file not found: {args.trees}")
    for path, n in write_training_data(args.trees, args.out, args.limit, args.random, args.principles).items():
        print(f"{path}: {n} rows")
    return 0


def cmd_rewrite(args: argparse.Namespace) -> int:
    from alignkit.paligner.rewrite import rewrite_file

    check_model_arg("--model", args.model)
    n, fallbacks = rewrite_file(args.model, args.prompts, args.out, args.format, args.backend, args.max_tokens, args.limit)
    print(f"{n} prompts rewritten into {args.out}; {fallbacks} kept their raw form (no optimized-prompt markers)")
    return 0
