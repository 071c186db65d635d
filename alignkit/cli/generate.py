"""`alignkit serve`, `alignkit generate`, `alignkit bon`: serving a model, sampling a prompt file, best-of-N."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from alignkit.cli.common import (
    CliError, add_endpoint_options, add_reward_model_options, add_set, check_model_arg, endpoint_options, reward_options, user_errors,
)
from alignkit.cli.flags import recipe_flag


def register_serve_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model behind an OpenAI-compatible API (vLLM, or --backend hf)")
    p.add_argument("model", help="model folder or tiny:<size>")
    p.add_argument("--backend", default="auto", choices=["auto", "vllm", "hf"], help="auto: vllm when installed")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("ALIGNKIT_API_KEY"),
                   help="require this bearer token (default: $ALIGNKIT_API_KEY)")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="serve on a non-loopback --host without --api-key (anyone who reaches the port can use it)")
    p.add_argument("--served-model-name", help="name clients use (default: the model argument)")
    p.add_argument("--lora-modules", nargs="*", default=[], metavar="NAME=PATH", help="LoRA adapters to serve (vllm)")
    p.add_argument("--startup-timeout", type=float, default=900)
    p.add_argument("--vllm-args", default="", help="further vLLM server arguments, quoted, e.g. --vllm-args='--max-model-len 512'")
    p.set_defaults(handler=cmd_serve)
    p = sub.add_parser("generate", help="sample completions (with log-probs) for a prompt file into JSONL, cached")
    p.add_argument("recipe", nargs="?", help="take model, prompts (data.train) and template from a recipe")
    add_set(p)
    _add_sampling(p, n_default=4)
    p.add_argument("--urial", nargs="?", const="builtin", metavar="PREFIX_FILE",
                   help="URIAL: align a base model with a fixed in-context prefix (template urial, or urial:PREFIX_FILE "
                        "with your own system text and examples); stops at the next '# Query' (see docs/generation.md)")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="penalise tokens already in the prompt or completion (1.0 = off; URIAL's paper uses 1.1)")
    p.set_defaults(handler=cmd_generate)


def register_bon(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bon", help="best-of-N (or --worst worst-of-N) selection per prompt")
    _add_sampling(p, n_default=8)
    p.add_argument("--scorer", default="reward-model", choices=["reward-model", "rm", "judge", "gold"],
                   help="reward-model (alias rm): a sequence-classification reward model; judge: a pointwise LLM judge; gold: the gym's")
    p.add_argument("--reward-model", help="reward model folder or hub id for --scorer reward-model")
    add_reward_model_options(p)
    p.add_argument("--judge-model", help="judge model folder or endpoint URL for --scorer judge")
    p.add_argument("--worst", action="store_true", help="select the lowest-scoring completion instead")
    p.add_argument("--pairs", metavar="OUT", help="also write on-policy preference pairs (best as chosen, worst as "
                   "rejected; prompts whose samples all tie are skipped) for DPO")
    p.add_argument("--min-margin", type=float, default=0.0, help="with --pairs: keep a pair only if best - worst exceeds this")
    p.set_defaults(handler=cmd_bon)


def _add_sampling(p: argparse.ArgumentParser, n_default: int) -> None:
    # The flags that stand for recipe keys (a recipe given to `generate` sets them) come from the recipe's fields.
    recipe_flag(p, "--model", "model.path", role="the model to sample (or an OpenAI-compatible endpoint URL)", default=None)
    recipe_flag(p, "--prompts", "data.train", role="data file with prompts (any prompt-bearing format)", default=None)
    recipe_flag(p, "--format", "data.format", role="data format of --prompts (detected if omitted)", default=None)
    p.add_argument("--n", type=int, default=n_default, help="completions per prompt")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm", "openai"])
    recipe_flag(p, "--template", "data.template", role="how prompts are rendered")
    recipe_flag(p, "--max-prompt-length", "data.max_prompt_length", role="prompt truncation", default=None)
    p.add_argument("--limit", type=int, help="use only the first N prompts")
    p.add_argument("--no-cache", action="store_true", help="sample again even if this exact request is cached")
    p.add_argument("--out", required=True, help="output JSONL")
    add_endpoint_options(p)


def cmd_serve(args: argparse.Namespace) -> int:
    import shlex

    from alignkit.generation.serve import check_bind, serve
    from alignkit.generation.vllm_engine import vllm_available

    with user_errors(ValueError):
        check_bind(args.host, args.api_key, args.allow_unauthenticated)
    check_model_arg("model", args.model)
    backend = args.backend if args.backend != "auto" else ("vllm" if vllm_available() else "hf")
    return serve(args.model, backend, args.host, args.port, args.api_key, args.lora_modules, args.served_model_name,
                 shlex.split(args.vllm_args), args.startup_timeout, allow_unauthenticated=args.allow_unauthenticated)


def _sampling_params(args: argparse.Namespace):
    """The command line's sampling parameters, validated (before any data is read or model loaded)."""
    from alignkit.generation.base import SamplingParams

    with user_errors(ValueError):
        return SamplingParams(n=args.n, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                              stop=tuple(args.stop), seed=args.seed, logprobs=True,
                              repetition_penalty=getattr(args, "repetition_penalty", 1.0))


def _rollouts(args: argparse.Namespace) -> list[dict]:
    from alignkit.data.templates import check_template
    from alignkit.generation.rollouts import read_prompt_rows, rollouts, static_prefix_tokens

    if not args.model or not args.prompts:
        raise CliError("give --model and --prompts (or a recipe for `alignkit generate`)")
    url = args.model.startswith(("http://", "https://"))
    if not url and not args.model.startswith("tiny:") and not Path(args.model).exists():
        raise CliError(f"model {args.model!r} is not a folder, tiny:<size> or an endpoint URL")
    with user_errors(ValueError, prefix="--template: "):
        check_template(args.template)
    params = _sampling_params(args)
    if args.max_prompt_length is not None and not url:
        length = static_prefix_tokens(args.model, args.template)
        if length is not None and args.max_prompt_length <= length:
            raise CliError(f"--max-prompt-length {args.max_prompt_length} cannot hold the {length}-token URIAL prefix plus a "
                           f"query: it bounds the whole prompt and the prefix is never cut; raise it above {length} or leave it unset")
    options = endpoint_options(args) if url else {}
    rows = read_prompt_rows(args.prompts, args.format)
    if args.limit:
        rows = rows[: args.limit]
    return rollouts(args.model, rows, params, args.backend, args.template, cache=not args.no_cache,
                    max_prompt_length=args.max_prompt_length, **options)


def cmd_generate(args: argparse.Namespace) -> int:
    from alignkit.generation.rollouts import write_jsonl

    if args.recipe:
        from alignkit.config import load_recipe

        recipe = load_recipe(args.recipe, args.overrides)
        args.model = args.model or recipe.model.path
        args.prompts = args.prompts or recipe.data.train[0]
        if not args.urial:  # a recipe's max_prompt_length is sized for its own template, not for URIAL's prefix
            args.template = recipe.data.template
            args.max_prompt_length = args.max_prompt_length or recipe.data.max_prompt_length
    if args.urial:
        if args.template not in ("chat", "urial") and not args.template.startswith("urial:"):
            raise CliError(f"--urial sets the template; it cannot be combined with --template {args.template!r}")
        args.template = "urial" if args.urial == "builtin" else f"urial:{args.urial}"
    rows = _rollouts(args)
    write_jsonl(args.out, rows)
    total = sum(len(c["token_ids"]) for r in rows for c in r["completions"])
    print(f"{len(rows)} prompts x {args.n} completions ({total} tokens) written to {args.out}")
    return 0


def cmd_bon(args: argparse.Namespace) -> int:
    from alignkit.generation.rollouts import write_jsonl
    from alignkit.judge.scorer import make_scorer
    from alignkit.scoring.best_of_n import best_of_n

    _sampling_params(args)  # a bad --n/--temperature fails before the scorer's model loads
    rm = args.scorer in ("reward-model", "rm")
    path = args.reward_model if rm else args.judge_model
    check_model_arg("--reward-model" if rm else "--judge-model", path)
    options = reward_options(args) if rm else {}
    if args.scorer == "judge" and path and path.startswith(("http://", "https://")):
        endpoint = endpoint_options(args)
        options = {"api_key": endpoint.pop("api_key"), "endpoint_options": endpoint}
    with user_errors(ValueError):
        scorer = make_scorer(args.scorer, path, args.template, **options)  # fail on a bad scorer before sampling
    selected = best_of_n(_rollouts(args), scorer, args.worst)
    write_jsonl(args.out, selected)
    mean = sum(r["score"] for r in selected) / len(selected)
    print(f"{'worst' if args.worst else 'best'}-of-{args.n} for {len(selected)} prompts (mean selected score {mean:.4f}) "
          f"written to {args.out}")
    if args.pairs:
        from alignkit.scoring.best_of_n import preference_pairs

        pairs = preference_pairs(selected, args.min_margin)
        write_jsonl(args.pairs, pairs)
        print(f"{len(pairs)} preference pairs ({len(selected) - len(pairs)} prompts tied) written to {args.pairs}")
    return 0
