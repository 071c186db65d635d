"""InfAlign CTRL: best-of-N win rate against KL, measured for trained policies and analytic for the transforms.

    python eval/ctrl_tradeoff.py --base data/gym/base-s --reward-model data/gym/rm-s \\
        --policy identity=runs/ctrl_identity/final --policy bon=runs/ctrl_bon/final --n 4 --out runs/ctrl_tradeoff

For each policy, S samples per held-out prompt are scored by the reward model (and the gym's gold reward,
held out); against S samples of the base policy on the same prompts it reports, with standard errors over
prompts: KL(π‖base) (Monte Carlo: mean of log π(y) − log base(y) over y ~ π), the standard and best-of-N
win rates against the base (plug-in estimator, ties ½) under the reward model and under gold, and paired
differences between policies. The plot draws the analytic win-rate/KL curves of `alignkit.rewards`
(identity and the chosen exponential t; calibrated rewards, continuous limit) with the measured points
on top, as `tradeoff.png`; the numbers go to `tradeoff.json` and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")


def sample_and_score(model: str, prompts: list[str], samples: int, max_tokens: int, seed: int, scorer, base=None) -> dict:
    """Samples of `model` with reward-model and gold scores [P, S] (and log-probs under `base` for the KL)."""
    import torch

    from alignkit.generation import HFGenerator, SamplingParams
    from alignkit.scoring import GoldScorer
    from alignkit.scoring.base import score_groups

    gen = HFGenerator.from_pretrained(model)
    results = gen.generate(prompts, SamplingParams(n=samples, temperature=1.0, max_tokens=max_tokens, seed=seed, logprobs=True))
    texts = [[c.text for c in r.completions] for r in results]
    out = {"rm": torch.tensor(score_groups(scorer, prompts, texts), dtype=torch.float64),
           "gold": torch.tensor(score_groups(GoldScorer(), prompts, texts), dtype=torch.float64)}
    if base is not None:
        ids = [gen.encode(r.prompt) for r in results for _ in r.completions]
        base_lp = base.score(ids, [c.token_ids for r in results for c in r.completions])
        policy_lp = [c.logprob for r in results for c in r.completions]
        kl = torch.tensor([p - sum(b) for p, b in zip(policy_lp, base_lp)], dtype=torch.float64).view(len(prompts), samples)
        out["kl"] = kl.mean(-1)  # per prompt
    return out


def figures(policy: dict, base: dict, n: int) -> dict:
    """Per-prompt KL and win rates against the base under the reward model and gold."""
    from alignkit.rewards import inference_win_rate

    out = {"kl": policy["kl"].numpy()}
    for scorer in ("rm", "gold"):
        for procedure, k in (("standard", 1), ("bon", n)):
            out[f"{scorer}_{procedure}"] = inference_win_rate(policy[scorer], base[scorer], procedure, k).per_prompt
    return out


def mean_se(values) -> tuple[float, float]:
    import numpy as np

    x = np.asarray(values, dtype=float)
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="data/gym/base-s")
    parser.add_argument("--reward-model", default="data/gym/rm-s")
    parser.add_argument("--policy", action="append", default=[], metavar="LABEL=FOLDER",
                        help="a trained policy (repeatable; a label given several times, e.g. for training seeds, is their per-prompt mean)")
    parser.add_argument("--prompts", default="data/gym/heldout_prompts.jsonl")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--n", type=int, default=4, help="N of best-of-N")
    parser.add_argument("--t", type=float, default=None, help="exponent of the analytic bon curve (default: choose_t at --kl)")
    parser.add_argument("--kl", type=float, default=0.5, help="KL budget for choose_t")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--out", default="runs/ctrl_tradeoff")
    args = parser.parse_args()

    import numpy as np

    from alignkit.generation import HFGenerator
    from alignkit.gym.evaluation import load_prompts
    from alignkit.rewards import choose_t, exponential, identity, kl_winrate_curve
    from alignkit.scoring import RewardModelScorer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = load_prompts(args.prompts)
    scorer = RewardModelScorer(args.reward_model)
    base_gen = HFGenerator.from_pretrained(args.base)
    base = sample_and_score(args.base, prompts, args.samples, args.max_tokens, args.seed + 1, scorer)
    runs: dict[str, list[dict]] = {}
    for item in args.policy:
        label, _, folder = item.partition("=")
        policy = sample_and_score(folder, prompts, args.samples, args.max_tokens, args.seed, scorer, base_gen)
        runs.setdefault(label, []).append(figures(policy, base, args.n))
        print(f"measured {label} ({folder})", file=sys.stderr)
    # a label given for several runs (training seeds) stands for their per-prompt mean
    measured = {label: {k: np.mean([np.asarray(r[k]) for r in rs], axis=0) for k in rs[0]} for label, rs in runs.items()}
    t = args.t or choose_t(args.n, args.kl, "bon").t
    betas = np.geomspace(0.01, 20, 60)
    curves = {"identity": kl_winrate_curve(identity(), args.n, betas), f"bon t={t:.1f}": kl_winrate_curve(exponential(t), args.n, betas / np.expm1(t))}

    keys = ["kl", "rm_standard", "rm_bon", "gold_standard", "gold_bon"]
    lines = [f"| policy | KL(π‖base) | RM standard win | RM BoN-{args.n} win | gold standard win | gold BoN-{args.n} win |",
             "|---|---:|---:|---:|---:|---:|"]
    table = {}
    for label, fig in measured.items():
        table[label] = {k: mean_se(fig[k]) for k in keys}
        lines.append(f"| {label} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in table[label].values()) + " |")
    labels = list(measured)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            diffs = {k: mean_se(np.asarray(measured[b][k]) - np.asarray(measured[a][k])) for k in keys}
            lines.append(f"| {b} − {a} (paired) | " + " | ".join(f"{m:+.3f} ± {s:.3f} ({m / s:+.1f} SE)" for m, s in diffs.values()) + " |")
    markdown = "\n".join(lines)
    print(markdown)
    (out / "tradeoff.md").write_text(markdown + "\n")
    (out / "tradeoff.json").write_text(json.dumps({
        "base": args.base, "reward_model": args.reward_model, "prompts": args.prompts, "samples": args.samples, "n": args.n, "t": t,
        "runs": {label: len(rs) for label, rs in runs.items()}, "measured": table,
        "per_prompt": {label: {k: np.asarray(v).tolist() for k, v in fig.items()} for label, fig in measured.items()}, "curves": {k: {"kl": v[0].tolist(), "winrate": v[1].tolist()} for k, v in curves.items()}}, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, (kl, win) in curves.items():
        keep = kl <= max(3.0, max((v["kl"][0] for v in table.values()), default=1.0) * 1.5)
        ax.plot(kl[keep], win[keep], label=f"analytic: {name}")
    for label, v in table.items():
        (kl, kl_se), (win, win_se) = v["kl"], v["rm_bon"]
        ax.errorbar(kl, win, xerr=kl_se, yerr=win_se, fmt="o", capsize=3, label=f"measured: {label}")
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set_xlabel("KL(π ‖ π_ref), nats")
    ax.set_ylabel(f"best-of-{args.n} win rate vs π_ref (reward model)")
    ax.set_title("InfAlign CTRL on the gym")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "tradeoff.png", dpi=120)
    print(f"written: {out / 'tradeoff.png'}, {out / 'tradeoff.json'}, {out / 'tradeoff.md'}")


if __name__ == "__main__":
    main()
