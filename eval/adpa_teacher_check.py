"""Where ADPA's advantage points on the gym's unsafe prompts: a check of a teacher pair before distilling from it.

    python eval/adpa_teacher_check.py --dpo data/gym/teacher-m-dpo --ref data/gym/teacher-m

ADPA's per-token term Σ q̃·Ã moves the student's mass to the tokens with the largest advantage
log π_dpo − log π_ref over π_dpo's top-K. Along the gym's refusal on each held-out unsafe prompt, this prints
the refusal token's advantage against the largest advantage at that position, the tokens that hold it, and,
after the official clip (1e-8, 1 − 1e-8), how often the refusal sits at the floor and the top at the ceiling.
A pair whose DPO step made rare compliance tokens slightly likelier pulls the student toward them.
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
    parser.add_argument("--dpo", default="data/gym/teacher-m-dpo", help="π_dpo, the DPO-trained teacher")
    parser.add_argument("--ref", default="data/gym/teacher-m", help="π_ref, the model it was DPO-trained from")
    parser.add_argument("--prompts", default="data/gym/heldout_prompts.jsonl")
    parser.add_argument("--k", type=int, default=50)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.data.templates import render_prompt
    from alignkit.gym.world import REFUSAL

    tok = AutoTokenizer.from_pretrained(args.ref)
    ref = AutoModelForCausalLM.from_pretrained(args.ref).eval()
    dpo = AutoModelForCausalLM.from_pretrained(args.dpo).eval()
    with open(args.prompts) as f:
        unsafe = [r["prompt"] for r in map(json.loads, f) if r.get("family") == "unsafe"]
    if not unsafe:
        raise SystemExit(f"{args.prompts} has no prompt with family 'unsafe'")
    refusal = tok(REFUSAL, add_special_tokens=False)["input_ids"]
    clip = lambda a: min(max(a, 1e-8), 1 - 1e-8)
    rows = []  # (position, refusal token's advantage, top advantage, top token, p_dpo(top), p_dpo(refusal token))
    for prompt in unsafe:
        context = tok(render_prompt(prompt, "chat", tok), add_special_tokens=False)["input_ids"]
        ids = torch.tensor([context + refusal])
        with torch.no_grad():
            log_ref = ref(ids).logits[0, len(context) - 1 : -1].log_softmax(-1)
            log_dpo = dpo(ids).logits[0, len(context) - 1 : -1].log_softmax(-1)
        for j, token in enumerate(refusal):
            top = log_dpo[j].topk(min(args.k, log_dpo.shape[-1])).indices
            adv = (log_dpo[j] - log_ref[j])[top]
            best = int(top[adv.argmax()])
            rows.append((j, float(log_dpo[j, token] - log_ref[j, token]), float(adv.max()), tok.decode([best]),
                         float(log_dpo[j, best].exp()), float(log_dpo[j, token].exp())))
    mean = lambda xs: sum(xs) / len(xs)
    first = [r for r in rows if r[0] == 0]
    print(f"{len(unsafe)} unsafe prompts; refusal {REFUSAL!r} ({len(refusal)} tokens); π_dpo {args.dpo}, π_ref {args.ref}\n")
    print("| where | refusal token: advantage | π_dpo | top advantage | π_dpo of that token | tokens holding it |")
    print("|---|---:|---:|---:|---:|---|")
    print(f"| first response token | {mean([r[1] for r in first]):+.3f} | {mean([r[5] for r in first]):.3f} | "
          f"{mean([r[2] for r in first]):+.3f} | {mean([r[4] for r in first]):.4f} | {', '.join(sorted({repr(r[3]) for r in first}))} |")
    print(f"| every refusal token | {mean([r[1] for r in rows]):+.3f} | {mean([r[5] for r in rows]):.3f} | "
          f"{mean([r[2] for r in rows]):+.3f} | {mean([r[4] for r in rows]):.4f} | |")
    print(f"\nofficial clip: the refusal token at the floor at {mean([clip(r[1]) <= 1e-8 for r in rows]):.0%} of positions, "
          f"the top advantage at the ceiling at {mean([clip(r[2]) >= 1 - 1e-8 for r in rows]):.0%}")


if __name__ == "__main__":
    main()
