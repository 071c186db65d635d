"""P-Aligner on the gym: does rewriting noisy held-out prompts help the base policy?

    python eval/paligner_gym.py --rewriter runs/paligner_rewriter_tiny/dpo/final --samples 16

For each held-out noisy prompt (`data/gym/heldout_noisy_prompts.jsonl`: forms the rewriter's training never
saw), the trained rewriter writes x′ once, greedily; the downstream base policy answers the raw prompt, x′,
and the canonical prompt; every response is scored against the original task by the gym's gold reward and by
the gym reward model. Reported, paired by prompt with standard errors: gold and RM reward of raw vs
rewritten vs canonical, the fraction of the canonical gap that rewriting recovers, the parse rate, and a
pairwise comparison of rewritten vs raw responses in both orders (win/tie/lose; a win counts only when it
wins in both orders) under gold and under the reward model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")


def mean_se(values) -> tuple[float, float]:
    import numpy as np

    x = np.asarray(values, dtype=float)
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x)))


def fmt(m: float, s: float, signed: bool = False) -> str:
    return (f"{m:+.3f}" if signed else f"{m:.3f}") + f" ± {s:.3f}" + (f" ({m / s:+.1f} SE)" if signed and s > 0 else "")


def pairwise(a, b) -> str:
    """Win/tie/lose of a over b per prompt, judged in both orders: a pair wins only if it wins in both orders."""
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    # a judge in both orders that compares means: order A/B and B/A agree for a score-based judge, so a prompt is
    # a win when a > b, a loss when a < b, a tie otherwise (ties in both orders count as ties)
    win, lose = float((a > b).mean()), float((a < b).mean())
    return f"{100 * win:.1f} / {100 * (1 - win - lose):.1f} / {100 * lose:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rewriter", required=True)
    parser.add_argument("--downstream", default="data/gym/base-s")
    parser.add_argument("--reward-model", default="data/gym/rm-s")
    parser.add_argument("--prompts", default="data/gym/heldout_noisy_prompts.jsonl")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the figures and the rewrites here")
    args = parser.parse_args()

    import numpy as np

    from alignkit.generation import HFGenerator, SamplingParams
    from alignkit.paligner.rewrite import rewrite_prompts
    from alignkit.scoring import GoldScorer, RewardModelScorer
    from alignkit.scoring.base import score_groups

    rows = [json.loads(line) for line in Path(args.prompts).read_text().splitlines() if line.strip()]
    raw = [r["prompt"] for r in rows]
    rewritten = rewrite_prompts(HFGenerator.from_pretrained(args.rewriter), raw, max_tokens=160)
    new = [p for p, _ in rewritten]
    parsed = [ok for _, ok in rewritten]
    gen = HFGenerator.from_pretrained(args.downstream)
    params = SamplingParams(n=args.samples, temperature=1.0, max_tokens=args.max_tokens, seed=args.seed)
    rm, gold = RewardModelScorer(args.reward_model), GoldScorer()
    scores: dict[str, dict[str, np.ndarray]] = {}
    for name, prompts in (("raw", raw), ("rewritten", new), ("canonical", [r["canonical"] for r in rows])):
        texts = [[c.text for c in r.completions] for r in gen.generate(prompts, params)]
        originals = [r["canonical"] for r in rows]  # every response is judged against the original task
        scores[name] = {"gold": np.asarray(score_groups(gold, originals, texts)).mean(-1),
                        "rm": np.asarray(score_groups(rm, originals, texts)).mean(-1)}
        print(f"scored {name}", file=sys.stderr)
    lines = [f"held-out noisy prompts: {len(rows)} ({', '.join(sorted({r['noise'] for r in rows}))}); {args.samples} samples each; "
             f"rewriter parsed {sum(parsed)}/{len(rows)} ({100 * sum(parsed) / len(rows):.1f}%), changed {sum(a != b for a, b in zip(raw, new))}",
             "", "| | raw | rewritten | canonical | rewritten − raw (paired) | share of the canonical gap recovered |",
             "|---|---:|---:|---:|---:|---:|"]
    out = {"prompts": len(rows), "samples": args.samples, "parsed": sum(parsed), "by_noise": {}}
    for metric in ("gold", "rm"):
        r, w, c = (scores[k][metric] for k in ("raw", "rewritten", "canonical"))
        gain, gap = mean_se(w - r), mean_se(c - r)
        lines.append(f"| {metric} | {fmt(*mean_se(r))} | {fmt(*mean_se(w))} | {fmt(*mean_se(c))} | {fmt(*gain, signed=True)} | "
                     f"{100 * gain[0] / gap[0]:.0f}% |")
        out[metric] = {"raw": mean_se(r), "rewritten": mean_se(w), "canonical": mean_se(c), "gain": gain, "gap": gap}
    lines += ["", "| noise kind | gold raw | gold rewritten | paired gain |", "|---|---:|---:|---:|"]
    for kind in sorted({r["noise"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["noise"] == kind]
        r, w = scores["raw"]["gold"][idx], scores["rewritten"]["gold"][idx]
        lines.append(f"| {kind} | {fmt(*mean_se(r))} | {fmt(*mean_se(w))} | {fmt(*mean_se(w - r), signed=True)} |")
        out["by_noise"][kind] = {"raw": mean_se(r), "rewritten": mean_se(w)}
    lines += ["", "rewritten vs raw, pairwise per prompt in both orders (win / tie / lose, %): "
              f"gold {pairwise(scores['rewritten']['gold'], scores['raw']['gold'])}; "
              f"reward model {pairwise(scores['rewritten']['rm'], scores['raw']['rm'])}"]
    print("\n".join(lines))
    if args.json:
        out["rewrites"] = [{"raw": a, "rewritten": b, "parsed": ok, "canonical": r["canonical"]} for a, b, ok, r in zip(raw, new, parsed, rows)]
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
