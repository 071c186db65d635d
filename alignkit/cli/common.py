"""What several subcommands share: `CliError`, `--set`, endpoint / reward-model / judge-model options, and the
checks of model arguments that run before anything loads."""

from __future__ import annotations

import argparse
import contextlib
from typing import Iterator

from alignkit.errors import AlignkitError


class CliError(AlignkitError):
    """A bad command-line value: printed as one clean message, exit code 2."""


@contextlib.contextmanager
def user_errors(*types: type[Exception], prefix: str = "") -> Iterator[None]:
    """Turn the library errors of `types` raised inside into `CliError`s (one line, exit 2); an `AlignkitError`
    passes through unchanged (it is mapped to its message in `alignkit.cli.main`)."""
    try:
        yield
    except AlignkitError:
        raise
    except types as err:
        raise CliError(f"{prefix}{err}") from None


def add_set(p: argparse.ArgumentParser) -> None:
    """`--set KEY=VALUE`: any recipe key, by its dotted name (validated by the recipe's pydantic models)."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set training.learning_rate=1e-5 (repeatable)")


def add_endpoint_options(p: argparse.ArgumentParser, key_flag: str = "--api-key") -> None:
    p.add_argument(key_flag, dest="api_key", default=None,
                   help="API key for an endpoint URL (OPENAI_API_KEY is used for https://api.openai.com only)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each endpoint request (default 120)")
    p.add_argument("--retries", type=int, default=2, help="retries of a timed-out or failed endpoint request (default 2)")
    p.add_argument("--allow-plain-http-key", action="store_true",
                   help="send --api-key over plain http to a host other than this machine (trusted networks only)")


def add_reward_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-remote-code", action="store_true",
                   help="reward model: run the model folder's own code (remote-code reward models such as ArmoRM)")
    p.add_argument("--reward-output", default="logits",
                   help="reward model: which output is the reward: logits (one label), logits:K, or an attribute of the "
                        "model's output, e.g. score for ArmoRM (default logits)")
    p.add_argument("--device", default=None, help="reward model: a torch device (default: this process's accelerator)")


def reward_options(args: argparse.Namespace) -> dict:
    """The reward model options the command line sets (only those that differ from the defaults)."""
    options = {"trust_remote_code": args.trust_remote_code, "output": args.reward_output, "device": args.device}
    defaults = {"trust_remote_code": False, "output": "logits", "device": None}
    return {k: v for k, v in options.items() if v != defaults[k]}


def add_judge_model_options(p: argparse.ArgumentParser, key_flag: str = "--api-key") -> None:
    p.add_argument("--model", help="judge model folder (hf/vllm), reward model folder, or the model name at --endpoint")
    p.add_argument("--endpoint", help="OpenAI-compatible URL of the judge model (e.g. from `alignkit serve`), or for "
                                      "--judge remote an `alignkit judge-serve` URL")
    add_endpoint_options(p, key_flag)
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
    add_reward_model_options(p)


def check_model_arg(flag: str, value: str | None) -> None:
    """Fail before loading anything when a model argument is neither a folder, tiny:<size>, a URL nor a usable hub id."""
    from alignkit.config import TINY_MODEL_PREFIX, model_source_problem

    if not value or value.startswith(("http://", "https://", TINY_MODEL_PREFIX)):
        return
    problem = model_source_problem(value)
    if problem:
        raise CliError(f"{flag}: {problem}")


def endpoint_options(args: argparse.Namespace) -> dict:
    """Options for an OpenAI-compatible endpoint client from the command line."""
    if args.timeout <= 0 or args.retries < 0:
        raise CliError(f"--timeout must be > 0 and --retries >= 0, got {args.timeout:g} and {args.retries}")
    return {"api_key": args.api_key, "timeout": args.timeout, "max_retries": args.retries,
            "allow_plain_http_key": args.allow_plain_http_key}
