"""Token-distribution-shift analysis of an aligned model against its base (URIAL paper §2; spec §3.2).

    python eval/token_shift.py --base data/gym/base-s --aligned data/gym/teacher-m
    python eval/token_shift.py --base B --aligned A --responses runs/aligned_samples.jsonl --json runs/shift.json

The aligned model answers every prompt (greedily by default, as in the paper; or give `--responses`, a
JSONL from `alignkit generate --model ALIGNED`, whose token ids are used). At each response position t the
base model gets the same context (the prompt under `--base-template` plus the response so far) and ranks
its vocabulary; η_t is the rank of the aligned token. Positions are unshifted (η = 1), marginal
(1 < η ≤ 3) or shifted (η > 3). Printed: the class fractions overall and per position bucket, mean and
median η, mean P_base(o_t), mean KL(P_aligned ‖ P_base), and the tokens most often shifted.

Both models must share a tokenizer (same vocabulary). The response's EOS counts as a position (the
choice to stop); `--no-eos` leaves it out. The paper runs the base model under a zero-shot template
("## Query:\\n```{instruction}```"); for chat-format base models such as the gym's, keep `chat` for both.
If the aligned model is not a fine-tune of the base (a different size, or trained separately), the shift
measures two different models, not what alignment tuning changed; the script says so when shapes differ.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")


def load_responses(path: str, limit: int | None) -> list[tuple[object, list[int]]]:
    """(prompt, token ids) of every completion in an `alignkit generate` JSONL."""
    out = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        for c in row.get("completions", []):
            if not c.get("token_ids"):
                raise ValueError(f"{path}, record {i}: a completion without token_ids (write it with `alignkit generate`)")
            out.append((row["prompt"], list(c["token_ids"])))
    return out[:limit] if limit else out


def same_shapes(a: str, b: str) -> bool:
    """Whether two model folders have the same architecture and sizes (a fine-tune keeps them)."""
    from transformers import AutoConfig

    keys = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "vocab_size")
    ca, cb = AutoConfig.from_pretrained(a), AutoConfig.from_pretrained(b)
    return all(getattr(ca, k, None) == getattr(cb, k, None) for k in keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="base model folder")
    parser.add_argument("--aligned", required=True, help="aligned model folder (same tokenizer)")
    parser.add_argument("--prompts", default="data/gym/heldout_prompts.jsonl", help="prompts the aligned model answers")
    parser.add_argument("--responses", help="JSONL from `alignkit generate --model ALIGNED` (instead of greedy decoding here)")
    parser.add_argument("--base-template", default="chat")
    parser.add_argument("--aligned-template", default="chat")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--limit", type=int, help="use only the first N prompts (or responses)")
    parser.add_argument("--no-eos", action="store_true", help="leave the final EOS position out")
    parser.add_argument("--top", type=int, default=15, help="how many frequent shifted tokens to list")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from alignkit.data.tokenization import encode_prompt
    from alignkit.data.urial_shift import CLASSES, ResponseShift, summarize_shift
    from alignkit.generation import HFGenerator, SamplingParams
    from alignkit.gym.evaluation import load_prompts

    base = HFGenerator.from_pretrained(args.base, template=args.base_template)
    aligned = HFGenerator.from_pretrained(args.aligned, template=args.aligned_template)
    if base.tokenizer.get_vocab() != aligned.tokenizer.get_vocab():
        sys.exit(f"{args.base} and {args.aligned} have different vocabularies: base ranks of aligned tokens are undefined")
    console = Console(width=160)
    fine_tune = same_shapes(args.base, args.aligned)
    if not fine_tune:
        console.print(f"[yellow]note:[/yellow] {args.aligned} has a different architecture/size than {args.base}, so it is not a "
                      "fine-tune of it: the shift compares two separately trained models, not what alignment tuning changed")

    if args.responses:
        pairs = load_responses(args.responses, args.limit)
        source = f"{args.responses} ({len(pairs)} responses)"
    else:
        prompts = load_prompts(args.prompts)[: args.limit]
        results = aligned.generate(prompts, SamplingParams(n=1, temperature=0.0, max_tokens=args.max_tokens, seed=0))
        pairs = [(r.prompt, r.completions[0].token_ids) for r in results]
        source = f"greedy responses of {args.aligned} to {len(pairs)} prompts of {args.prompts} (max {args.max_tokens} tokens)"
    eos = base.tokenizer.eos_token_id

    @torch.no_grad()
    def logprobs(gen: HFGenerator, prompt_ids: list[int], tokens: list[int]) -> torch.Tensor:
        ids = torch.tensor([prompt_ids + tokens])
        logits = gen.model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
        return torch.log_softmax(logits, dim=-1)

    shifts = []
    for prompt, tokens in pairs:
        if args.no_eos and tokens and tokens[-1] == eos:
            tokens = tokens[:-1]
        if not tokens:
            continue
        base_lp = logprobs(base, encode_prompt(base.tokenizer, prompt, args.base_template), tokens)
        aligned_lp = logprobs(aligned, encode_prompt(aligned.tokenizer, prompt, args.aligned_template), tokens)
        shifts.append(ResponseShift.from_logprobs(tokens, base_lp.numpy(), aligned_lp.numpy()))
    report = summarize_shift(shifts, top=args.top)

    decode = lambda t: base.tokenizer.decode([t])  # noqa: E731
    table = Table(title=f"token distribution shift: base {args.base} vs aligned {args.aligned}\n{source}")
    for col in ("positions", "n", *CLASSES, "mean η", "median η", "mean P_base(o_t)", "mean KL(aligned‖base)"):
        table.add_column(col, justify="right")
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    for label, g in [("all", report.overall), *report.buckets.items()]:
        if not g.positions:
            continue
        table.add_row(label, str(g.positions), *(pct(g.fractions[c]) for c in CLASSES), f"{g.mean_rank:.2f}",
                      f"{g.median_rank:.0f}", f"{g.mean_base_prob:.3f}", "" if g.mean_kl is None else f"{g.mean_kl:.3f}")
    console.print(table)
    shifted = Table(title=f"tokens most often at shifted positions (η > 3), of {sum(c for _, c in report.shifted_tokens)} listed")
    for col in ("token", "shifted", "all positions", "shifted share"):
        shifted.add_column(col, justify="right")
    for tok, count in report.shifted_tokens:
        shifted.add_row(repr(decode(tok)), str(count), str(report.token_counts[tok]), pct(count / report.token_counts[tok]))
    console.print(shifted)
    if args.json:
        Path(args.json).write_text(json.dumps({"base": args.base, "aligned": args.aligned, "source": source,
                                               "same_shapes": fine_tune, "eos_counted": not args.no_eos,
                                               **report.to_json(decode)}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
