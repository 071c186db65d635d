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
    pt.add_argument("--recipe", default=None,
                    help="SFT recipe (default recipes/gym_base_tiny.yaml; recipes/gym_teacher_tiny.yaml for the teacher)")
    _add_set(pt)
    r = gsub.add_parser("resave", help="copy a trained model folder for shipping (no training state), optionally in bf16")
    r.add_argument("model", help="a trained model folder, e.g. runs/reward_tiny/final")
    r.add_argument("--out", required=True)
    r.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    m = gsub.add_parser("make-data", help="write the gym's datasets (train/held-out splits share no prompt)")
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--heldout-fraction", type=float, default=0.25)
    m.add_argument("--responses-per-prompt", type=int, default=4)
    j = gsub.add_parser("make-judge-data", help="write SFT data for the gym's judge and critic model from the gym's train files")
    j.add_argument("--data", default="data/gym", help="the gym data folder (reads train_judge/train_judgment, writes *_sft.jsonl)")
    c = gsub.add_parser("eval-critic", help="ask a critic model for judgments of held-out gym responses and compare them with gold")
    c.add_argument("--model", required=True, help="the critic model folder (e.g. data/gym/judge-s) or an endpoint URL")
    c.add_argument("--data", default="data/gym/heldout_judgment.jsonl", help="judgment triples: instruction, output, judgment")
    c.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"], help="backend for a local --model")
    c.add_argument("--limit", type=int, help="use only the first N triples")
    c.add_argument("--out", help="write the critiques and the agreement report (JSON) here")
    _add_generation_commands(sub)
    _add_paligner_commands(sub)

    p = sub.add_parser("export", help="write a standalone model folder (transformers and vLLM load it) with a model card")
    p.add_argument("source", metavar="RUN_OR_CHECKPOINT", help="a run folder (training.output_dir), its final/, or a checkpoint-N folder")
    p.add_argument("--out", required=True, help="the folder to write (must not exist or be empty)")
    p.add_argument("--merge-lora", action="store_true", help="merge a LoRA run's adapter into the base weights")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="weights dtype (default: the checkpoint's own)")

    p = sub.add_parser("report", help="one static HTML page comparing runs: curves, before/after, gym, judge, CTRL trade-off")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (training.output_dir), or folders holding runs")
    p.add_argument("--out", default="report.html", help="the HTML file to write (default report.html)")
    p.add_argument("--gym-eval", action="append", default=[], metavar="JSON", help="an eval/gym_eval.py --json file (repeatable)")
    p.add_argument("--judge", action="append", default=[], metavar="REPORT_JSON", help="an alignkit judge report.json (repeatable)")
    p.add_argument("--tradeoff", action="append", default=[], metavar="JSON", help="an eval/ctrl_tradeoff.py tradeoff.json (repeatable)")
    p.add_argument("--title", default="alignkit run report")
    return parser


def _add_paligner_commands(sub) -> None:
    p = sub.add_parser("paligner", help="P-Aligner: MCTS synthesis of instruction rewrites and their training data")
    psub = p.add_subparsers(dest="paligner_command", required=True)
    s = psub.add_parser("synthesize", help="run (or resume) the principle-guided MCTS over a config's seed instructions")
    s.add_argument("--config", required=True, help="synthesis YAML (see docs/paligner.md)")
    _add_set(s)
    e = psub.add_parser("export", help="training data from finished trees (ablations: --limit, --random)")
    e.add_argument("--trees", required=True, help="trees.jsonl written by synthesize")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--limit", type=int, help="use only each tree's first N expansions (the paper's truncated-tree ablation)")
    e.add_argument("--random", action="store_true", help="a random node instead of the best (ablation)")
    e.add_argument("--principles", help="the principle table the trees were searched with (default: built-in)")
    r = sub.add_parser("rewrite", help="rewrite prompts with a trained P-Aligner rewriter (greedy, once) into a prompt file")
    r.add_argument("--model", required=True, help="the rewriter model folder (or an endpoint URL)")
    r.add_argument("--prompts", required=True, help="data file with prompts (any prompt-bearing format)")
    r.add_argument("--format", default=None)
    r.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm", "openai"])
    r.add_argument("--max-tokens", type=int, default=4096, help="the rewriter's decoding length (greedy; 4096 as the official pipeline)")
    r.add_argument("--limit", type=int)
    r.add_argument("--out", required=True, help="output JSONL: prompt (rewritten), raw_prompt, parsed, plus the input row's fields")


def _add_sampling(p: argparse.ArgumentParser, n_default: int) -> None:
    p.add_argument("--model", help="model folder, tiny:<size>, or an OpenAI-compatible endpoint URL")
    p.add_argument("--prompts", help="data file with prompts (any prompt-bearing format)")
    p.add_argument("--format", default=None, help="data format of --prompts (detected if omitted)")
    p.add_argument("--n", type=int, default=n_default, help="completions per prompt")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm", "openai"])
    p.add_argument("--template", default="chat", help="chat, alpaca, pku, raw, urial, urial:PREFIX_FILE, or a format string with {prompt}")
    p.add_argument("--max-prompt-length", type=int, default=None,
                   help="left-truncate prompts to this many tokens (the rule training uses)")
    p.add_argument("--limit", type=int, help="use only the first N prompts")
    p.add_argument("--no-cache", action="store_true", help="sample again even if this exact request is cached")
    p.add_argument("--out", required=True, help="output JSONL")
    _add_endpoint_options(p)


def _add_endpoint_options(p: argparse.ArgumentParser, key_flag: str = "--api-key") -> None:
    p.add_argument(key_flag, dest="api_key", default=None,
                   help="API key for an endpoint URL (OPENAI_API_KEY is used for https://api.openai.com only)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each endpoint request (default 120)")
    p.add_argument("--retries", type=int, default=2, help="retries of a timed-out or failed endpoint request (default 2)")
    p.add_argument("--allow-plain-http-key", action="store_true",
                   help="send --api-key over plain http to a host other than this machine (trusted networks only)")


def _add_reward_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-remote-code", action="store_true",
                   help="reward model: run the model folder's own code (remote-code reward models such as ArmoRM)")
    p.add_argument("--reward-output", default="logits",
                   help="reward model: which output is the reward: logits (one label), logits:K, or an attribute of the "
                        "model's output, e.g. score for ArmoRM (default logits)")
    p.add_argument("--device", default=None, help="reward model: a torch device (default: this process's accelerator)")


def _reward_options(args: argparse.Namespace) -> dict:
    """The reward model options the command line sets (only those that differ from the defaults)."""
    options = {"trust_remote_code": args.trust_remote_code, "output": args.reward_output, "device": args.device}
    defaults = {"trust_remote_code": False, "output": "logits", "device": None}
    return {k: v for k, v in options.items() if v != defaults[k]}


def _add_judge_model_options(p: argparse.ArgumentParser, key_flag: str = "--api-key") -> None:
    p.add_argument("--model", help="judge model folder (hf/vllm), reward model folder, or the model name at --endpoint")
    p.add_argument("--endpoint", help="OpenAI-compatible URL of the judge model (e.g. from `alignkit serve`), or for "
                                      "--judge remote an `alignkit judge-serve` URL")
    _add_endpoint_options(p, key_flag)
    p.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"], help="backend for a local --model")
    p.add_argument("--template", help="built-in template name or a template file (see docs/judge.md); checked before the model loads")
    p.add_argument("--max-tokens", type=int, help="judge decoding length (default 32; 8 pairwise; 256 for <evaluation>-tag templates)")
    p.add_argument("--pair-rule", default="both", choices=["both", "average"],
                   help="pairwise: both = a win or loss only when both orders agree, otherwise a tie (default; MT-Bench); "
                        "average = the mean of the two orders")
    p.add_argument("--no-cache", action="store_true", help="ask the judge model again instead of reusing cached answers")
    p.add_argument("--truncate", default="newlinequestion", choices=["newlinequestion", "newlinequestion2", "newline", "skip"],
                   help="how llm and lexical judges cut each answer before reading it, then strip it: at the first '\\nQ:' "
                        "(default; the official Judging the Judges setting for every judge), '\\nQuestion:', a newline, or "
                        "not at all (skip: strip only)")
    _add_reward_model_options(p)


def _add_generation_commands(sub) -> None:
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
    p = sub.add_parser("generate", help="sample completions (with log-probs) for a prompt file into JSONL, cached")
    p.add_argument("recipe", nargs="?", help="take model, prompts (data.train) and template from a recipe")
    _add_set(p)
    _add_sampling(p, n_default=4)
    p.add_argument("--urial", nargs="?", const="builtin", metavar="PREFIX_FILE",
                   help="URIAL: align a base model with a fixed in-context prefix (template urial, or urial:PREFIX_FILE "
                        "with your own system text and examples); stops at the next '# Query' (see docs/generation.md)")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="penalise tokens already in the prompt or completion (1.0 = off; URIAL's paper uses 1.1)")
    p = sub.add_parser("judge", help="judge answers (LLM, lexical, reward model) and report agreement with human labels")
    p.add_argument("--data", required=True, help="judge items: question, answer, reference, model, human_label (JSONL/JSON/CSV/Parquet)")
    p.add_argument("--judge", required=True, choices=["llm", "pointwise", "pairwise", "exact", "contains", "normalized-exact",
                                                      "reward", "reward-pairwise", "field", "remote"],
                   help="llm = reference-based correct/incorrect; pairwise compares `answer` with `reference` in both orders; "
                        "remote = a judge served by `alignkit judge-serve` at --endpoint")
    _add_judge_model_options(p)
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
    p = sub.add_parser("judge-serve", help="serve a judge over HTTP (POST /v1/judge) for training loops on other machines")
    p.add_argument("--judge", required=True, choices=["llm", "pointwise", "pairwise", "exact", "contains", "normalized-exact",
                                                      "reward", "reward-pairwise"], help="the judge to serve (as for `alignkit judge`)")
    _add_judge_model_options(p, key_flag="--endpoint-api-key")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--api-key", dest="serve_api_key", default=os.environ.get("ALIGNKIT_API_KEY"),
                   help="require this bearer token from clients (default: $ALIGNKIT_API_KEY); --endpoint-api-key is the key "
                        "for the judge model's --endpoint")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="serve on a non-loopback --host without --api-key (anyone who reaches the port can use it)")
    p = sub.add_parser("bon", help="best-of-N (or --worst worst-of-N) selection per prompt")
    _add_sampling(p, n_default=8)
    p.add_argument("--scorer", default="reward-model", choices=["reward-model", "rm", "judge", "gold"],
                   help="reward-model (alias rm): a sequence-classification reward model; judge: a pointwise LLM judge; gold: the gym's")
    p.add_argument("--reward-model", help="reward model folder or hub id for --scorer reward-model")
    _add_reward_model_options(p)
    p.add_argument("--judge-model", help="judge model folder or endpoint URL for --scorer judge")
    p.add_argument("--worst", action="store_true", help="select the lowest-scoring completion instead")
    p.add_argument("--pairs", metavar="OUT", help="also write on-policy preference pairs (best as chosen, worst as "
                   "rejected; prompts whose samples all tie are skipped) for DPO")
    p.add_argument("--min-margin", type=float, default=0.0, help="with --pairs: keep a pair only if best - worst exceeds this")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `alignkit` console script."""
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        handler = {"train": cmd_train, "prepare": cmd_prepare, "recipes": cmd_recipes, "data": cmd_data, "gym": cmd_gym,
                   "paligner": cmd_paligner, "rewrite": cmd_rewrite, "export": cmd_export, "report": cmd_report,
                   "serve": cmd_serve, "generate": cmd_generate, "bon": cmd_bon, "judge": cmd_judge, "judge-serve": cmd_judge_serve}
        return handler[args.command](args)
    except CliError as err:
        print(f"alignkit: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as err:  # an endpoint that is down, a model that does not load: one line, exit 2
        from alignkit.modeling.loading import ModelLoadError
        from alignkit.generation.base import GenerationError

        if isinstance(err, (GenerationError, ModelLoadError)):
            print(f"alignkit: {err}", file=sys.stderr)
            return 2
        raise
    except ValueError as err:  # RecipeError, DataError and validation problems carry their own locations
        from alignkit.config import RecipeError
        from alignkit.data.loaders import DataError
        from alignkit.engine.checkpoints import CheckpointError

        if isinstance(err, (RecipeError, DataError, CheckpointError)):
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
    if recipe.launch.machine_rank is not None:
        cmd += ["--machine_rank", str(recipe.launch.machine_rank)]
    if recipe.launch.main_process_ip:
        cmd += ["--main_process_ip", recipe.launch.main_process_ip]
    if recipe.launch.main_process_port:
        cmd += ["--main_process_port", str(recipe.launch.main_process_port)]
    cmd += [str(x) for x in recipe.launch.extra_args]
    return cmd + ["-m", "alignkit", "train", recipe_path, *extra]


def cmd_train(args: argparse.Namespace) -> int:
    from alignkit.config import is_staged
    from alignkit.engine.rounds import is_online

    if is_staged(args.recipe):
        return _train_stages(args)
    if is_online(args.recipe):
        return _train_rounds(args)
    recipe = _load(args)
    if isinstance(args.resume, str):  # an explicit checkpoint must be complete: fail before any model loads
        from alignkit.engine.checkpoints import resolve_resume

        resolve_resume(recipe.training.output_dir, args.resume, bool((recipe.training.model_extra or {}).get("save_only_model")))
    if (recipe.launch.num_processes > 1 or recipe.launch.config_file) and not _launched() and not args.no_launch:
        extra = [x for o in args.overrides for x in ("--set", o)]
        if args.resume:
            extra += ["--resume"] + ([args.resume] if isinstance(args.resume, str) else [])
        cmd = launch_command(args.recipe, recipe, extra)
        logging.getLogger("alignkit").info("launching: %s", " ".join(cmd))
        return subprocess.call(cmd, env={**os.environ, LAUNCHED_ENV: "1"})
    from rich.console import Console

    from alignkit.engine.run import format_summary, summary_lines, train

    from alignkit.distributed import shutdown

    summary = train(recipe, resume=args.resume)
    shutdown()
    if int(os.environ.get("RANK", "0")) == 0:
        console = Console(width=max(100, Console().width))
        console.print(format_summary(summary))
        for line in summary.notes + summary_lines(summary):
            console.print(line, highlight=False, soft_wrap=True)
    return 0


def _train_stages(args: argparse.Namespace) -> int:
    """Run a staged recipe: each stage's recipe is written beside its model and trained like any recipe;
    a complete stage is skipped, an interrupted one resumed."""
    from alignkit.config import load_staged, recipe_to_yaml
    from alignkit.engine.run import mark_stage_complete, stage_status

    log = logging.getLogger("alignkit")
    stages = load_staged(args.recipe, args.overrides)
    for i, stage in enumerate(stages, 1):
        status = stage_status(stage)
        if status == "complete":
            log.info("stage %d/%d %s: complete (%s), skipped", i, len(stages), stage.name, stage.output)
            continue
        if status == "changed":
            log.warning("stage %d/%d %s: %s was trained by a different recipe; training again", i, len(stages), stage.name, stage.output)
        log.info("stage %d/%d %s: %s", i, len(stages), stage.name, "resuming" if status == "interrupted" else "training")
        folder = stage.output.parent
        folder.mkdir(parents=True, exist_ok=True)
        recipe_file = folder / "stage_recipe.yaml"
        recipe_file.write_text(recipe_to_yaml(stage.recipe))
        sub = argparse.Namespace(recipe=str(recipe_file), overrides=[], resume=status == "interrupted", no_launch=args.no_launch)
        code = cmd_train(sub)
        if code != 0:
            log.error("stage %s failed (exit %d); rerun the same command to resume it", stage.name, code)
            return code
        mark_stage_complete(stage)
    print("stages: " + ", ".join(f"{s.name} -> {s.output}" for s in stages))
    return 0


def _train_rounds(args: argparse.Namespace) -> int:
    """Run (or continue) an online rounds recipe: sample, judge, train, round after round."""
    from alignkit.engine.rounds import run_rounds

    def train_round(recipe, resume: bool) -> None:
        folder = Path(recipe.training.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        from alignkit.config import recipe_to_yaml

        recipe_file = folder / "round_recipe.yaml"
        recipe_file.write_text(recipe_to_yaml(recipe))
        code = cmd_train(argparse.Namespace(recipe=str(recipe_file), overrides=[], resume=resume, no_launch=args.no_launch))
        if code:
            raise CliError(f"round training failed (exit {code}); rerun the same command to resume it")

    for s in run_rounds(args.recipe, args.overrides, train_round):
        print(f"round {s['round']}: {s.get('samples', '?')} judged samples, {100 * s.get('positive', float('nan')):.0f}% judged fine "
              f"-> {s['checkpoint']}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from alignkit.config import is_staged, load_staged, recipe_to_yaml
    from alignkit.engine.run import prepare

    if not is_staged(args.recipe):
        print(prepare(_load(args)))
        return 0
    pending: list[str] = []
    for stage in load_staged(args.recipe, args.overrides):
        needs = [p for p in pending if p in recipe_to_yaml(stage.recipe)]
        if needs:  # its inputs are an earlier stage's model, which does not exist yet
            print(f"stage {stage.name}: waits for {', '.join(needs)} (prepared when the staged recipe trains)")
        else:
            print(f"stage {stage.name}:\n{prepare(stage.recipe)}")
        if not (stage.output / "model.safetensors").is_file():
            pending.append(str(stage.output))
    return 0



def cmd_recipes(args: argparse.Namespace) -> int:
    from alignkit.config import is_staged, load_recipe, load_staged, recipe_to_yaml
    from alignkit.engine.rounds import is_online, load_online

    if is_online(args.recipe):
        import yaml

        settings, common = load_online(args.recipe, args.overrides)
        print(yaml.safe_dump({"online": settings.model_dump(mode="json")}, sort_keys=False), end="")
        print(f"# the recipe each round trains ({settings.recipe}, data.train and model.path set per round)")
        print(recipe_to_yaml(load_recipe(settings.recipe, common, check_files=False)), end="")
        return 0
    notes: list[str] = []  # what cannot be checked here (hub models and datasets while offline), printed as comments
    if is_staged(args.recipe):
        for stage in load_staged(args.recipe, args.overrides, check_files=not args.schema_only, notes=notes):
            print(f"# stage {stage.name} -> {stage.output}\n{recipe_to_yaml(stage.recipe)}---")
    else:
        print(recipe_to_yaml(load_recipe(args.recipe, args.overrides, check_files=not args.schema_only, notes=notes)), end="")
    for note in notes:
        print(f"# note: {note}")
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

        from alignkit.gym.pretrain import BASE_RECIPE

        out = pretrain(args.out, args.size, args.seed, recipe=args.recipe or BASE_RECIPE, overrides=args.overrides,
                       save_dtype=args.save_dtype)
        print(f"gym policy (tiny:{args.size}, seed {args.seed}) written to {out}; evaluate it with: python eval/gym_eval.py {out}")
        return 0
    if args.gym_command == "resave":
        from alignkit.gym.pretrain import ship

        if not Path(args.model, "config.json").is_file():
            raise CliError(f"{args.model} is not a model folder (no config.json)")
        print(f"written to {ship(args.model, args.out, args.dtype)}")
        return 0
    if args.gym_command == "make-judge-data":
        from alignkit.judge.gym_judge import make_judge_data

        for name, n in make_judge_data(args.data).items():
            print(f"{args.data}/{name}: {n} rows")
        return 0
    if args.gym_command == "eval-critic":
        return _eval_critic(args)
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


def _eval_critic(args: argparse.Namespace) -> int:
    from alignkit.data.loaders import iter_rows
    from alignkit.judge.critic import Critic
    from alignkit.judge.gym_judge import critic_agreement, format_critic_agreement
    from alignkit.judge.run import load_judge_model

    _check_model_arg("--model", args.model)
    if not Path(args.data).exists():
        raise CliError(f"data file {args.data} does not exist")
    rows = []
    for location, row in iter_rows(args.data):
        missing = [k for k in ("instruction", "output", "judgment") if k not in row]
        if missing:
            raise CliError(f"{location}: missing field {missing[0]!r} (judgment triples need instruction, output, judgment)")
        rows.append(row)
    rows = rows[: args.limit] if args.limit else rows
    url = args.model.startswith(("http://", "https://"))
    generator, model_id = load_judge_model(None if url else args.model, args.model if url else None, args.backend)
    critic = Critic(generator, model_id=model_id)
    critiques = critic.critiques([r["instruction"] for r in rows], [r["output"] for r in rows])
    report = critic_agreement(critiques, [r["judgment"] for r in rows])
    print(format_critic_agreement(report))
    if args.out:
        from alignkit.cache import write_atomic

        items = [{"instruction": r["instruction"], "output": r["output"], "gold": r["judgment"], "critique": c} for r, c in zip(rows, critiques)]
        text = json.dumps({"model": args.model, "data": args.data, **report, "items": items}, indent=2) + "\n"
        write_atomic(args.out, lambda fh: fh.write(text))
        print(f"written: {args.out}")
    return 0


def _check_model_arg(flag: str, value: str | None) -> None:
    """Fail before loading anything when a model argument is neither a folder, tiny:<size>, a URL nor a usable hub id."""
    from alignkit.config import TINY_MODEL_PREFIX, model_source_problem

    if not value or value.startswith(("http://", "https://", TINY_MODEL_PREFIX)):
        return
    problem = model_source_problem(value)
    if problem:
        raise CliError(f"{flag}: {problem}")


def _endpoint_options(args: argparse.Namespace) -> dict:
    """Options for an OpenAI-compatible endpoint client from the command line."""
    if args.timeout <= 0 or args.retries < 0:
        raise CliError(f"--timeout must be > 0 and --retries >= 0, got {args.timeout:g} and {args.retries}")
    return {"api_key": args.api_key, "timeout": args.timeout, "max_retries": args.retries,
            "allow_plain_http_key": args.allow_plain_http_key}


def cmd_serve(args: argparse.Namespace) -> int:
    from alignkit.generation.serve import check_bind, serve
    from alignkit.generation.vllm_engine import vllm_available

    try:
        check_bind(args.host, args.api_key, args.allow_unauthenticated)
    except ValueError as err:
        raise CliError(str(err)) from None
    _check_model_arg("model", args.model)
    backend = args.backend if args.backend != "auto" else ("vllm" if vllm_available() else "hf")
    import shlex

    extra = shlex.split(args.vllm_args)
    return serve(args.model, backend, args.host, args.port, args.api_key, args.lora_modules, args.served_model_name, extra,
                 args.startup_timeout, allow_unauthenticated=args.allow_unauthenticated)


def _sampling_params(args: argparse.Namespace):
    """The command line's sampling parameters, validated (before any data is read or model loaded)."""
    from alignkit.generation.base import SamplingParams

    try:
        return SamplingParams(n=args.n, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                              stop=tuple(args.stop), seed=args.seed, logprobs=True,
                              repetition_penalty=getattr(args, "repetition_penalty", 1.0))
    except ValueError as err:
        raise CliError(str(err)) from None


def _rollouts(args: argparse.Namespace) -> list[dict]:
    from alignkit.generation.rollouts import read_prompt_rows, rollouts

    if not args.model or not args.prompts:
        raise CliError("give --model and --prompts (or a recipe for `alignkit generate`)")
    url = args.model.startswith(("http://", "https://"))
    if not url and not args.model.startswith("tiny:") and not Path(args.model).exists():
        raise CliError(f"model {args.model!r} is not a folder, tiny:<size> or an endpoint URL")
    from alignkit.data.templates import check_template

    try:
        check_template(args.template)
    except ValueError as err:
        raise CliError(f"--template: {err}") from None
    params = _sampling_params(args)
    if args.max_prompt_length is not None and not url:
        _check_prefix_fits(args.model, args.template, args.max_prompt_length)
    options = _endpoint_options(args) if url else {}
    rows = read_prompt_rows(args.prompts, args.format)
    if args.limit:
        rows = rows[: args.limit]
    return rollouts(args.model, rows, params, args.backend, args.template, cache=not args.no_cache,
                    max_prompt_length=args.max_prompt_length, **options)


def _check_prefix_fits(model: str, template: str, max_prompt_length: int) -> None:
    """Fail before sampling when `max_prompt_length` cannot hold a template's static prefix (URIAL) plus a query."""
    from alignkit.data.templates import static_prefix

    if static_prefix(template) is None:
        return
    from alignkit.config import ModelSettings
    from alignkit.data.tokenization import adds_special_tokens, prefixed_text_ids
    from alignkit.modeling.loading import load_tokenizer

    tokenizer = load_tokenizer(ModelSettings(path=model))
    _, length = prefixed_text_ids(tokenizer, static_prefix(template), template, adds_special_tokens(template))
    if max_prompt_length <= length:
        raise CliError(f"--max-prompt-length {max_prompt_length} cannot hold the {length}-token URIAL prefix plus a query: "
                       f"it bounds the whole prompt and the prefix is never cut; raise it above {length} or leave it unset")


def cmd_generate(args: argparse.Namespace) -> int:
    from alignkit.generation.rollouts import write_jsonl

    if args.recipe:
        recipe = _load(args)
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
    _check_model_arg("--reward-model" if rm else "--judge-model", path)
    options = _reward_options(args) if rm else {}
    if args.scorer == "judge" and path and path.startswith(("http://", "https://")):
        endpoint = _endpoint_options(args)
        options = {"api_key": endpoint.pop("api_key"), "endpoint_options": endpoint}
    try:
        scorer = make_scorer(args.scorer, path, args.template, **options)  # fail on a bad scorer before sampling
    except ValueError as err:
        raise CliError(str(err)) from None
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


def _make_judge(args: argparse.Namespace):
    """The judge the command line names; a bad option or template fails here, before any model loads."""
    from alignkit.judge.run import make_judge

    if not args.endpoint:
        _check_model_arg("--model", args.model)
    options = _endpoint_options(args)
    try:
        return make_judge(args.judge, args.model, args.endpoint, args.template, args.backend, getattr(args, "field", None),
                          options.pop("api_key"), cache=not args.no_cache, max_tokens=args.max_tokens, endpoint_options=options,
                          pair_rule=args.pair_rule, reward_options=_reward_options(args), truncation=args.truncate)
    except ValueError as err:
        raise CliError(str(err)) from None


def cmd_judge(args: argparse.Namespace) -> int:
    from alignkit.judge.run import run_judge

    if not Path(args.data).exists():
        raise CliError(f"data file {args.data} does not exist")
    human = None if args.human_labels.lower() == "none" else args.human_labels
    judge = _make_judge(args)
    try:
        report = run_judge(args.data, judge, args.out, human, args.group_by or None, args.bootstrap,
                           low_confidence=args.low_confidence, unparsed=args.unparsed,
                           human_low_confidence=args.human_low_confidence)
    except ValueError as err:
        from alignkit.config import RecipeError
        from alignkit.data.loaders import DataError

        if isinstance(err, (RecipeError, DataError)):
            raise
        raise CliError(str(err)) from None
    from alignkit.judge.report import to_markdown

    print(to_markdown(report))
    print("written: " + ", ".join(report["files"]))
    return 0


def cmd_paligner(args: argparse.Namespace) -> int:
    if args.paligner_command == "synthesize":
        from alignkit.paligner.synthesis import load_config, synthesize

        config = load_config(args.config, args.overrides)
        summary = synthesize(config, _make_rewriter(config.rewriter))
        print(json.dumps(summary, indent=1))
        return 0
    from alignkit.generation.rollouts import write_jsonl
    from alignkit.paligner.export import best_rows, preference_rows, random_node_rows, step_rows
    from alignkit.paligner.mcts import load_trees
    from alignkit.paligner.principles import PrincipleTable

    if not Path(args.trees).is_file():
        raise CliError(f"--trees: file not found: {args.trees}")
    trees = load_trees(args.trees)
    out = Path(args.out)
    table = PrincipleTable.load(args.principles) if args.principles else PrincipleTable()
    files = {"sft_random.jsonl": random_node_rows(trees)} if args.random else {
        "preference.jsonl": preference_rows(trees, args.limit), "sft_best.jsonl": best_rows(trees, args.limit),
        **({} if args.limit else {"sft_steps.jsonl": step_rows(trees, table)})}
    for name, rows in files.items():
        write_jsonl(out / name, rows)
        print(f"{out / name}: {len(rows)} rows")
    return 0


def _make_rewriter(settings):
    """The MCTS expansion operator a synthesis config names."""
    if settings.kind == "gym":
        from alignkit.gym.rewriter import GymRuleRewriter

        return GymRuleRewriter()
    from alignkit.generation.backends import load_generator
    from alignkit.paligner.rewrite import ModelRewriter

    if settings.kind == "endpoint":
        if not settings.url:
            raise CliError("rewriter.url is required for an endpoint rewriter")
        generator = load_generator(settings.url, "openai", api_key=settings.api_key,
                                   **({"model_name": settings.model} if settings.model else {}))
    else:
        _check_model_arg("rewriter.model", settings.model)
        generator = load_generator(settings.model, settings.backend)
    return ModelRewriter(generator, settings.style, settings.max_tokens, settings.temperature, settings.seed)


def cmd_rewrite(args: argparse.Namespace) -> int:
    from alignkit.generation.backends import load_generator
    from alignkit.generation.rollouts import read_prompt_rows, write_jsonl
    from alignkit.paligner.rewrite import rewrite_prompts

    url = args.model.startswith(("http://", "https://"))
    _check_model_arg("--model", args.model)
    rows = read_prompt_rows(args.prompts, args.format)
    if args.limit:
        rows = rows[: args.limit]
    raws = [r["prompt"] if isinstance(r["prompt"], str) else r["prompt"][-1]["content"] for r in rows]
    generator = load_generator(args.model, "openai" if url else args.backend)
    rewritten = rewrite_prompts(generator, raws, args.max_tokens)
    out = [{**r, "prompt": new, "raw_prompt": raw, "parsed": parsed} for r, raw, (new, parsed) in zip(rows, raws, rewritten)]
    fallbacks = sum(not parsed for _, parsed in rewritten)
    write_jsonl(args.out, out)
    print(f"{len(rows)} prompts rewritten into {args.out}; {fallbacks} kept their raw form (no optimized-prompt markers)")
    return 0


def cmd_judge_serve(args: argparse.Namespace) -> int:
    from alignkit.generation.serve import check_bind
    from alignkit.judge.server import serve_judge

    try:
        check_bind(args.host, args.serve_api_key, args.allow_unauthenticated)  # before the judge model loads
    except ValueError as err:
        raise CliError(str(err)) from None
    return serve_judge(_make_judge(args), args.host, args.port, args.serve_api_key, args.allow_unauthenticated)


def cmd_export(args: argparse.Namespace) -> int:
    from alignkit.engine.export import ExportError, export_model

    try:
        out = export_model(args.source, args.out, merge_lora=args.merge_lora, dtype=args.dtype)
    except ExportError as err:
        raise CliError(str(err)) from None
    print(f"exported {args.source} to {out} (model card: {out / 'README.md'})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from alignkit.engine.report import write_report

    try:
        out = write_report(args.runs, args.out, args.gym_eval, args.judge, args.tradeoff, args.title)
    except (ValueError, OSError) as err:
        raise CliError(str(err)) from None
    print(f"report written to {out}")
    return 0


if __name__ == "__main__":  # `python -m alignkit.cli` (after every command function is defined)
    sys.exit(main())
