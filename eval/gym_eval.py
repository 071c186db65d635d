"""Evaluate models on the gym's held-out prompts with the gold reward.

    python eval/gym_eval.py data/gym/base-s runs/dpo_gym/final        # base first: KL is measured to it
    python eval/gym_eval.py MODEL ... --samples 8 --json report.json
    python eval/gym_eval.py data/gym/base-s --noisy data/gym/heldout_noisy_prompts.jsonl --samples 16

Prints a table (mean ± standard error over prompts) of gold reward, accuracy on verifiable families,
unsafe-compliance rate, over-refusal rate, politeness, mean length and KL to the base model.
With --noisy, it prints instead each model's gold reward on the canonical prompts vs their noisy
variants in that file, and the gap paired by task (per noise kind too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="model folders (or tiny:<size>); the first is the KL base unless --base")
    parser.add_argument("--base", help="model the KL is measured against (default: the first model)")
    parser.add_argument("--prompts", default="data/gym/heldout_prompts.jsonl")
    parser.add_argument("--samples", type=int, default=4, help="completions per prompt")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the figures (and every scored sample) here")
    parser.add_argument("--noisy", help="noisy prompts file (rows: prompt, canonical, noise): compare canonical vs noisy prompts")
    parser.add_argument("--reward-model", help="also score with this reward model: its mean score, its fidelity to gold, "
                        "and best-of-N by the reward model vs by gold (needs --samples >= the largest N)")
    parser.add_argument("--bon", default="1,4,16", help="N values of the best-of-N table")
    parser.add_argument("--pairs", default="data/gym/heldout_preference.jsonl", help="held-out pairs for the reward model's accuracy")
    args = parser.parse_args()

    from rich.console import Console

    from alignkit.generation import HFGenerator
    from alignkit.gym.evaluation import evaluate, format_reports, load_prompts

    if args.noisy:
        from alignkit.gym.evaluation import format_prompt_gaps, load_prompt_variants, prompt_gap

        variants = load_prompt_variants(args.noisy)
        gaps = [prompt_gap(m, variants, args.samples, args.temperature, args.max_tokens, args.seed) for m in args.models]
        Console(width=160).print(format_prompt_gaps(gaps))
        if args.json:
            Path(args.json).write_text(json.dumps({"noisy": args.noisy, "samples": args.samples, "temperature": args.temperature,
                                                   "seed": args.seed, "models": [g.to_json() for g in gaps]}, indent=1))
        return
    prompts = load_prompts(args.prompts)
    base = HFGenerator.from_pretrained(args.base or args.models[0])
    scorer = None
    if args.reward_model:
        from alignkit.scoring import RewardModelScorer

        scorer = RewardModelScorer(args.reward_model)
    reports = [evaluate(m, prompts, base, args.samples, args.temperature, args.max_tokens, args.seed, scorer) for m in args.models]
    console = Console(width=160)
    console.print(format_reports(reports))
    extra: dict = {}
    if scorer is not None:
        from rich.table import Table

        from alignkit.gym.evaluation import best_of_n_table, reward_model_fidelity

        fidelity = reward_model_fidelity(scorer, reports[0], args.pairs)
        console.print(f"reward model {args.reward_model}: held-out pairwise accuracy {fidelity['pairwise_accuracy']:.3f} "
                      f"± {fidelity['pairwise_accuracy_se']:.3f} ({fidelity['pairs']} pairs of {args.pairs}); Spearman with gold "
                      f"{fidelity['spearman_with_gold']:.3f} over {fidelity['samples']} samples of {reports[0].model}")
        ns = [int(n) for n in args.bon.split(",") if int(n) <= args.samples]
        table = Table(title="best-of-N on held-out prompts: selected by the reward model vs by gold (mean ± SE over prompts)")
        table.add_column("model / quantity")
        for n in ns:
            table.add_column(f"N={n}", justify="right")
        extra = {"reward_model": args.reward_model, "fidelity": fidelity, "best_of_n": {}}
        for r in reports:
            rows = best_of_n_table(r, ns)
            extra["best_of_n"][r.model] = {k: {n: [v.mean, v.se] for n, v in row.items()} for k, row in rows.items()}
            for quantity, row in rows.items():
                table.add_row(f"{r.model}: {quantity}", *(str(row[n]) for n in ns))
        console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"prompts": args.prompts, "samples": args.samples, "temperature": args.temperature,
                                               "seed": args.seed, "models": [r.to_json() for r in reports], **extra,
                                               "scored_samples": {r.model: r.samples for r in reports}}, indent=1))


if __name__ == "__main__":
    main()
