"""`alignkit gym ...`: the alignment gym's tiny models, synthetic data, pretraining and critic evaluation."""

from __future__ import annotations

import argparse
from pathlib import Path

from alignkit.cli.common import CliError, add_set, check_model_arg
from alignkit.cli.flags import recipe_flag


def register(sub: argparse._SubParsersAction) -> None:
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
    recipe_flag(pt, "--seed", "training.seed", role="the run's seed", default=0)
    pt.add_argument("--save-dtype", default="float32", choices=["float32", "bfloat16"], help="dtype of the saved weights")
    pt.add_argument("--recipe", default=None,
                    help="SFT recipe (default recipes/gym_base_tiny.yaml; recipes/gym_teacher_tiny.yaml for the teacher)")
    add_set(pt)
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
    p.set_defaults(handler=cmd_gym)


def cmd_gym(args: argparse.Namespace) -> int:
    if args.gym_command == "pretrain":
        from alignkit.gym.pretrain import BASE_RECIPE, pretrain

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
    from alignkit.judge.critic_eval import evaluate_critic, read_judgment_triples, write_critic_report
    from alignkit.judge.gym_judge import format_critic_agreement

    check_model_arg("--model", args.model)
    rows = read_judgment_triples(args.data, args.limit)
    report, critiques = evaluate_critic(args.model, rows, args.backend)
    print(format_critic_agreement(report))
    if args.out:
        print(f"written: {write_critic_report(args.out, args.model, args.data, rows, report, critiques)}")
    return 0
