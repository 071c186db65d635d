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
    reports = [evaluate(m, prompts, base, args.samples, args.temperature, args.max_tokens, args.seed) for m in args.models]
    Console(width=160).print(format_reports(reports))
    if args.json:
        Path(args.json).write_text(json.dumps({"prompts": args.prompts, "samples": args.samples, "temperature": args.temperature,
                                               "seed": args.seed, "models": [r.to_json() for r in reports],
                                               "scored_samples": {r.model: r.samples for r in reports}}, indent=1))


if __name__ == "__main__":
    main()
