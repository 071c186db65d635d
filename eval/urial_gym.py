"""URIAL on the gym: the base policy plain vs the same base with URIAL's in-context prefix vs SFT'd models.

    python eval/urial_gym.py                                   # 16 samples per held-out prompt, temperature 1
    python eval/urial_gym.py --samples 8 --extra runs/dpo_tiny/final --json runs/urial_gym.json

Rows (all sampled at the same temperature, `--samples` completions per held-out prompt, scored by the
gold reward; mean ± SE over prompts, and the difference to the plain base paired by prompt):

- `base`: `data/gym/base-s` under its chat template. This "base" is itself tiny:s SFT'd on the gym's
  mixed-quality data (right and wrong, polite and rude, refusals and harmful answers), in chat format;
  it has never seen the URIAL markdown format, and was trained on sequences of at most 128 tokens.
- `base + URIAL`: the same weights, prompted with the `urial` template (alignkit's K = 3 prefix, stop at
  the next "# Query"), repetition penalty 1.0, then 1.1 (the paper's value for base models).
- `base + URIAL K=1, short`: a one-example prefix with a one-line instruction (a `urial:PATH` prefix file
  written here), to separate the format from the prefix's length.
- `SFT teacher`: `data/gym/teacher-m`, tiny:m (8x the parameters) SFT'd on the gym's perfect responses only.
  It is not a fine-tune of base-s: it is a larger model trained from scratch on better data.
- `--extra MODEL`: further models under the chat template (e.g. `runs/dpo_tiny/final`, base-s after DPO).

`--prefix-cache-bench` instead times URIAL generation (the held-out prompts, 4 samples, 64 tokens) on vLLM
with its prefix cache on and off, and on HF (which has none), and reports the prefix tokens vLLM reused.

KL to the base is estimated on the samples: mean of log π(y|x) − log base(y|x_chat), where π's own prompt
is the URIAL prompt for the URIAL rows (so it is the KL of the prompted policy to the plain base).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHORT_PREFIX = ("# Instruction\n\nConversations between a person and a helpful, honest and polite AI assistant.\n\n"
                "# Query:\n```\nWhich planet is closest to the Sun?\n```\n\n\n# Answer:\n```\n"
                "Happy to help! The planet closest to the Sun is Mercury.\n```")


def score(name, gen, base, prompts, params):
    """Sample, score with the gold reward, and estimate KL to the plain base: a ModelReport plus extra rates."""
    from alignkit.data.tokenization import encode_prompt
    from alignkit.gym.evaluation import report_from_results

    start = time.perf_counter()
    results = gen.generate(list(prompts), params)
    seconds = time.perf_counter() - start
    report = report_from_results(name, results, base, lambda prompt: encode_prompt(base.tokenizer, prompt, "chat"))
    report.seconds = seconds
    return report


def prefix_cache_bench(model: str, prompts: list[str], batch_size: int) -> None:
    """Seconds to sample URIAL completions with vLLM's prefix cache on/off and with HF, in one table."""
    from rich.console import Console
    from rich.table import Table

    from alignkit.generation import HFGenerator, SamplingParams
    from alignkit.generation.vllm_engine import VLLMGenerator

    params = SamplingParams(n=4, temperature=1.0, max_tokens=64, seed=0)
    table = Table(title=f"URIAL generation, {len(prompts)} prompts x 4 samples x <=64 tokens ({model})")
    for col in ("backend", "seconds", "prefix tokens read from cache per prompt"):
        table.add_column(col, justify="right")
    for caching in (True, False):
        engine = VLLMGenerator(model, template="urial", enforce_eager=True, enable_prefix_caching=caching)
        engine.generate(prompts[:2], SamplingParams(n=1, max_tokens=4))  # warm-up (and, with caching, the prefix)
        start = time.perf_counter()
        engine.generate(prompts, params)
        cached = engine.last_cached_tokens
        table.add_row(f"vllm, prefix cache {'on' if caching else 'off'}", f"{time.perf_counter() - start:.1f}",
                      f"{min(cached)}-{max(cached)}")
        del engine
    hf = HFGenerator.from_pretrained(model, template="urial", batch_size=batch_size)
    start = time.perf_counter()
    hf.generate(prompts, params)
    table.add_row(f"hf (batch {batch_size})", f"{time.perf_counter() - start:.1f}", "none: recomputed per sequence")
    Console(width=160).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="data/gym/base-s")
    parser.add_argument("--sft", default="data/gym/teacher-m")
    parser.add_argument("--extra", nargs="*", default=[], help="further models to compare (chat template)")
    parser.add_argument("--prompts", default="data/gym/heldout_prompts.jsonl")
    parser.add_argument("--limit", type=int, help="use only the first N prompts (smoke runs)")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per HF generate call")
    parser.add_argument("--json", help="write the figures (and every scored sample) here")
    parser.add_argument("--prefix-cache-bench", action="store_true", help="time vLLM with/without its prefix cache and HF instead")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from alignkit.data.templates import static_prefix
    from alignkit.data.tokenization import prefixed_text_ids
    from alignkit.generation import HFGenerator, SamplingParams
    from alignkit.gym.evaluation import format_reports, in_se, load_prompts, paired_difference

    prompts = load_prompts(args.prompts)[: args.limit]
    if args.prefix_cache_bench:
        prefix_cache_bench(args.base, prompts, args.batch_size)
        return
    base = HFGenerator.from_pretrained(args.base, batch_size=args.batch_size)
    short = Path(tempfile.mkdtemp(prefix="urial-gym-")) / "short_prefix.txt"
    short.write_text(SHORT_PREFIX)
    params = lambda rp=1.0: SamplingParams(n=args.samples, temperature=args.temperature, max_tokens=args.max_tokens,  # noqa: E731
                                           seed=args.seed, logprobs=True, repetition_penalty=rp)

    def urial(template: str) -> HFGenerator:
        return HFGenerator(base.model, base.tokenizer, template=template, batch_size=args.batch_size)

    runs = [("base (chat)", base, params()),
            ("base + URIAL", urial("urial"), params()),
            ("base + URIAL rp1.1", urial("urial"), params(1.1)),
            ("base + URIAL K=1 short", urial(f"urial:{short}"), params()),
            ("SFT teacher-m", HFGenerator.from_pretrained(args.sft, batch_size=args.batch_size), params())]
    runs += [(Path(m).name if Path(m).name != "final" else str(Path(m).parent.name), HFGenerator.from_pretrained(m, batch_size=args.batch_size), params())
             for m in args.extra]
    reports = []
    for name, gen, p in runs:
        reports.append(score(name, gen, base, prompts, p))
        print(f"{name}: {reports[-1].seconds:.0f} s", flush=True)

    console = Console(width=200)
    lengths = {t: prefixed_text_ids(base.tokenizer, static_prefix(t), t, True)[1] for t in ("urial", f"urial:{short}")}
    console.print(f"{len(prompts)} held-out prompts x {args.samples} samples, temperature {args.temperature}, max {args.max_tokens} "
                  f"tokens, seed {args.seed}; URIAL prefix {lengths['urial']} tokens (K=3), short prefix "
                  f"{lengths[f'urial:{short}']} tokens (K=1)")
    console.print(format_reports(reports))
    extra = Table(title="more per model (mean ± SE over prompts)")
    extra.add_column("")
    for r in reports:
        extra.add_column(r.model, justify="right")
    extra.add_row("degenerate rate", *(str(r.stats["degenerate"]) for r in reports))
    extra.add_row("ended by stop/EOS (not length)", *(str(r.stats["hit_stop"]) for r in reports))
    extra.add_row("Δ degenerate vs base (paired)", "", *(in_se(paired_difference(r, reports[0], "degenerate")) for r in reports[1:]))
    extra.add_row("generation seconds", *(f"{r.seconds:.0f}" for r in reports))
    console.print(extra)
    for r in reports[1:4]:
        console.print(f"[bold]{r.model}[/bold] examples: " + " | ".join(repr(s["response"][:80]) for s in r.samples[:: max(1, len(r.samples) // 6)][:6]))
    if args.json:
        as_dict = lambda s: {"mean": s.mean, "se": s.se, "prompts": s.prompts}  # noqa: E731
        Path(args.json).write_text(json.dumps({
            "prompts": args.prompts, "samples": args.samples, "temperature": args.temperature, "seed": args.seed,
            "prefix_tokens": lengths, "models": [{**r.to_json(), "degenerate": as_dict(r.stats["degenerate"]),
                                                  "paired_gold_vs_base": as_dict(paired_difference(r, reports[0]))} for r in reports],
            "scored_samples": {r.model: r.samples for r in reports}}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
