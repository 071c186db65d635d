"""Training throughput and peak memory: alignkit DPO (reference routes a, b, c) against TRL's DPOTrainer, and alignkit's
KTO, SimPO and ORPO against TRL's KTOTrainer, CPOTrainer(loss_type="simpo") and ORPOTrainer.

Every configuration trains the same model on the same preference pairs with the same batch size, in
its own subprocess (so peak memory is per configuration), and the table compares them in one run:

    python eval/bench_train.py                       # tiny:m on the gym pairs, 12 timed steps each
    python eval/bench_train.py --model tiny:100m --steps 6 --max-length 256
    python eval/bench_train.py --configs "alignkit dpo (c), no ckpt;alignkit cut, no ckpt"   # CUT step vs DPO step
    python eval/bench_train.py --configs "alignkit dpo (c), no ckpt, packed;alignkit cut, no ckpt, packed, DPO's tokens/step"
    python eval/bench_train.py --configs "alignkit dpo (c), no ckpt;alignkit d2o K=4, no ckpt"   # D²O step vs DPO step
    python eval/bench_train.py --profile --configs "alignkit (c) precompute, ckpt;trl precompute (ckpt)"   # where a step's time goes
    python eval/bench_train.py --configs "trl kto precompute (ckpt);alignkit kto (c) precompute, ckpt;trl simpo (CPO, ckpt);alignkit simpo, ckpt;trl orpo (ckpt);alignkit orpo, ckpt"

Both frameworks train on the same token ids: TRL gets each prompt as alignkit's chat template renders it (text with
the template's special tokens, so TRL adds nothing). Before, TRL got the raw prompts, about 15% fewer tokens per
sequence on the gym, while both were credited with alignkit's count (the DPO ratios in docs/engine.md were measured
so). Tokens/s counts the non-pad tokens of every sequence processed in the timed steps (after warm-up):
chosen and rejected for DPO; Align-N and Misalign (or Align-P) rows for CUT, on the gym's judgment
triples, which carry the same responses as its preference pairs; the negative and the K samples for
D²O, on the gym's negatives (its samples are drawn and cached before timing); the unpaired examples for KTO (each gym
pair split into a desirable and an undesirable one, by both frameworks; the forward of every example's mismatched KL
pair, without gradient, is extra work both do and is not counted), so a KTO step of 8 examples is half a DPO step
of 8 pairs. Peak memory counts from just before the models load (reference log-probs that
alignkit caches with `alignkit prepare` are computed before that): torch.cuda.max_memory_allocated
on GPU, the peak resident set (VmHWM, reset through /proc/self/clear_refs) on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# name: (framework, reference route, LoRA, gradient checkpointing, method). TRL's DPOConfig turns
# gradient checkpointing on by default, so the like-for-like alignkit rows do too; one row shows
# alignkit without it. The last two rows compare a CUT step with a DPO step.
CONFIGS = {
    "trl default (ref copy, ckpt)": ("trl", "model", False, True, "dpo"),
    "trl precompute (ckpt)": ("trl", "precompute", False, True, "dpo"),
    # TRL 1.16 accepts padding_free=True but warns that it is "temporarily unavailable" and pads: this row shows that
    "trl precompute (ckpt), padding-free": ("trl", "precompute", False, True, "dpo", {"padding_free": True}),
    "alignkit (c) precompute, ckpt": ("alignkit", "precompute", False, True, "dpo"),
    "alignkit (c) precompute": ("alignkit", "precompute", False, False, "dpo"),
    "alignkit (a) ref model, ckpt": ("alignkit", "model", False, True, "dpo"),
    "trl LoRA (adapter off, ckpt)": ("trl", "adapter", True, True, "dpo"),
    "alignkit (b) LoRA adapter off, ckpt": ("alignkit", "adapter", True, True, "dpo"),
    "alignkit (b) LoRA adapter off, ckpt, packed": ("alignkit", "adapter", True, True, "dpo", {"packing": True}),
    "alignkit (c) LoRA precompute, ckpt": ("alignkit", "precompute", True, True, "dpo"),
    "alignkit dpo (c), no ckpt": ("alignkit", "precompute", False, False, "dpo"),
    "alignkit cut, no ckpt": ("alignkit", None, False, False, "cut"),
    # padding-free batches: CUT's Misalign rows (judgment in the context) are longer than its Align-N rows
    "alignkit dpo (c), no ckpt, packed": ("alignkit", "precompute", False, False, "dpo", {"packing": True}),
    "alignkit (c) precompute, ckpt, packed": ("alignkit", "precompute", False, True, "dpo", {"packing": True}),
    "alignkit cut, no ckpt, packed": ("alignkit", None, False, False, "cut", {"packing": True}),
    # as many triples per step as give the packed DPO step's tokens (the gym's CUT rows are longer), so the memory compares
    "alignkit cut, no ckpt, packed, DPO's tokens/step": ("alignkit", None, False, False, "cut", {"packing": True, "match_tokens": True}),
    "alignkit d2o K=4, no ckpt": ("alignkit", "precompute", False, False, "d2o"),
    # shared prompts: each distinct prompt computed once (DPO's chosen/rejected, D²O's K + 1)
    "alignkit (c) precompute, ckpt, shared prompts": ("alignkit", "precompute", False, True, "dpo", {"share_prompts": True}),
    "alignkit dpo (c), no ckpt, shared prompts": ("alignkit", "precompute", False, False, "dpo", {"share_prompts": True}),
    "alignkit d2o K=1, no ckpt": ("alignkit", "precompute", False, False, "d2o", {"num_samples": 1}),
    "alignkit d2o K=1, no ckpt, shared": ("alignkit", "precompute", False, False, "d2o", {"num_samples": 1, "share_prompts": True}),
    "alignkit d2o K=4, no ckpt, shared": ("alignkit", "precompute", False, False, "d2o", {"share_prompts": True}),
    "alignkit d2o K=11, no ckpt": ("alignkit", "precompute", False, False, "d2o", {"num_samples": 11}),
    "alignkit d2o K=11, no ckpt, shared": ("alignkit", "precompute", False, False, "d2o", {"num_samples": 11, "share_prompts": True}),
    # distillation: a DCKD / ADPA step (the teacher's cached top-50) against a DPO step on the same pairs
    "alignkit dckd, no ckpt": ("alignkit", None, False, False, "dckd", {"teacher": "data/gym/teacher-m-dpo"}),
    "alignkit adpa, no ckpt": ("alignkit", None, False, False, "adpa", {"teacher": "data/gym/teacher-m-dpo",
                                                                       "ref_teacher": "data/gym/teacher-m", "sample_max_tokens": 48}),
    # KTO (unpaired halves of the gym pairs), SimPO and ORPO against TRL's trainers for them
    "trl kto (ref copy, ckpt)": ("trl", "model", False, True, "kto"),
    "trl kto precompute (ckpt)": ("trl", "precompute", False, True, "kto"),
    "alignkit kto (a) ref model, ckpt": ("alignkit", "model", False, True, "kto"),
    "alignkit kto (c) precompute, ckpt": ("alignkit", "precompute", False, True, "kto"),
    "alignkit kto (c) precompute, ckpt, packed": ("alignkit", "precompute", False, True, "kto", {"packing": True}),
    "trl simpo (CPO, ckpt)": ("trl", None, False, True, "simpo"),
    "alignkit simpo, ckpt": ("alignkit", None, False, True, "simpo"),
    "alignkit simpo, ckpt, packed": ("alignkit", None, False, True, "simpo", {"packing": True}),
    "trl orpo (ckpt)": ("trl", None, False, True, "orpo"),
    "alignkit orpo, ckpt": ("alignkit", None, False, True, "orpo"),
    "alignkit orpo, ckpt, packed": ("alignkit", None, False, True, "orpo", {"packing": True}),
}
JUDGMENTS = "data/gym/train_judgment.jsonl"
NEGATIVES = "data/gym/train_negative.jsonl"
D2O_ARGS = {"num_samples": 4, "sample_max_tokens": 48, "reference": "precompute"}
BASELINE = {
    "trl precompute (ckpt)": "trl default (ref copy, ckpt)",
    "alignkit (c) precompute, ckpt": "trl default (ref copy, ckpt)",
    "alignkit (c) precompute": "trl default (ref copy, ckpt)",
    "alignkit (a) ref model, ckpt": "trl default (ref copy, ckpt)",
    "alignkit (b) LoRA adapter off, ckpt": "trl LoRA (adapter off, ckpt)",
    "alignkit (b) LoRA adapter off, ckpt, packed": "trl LoRA (adapter off, ckpt)",
    "alignkit (c) LoRA precompute, ckpt": "trl LoRA (adapter off, ckpt)",
    "alignkit cut, no ckpt": "alignkit dpo (c), no ckpt",
    "alignkit dpo (c), no ckpt, packed": "alignkit dpo (c), no ckpt",
    "alignkit (c) precompute, ckpt, packed": "trl precompute (ckpt)",
    "trl precompute (ckpt), padding-free": "trl precompute (ckpt)",
    "alignkit cut, no ckpt, packed": "alignkit dpo (c), no ckpt, packed",
    "alignkit cut, no ckpt, packed, DPO's tokens/step": "alignkit dpo (c), no ckpt, packed",
    "alignkit d2o K=4, no ckpt": "alignkit dpo (c), no ckpt",
    "alignkit (c) precompute, ckpt, shared prompts": "trl precompute (ckpt)",
    "alignkit dpo (c), no ckpt, shared prompts": "alignkit dpo (c), no ckpt",
    "alignkit d2o K=1, no ckpt, shared": "alignkit d2o K=1, no ckpt",
    "alignkit d2o K=4, no ckpt, shared": "alignkit d2o K=4, no ckpt",
    "alignkit d2o K=11, no ckpt, shared": "alignkit d2o K=11, no ckpt",
    "alignkit dckd, no ckpt": "alignkit dpo (c), no ckpt",
    "alignkit adpa, no ckpt": "alignkit dpo (c), no ckpt",
    "trl kto precompute (ckpt)": "trl kto (ref copy, ckpt)",
    "alignkit kto (a) ref model, ckpt": "trl kto (ref copy, ckpt)",
    "alignkit kto (c) precompute, ckpt": "trl kto precompute (ckpt)",
    "alignkit kto (c) precompute, ckpt, packed": "trl kto precompute (ckpt)",
    "alignkit simpo, ckpt": "trl simpo (CPO, ckpt)",
    "alignkit simpo, ckpt, packed": "trl simpo (CPO, ckpt)",
    "alignkit orpo, ckpt": "trl orpo (ckpt)",
    "alignkit orpo, ckpt, packed": "trl orpo (ckpt)",
}
TRL_ARGS = {"dpo": {"beta": 0.1}, "kto": {"beta": 0.1}, "simpo": {"loss_type": "simpo", "cpo_alpha": 0.0, "beta": 2.0, "simpo_gamma": 0.5},
            "orpo": {"beta": 0.1}}  # the same losses as alignkit's defaults


def _reset_peak() -> int:
    """Reset the peak-memory counter; returns the current memory in bytes (the baseline)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
    return _status_kb("VmRSS") * 1024


def _peak_bytes() -> int:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    return _status_kb("VmHWM") * 1024


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _timer_callback(warmup: int, phases: "PhaseTimer | None" = None):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.t0 = None
            self.timed_steps = 0
            self.seconds = 0.0

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step >= warmup:
                self.t0 = time.perf_counter()
                if phases is not None and not phases.enabled:  # the profile counts the timed steps only
                    phases.enabled = True

        def on_step_end(self, args, state, control, **kw):
            if self.t0 is not None:
                self.seconds += time.perf_counter() - self.t0
                self.timed_steps += 1
                self.t0 = None

    return StepTimer()


class PhaseTimer:
    """Exclusive wall time per phase of a training step: a phase's clock stops while a phase nested in it runs, so the
    phases add up to the step (`--profile`). Phases are entered through wrapped functions (`wrap`)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.stack: list[list] = []
        self.enabled = False

    def wrap(self, label: str, fn):
        def timed(*args, **kwargs):
            if not self.enabled:
                return fn(*args, **kwargs)
            now = time.perf_counter()
            if self.stack:
                parent = self.stack[-1]
                self.totals[parent[0]] = self.totals.get(parent[0], 0.0) + now - parent[1]
            self.stack.append([label, now])
            try:
                return fn(*args, **kwargs)
            finally:
                end = time.perf_counter()
                name, start = self.stack.pop()
                self.totals[name] = self.totals.get(name, 0.0) + end - start
                if self.stack:
                    self.stack[-1][1] = end

        return timed


def _profile(trainer, phases: PhaseTimer) -> None:
    """Wrap the phases of a training step: data, the step's own code (loss math), the trunk's forward, the log-prob
    head chunks, backward (with the checkpointed recomputation), the optimizer."""
    import torch

    import alignkit.modeling.logprobs as logprobs

    trainer.get_batch_samples = phases.wrap("data (batch fetch, collate)", trainer.get_batch_samples)
    trainer.training_step = phases.wrap("loss math and the rest of the step", trainer.training_step)
    trainer.accelerator.backward = phases.wrap("backward (incl. checkpoint recompute)", trainer.accelerator.backward)
    base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    base.forward = phases.wrap("forward: model (trunk, and TRL's head + log-softmax)", base.forward)
    logprobs.chunked_head = phases.wrap("forward: alignkit log-prob chunks (head, log-softmax)", logprobs.chunked_head)
    for opt in (torch.optim.AdamW, torch.optim.Adam):
        opt.step = phases.wrap("optimizer step", opt.step)


def _real_tokens(batch: dict) -> int:
    """Non-pad tokens of a collated batch (padded layout)."""
    return int(batch["attention_mask"].sum())


def _long_prompts(path: str, out: Path) -> str:
    """A copy of a data file whose prompts start with three unrelated sentences (the gym's rambling preambles)."""
    from alignkit.gym.world import RAMBLE

    out.mkdir(parents=True, exist_ok=True)
    target = out / ("long-" + Path(path).name)
    with open(path) as src, target.open("w") as dst:
        for i, line in enumerate(src):
            row = json.loads(line)
            key = "prompt" if "prompt" in row else "instruction"
            row[key] = " ".join(RAMBLE[(i + j) % len(RAMBLE)] for j in range(3)) + " " + row[key]
            dst.write(json.dumps(row) + "\n")
    return str(target)


def _trl_classes(method: str) -> tuple[type, type]:
    """TRL's config and trainer classes for a method (KTO unpairs the preference rows itself)."""
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOConfig, DPOTrainer
    if method == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer
    if method == "simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        return CPOConfig, CPOTrainer
    if method == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOConfig, ORPOTrainer
    raise SystemExit(f"no TRL trainer for {method}")


def worker(args: argparse.Namespace) -> dict:
    """Train one configuration and report its throughput and memory as JSON."""
    import datasets
    import torch

    from alignkit.config import validate_recipe
    from alignkit.engine.run import build, live_references, training_arguments
    from alignkit.engine.trainer import AlignTrainer
    from alignkit.modeling.loading import load_causal_lm, resolve_model_path

    framework, route, lora, ckpt, method, *rest = CONFIGS[args.worker]
    options = dict(rest[0]) if rest else {}
    share = options.pop("share_prompts", False)
    packing = options.pop("packing", False)
    trl_padding_free = options.pop("padding_free", False)
    match_tokens = options.pop("match_tokens", False)
    lora_cfg = {"r": 16, "alpha": 16, "dropout": 0.0} if lora else None
    data = {"train": args.data, "template": "chat", "max_length": args.max_length, "max_prompt_length": args.prompt_length or args.max_length // 2,
            "share_prompts": share, "packing": packing}
    if method == "cut":
        data.update(train=JUDGMENTS, format="cut")
    if method == "d2o":
        data.update(train=NEGATIVES, format="negative")
    if args.long_prompts:  # each prompt behind a preamble of ~70 tokens: prompts ~4x the gym's responses
        data["train"] = _long_prompts(data["train"], Path(args.out))
    method_args = {"beta": 0.1, "reference": route} if method in ("dpo", "kto") else {**D2O_ARGS} if method == "d2o" else {}
    method_args.update(options)
    recipe = validate_recipe({
        "method": method, "model": {"path": args.model, "dtype": "float32", "lora": lora_cfg, "attn_implementation": "sdpa"},
        "data": data,
        "training": {"output_dir": args.out, "learning_rate": 1e-5, "max_steps": args.steps + args.warmup, "per_device_train_batch_size": args.batch,
                     "logging_steps": 1000, "save_strategy": "no", "report_to": "none", "seed": 0, "gradient_checkpointing": ckpt},
        "method_args": method_args,
    })
    prep = build(recipe)  # the same tokenisation feeds both frameworks; signals are cached before timing
    # tokens are counted in the unshared layout, so a shared-prompt row is credited with the tokens it stands for
    prep.method.share_prompts = prep.method.packing = False
    tokens_per_example = sum(_real_tokens(prep.method.collate([e])) for e in prep.train_examples) / len(prep.train_examples)
    prep.method.share_prompts, prep.method.packing = share, packing
    if match_tokens:  # the batch whose tokens per step come closest to the baseline's
        if not args.tokens_per_step:
            raise SystemExit(f"{args.worker}: run its baseline ({BASELINE[args.worker]}) before it in --configs")
        args.batch = max(1, round(args.tokens_per_step / tokens_per_example))
        recipe.training.per_device_train_batch_size = args.batch
    phases = PhaseTimer() if args.profile else None
    timer = _timer_callback(args.warmup, phases)
    if framework == "alignkit":
        baseline = _reset_peak()
        model = load_causal_lm(recipe.model, trainable=True, gradient_checkpointing=ckpt)
        trainer = AlignTrainer(model=model, args=training_arguments(recipe), method=prep.method, live_references=live_references(prep),
                               train_dataset=datasets.Dataset.from_list(prep.train_examples), callbacks=[timer])
        # eval_on_start is for the summary table of `alignkit train`; the benchmark times training only.
        trainer.args.eval_on_start = False
    else:
        from transformers import AutoModelForCausalLM

        from alignkit.data.templates import render_prompt

        # TRL gets the prompts as alignkit's template renders them, so both frameworks train on the same token ids
        rows = [{**r, "prompt": render_prompt(r["prompt"], data["template"], prep.tokenizer)}
                for r in map(json.loads, open(data["train"]))]  # the long-prompt copy under --long-prompts
        path = resolve_model_path(args.model)
        baseline = _reset_peak()
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
        peft_config = None
        if lora:
            from peft import LoraConfig

            peft_config = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
        config_class, trainer_class = _trl_classes(method)
        options = {"precompute_ref_log_probs": route == "precompute"} if method in ("dpo", "kto") else {}
        if method == "dpo":
            options["padding_free"] = trl_padding_free
        config = config_class(output_dir=args.out, learning_rate=1e-5, max_steps=args.steps + args.warmup,
                              per_device_train_batch_size=args.batch, logging_steps=1000, save_strategy="no", report_to=[],
                              bf16=False, use_cpu=not torch.cuda.is_available(), max_length=args.max_length, seed=0,
                              gradient_checkpointing=ckpt, **TRL_ARGS[method], **options)
        trainer = trainer_class(model=model, args=config, processing_class=prep.tokenizer, callbacks=[timer],
                                train_dataset=datasets.Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]),
                                **({"peft_config": peft_config} if peft_config is not None else {}))
    if phases is not None:
        _profile(trainer, phases)
    trainer.train()
    examples = timer.timed_steps * args.batch
    profile = None
    if phases is not None:  # per timed step; the data fetch of the first timed step falls before its step begins
        profile = {k: v / timer.timed_steps for k, v in phases.totals.items()}
    return {"profile": profile, "config": args.worker, "batch": args.batch, "tokens_per_step": args.batch * tokens_per_example,
            "tokens_per_s": examples * tokens_per_example / timer.seconds, "step_s": timer.seconds / timer.timed_steps,
            "peak_mb": (_peak_bytes() - baseline) / 2**20, "device": "cuda" if torch.cuda.is_available() else "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny:m")
    parser.add_argument("--data", default="data/gym/train_preference.jsonl")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--prompt-length", type=int, default=None, help="max prompt length (default: half of --max-length)")
    parser.add_argument("--long-prompts", action="store_true", help="prefix every prompt with a long preamble (prompt ~4x the response)")
    parser.add_argument("--configs", default=";".join(CONFIGS), help="semicolon-separated subset of: " + "; ".join(CONFIGS))
    parser.add_argument("--out", default="runs/bench_train")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--profile", action="store_true", help="also print where each configuration's step time goes "
                        "(data, forward, log-prob chunks, backward, optimizer); the wrappers cost a little time")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--tokens-per-step", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return
    results = {}
    for name in [c.strip() for c in args.configs.split(";")]:
        cmd = [sys.executable, __file__, "--worker", name, "--model", args.model, "--data", args.data, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch", str(args.batch), "--max-length", str(args.max_length), "--out", f"{args.out}/{len(results)}",
               *(["--prompt-length", str(args.prompt_length)] if args.prompt_length else []), *(["--long-prompts"] if args.long_prompts else []),
               *(["--profile"] if args.profile else [])]
        if name in BASELINE and BASELINE[name] in results:
            cmd += ["--tokens-per-step", str(results[BASELINE[name]]["tokens_per_step"])]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        results[name] = json.loads(line[len("RESULT "):])
        print(f"done: {name}", file=sys.stderr)
    device = next(iter(results.values()))["device"] if results else "?"
    print(f"\nTraining steps, model {args.model}, batch {args.batch} examples (DPO, SimPO, ORPO pairs, KTO unpaired examples or CUT triples), max length {args.max_length}, "
          f"{args.steps} timed steps, device {device}{', long prompts' if args.long_prompts else ''}\n")
    print(f"| {'configuration':<30} | tokens/s | s/step | peak MB | vs baseline (speed, memory) |")
    print(f"|{'-' * 32}|---------:|-------:|--------:|:----------------------------|")
    for name, r in results.items():
        base = results.get(BASELINE.get(name, ""))
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x speed, {r['peak_mb'] / max(base['peak_mb'], 1e-9):.2f}x memory vs {BASELINE[name]}" if base else ""
        batch = f" (batch {r['batch']})" if r["batch"] != args.batch else ""
        print(f"| {name + batch:<30} | {r['tokens_per_s']:8.0f} | {r['step_s']:6.3f} | {r['peak_mb']:7.0f} | {ratio} |")
    profiled = {name: r["profile"] for name, r in results.items() if r.get("profile")}
    if profiled:
        print("\nWhere a timed step's wall time goes (seconds per step, share of the profiled step):\n")
        phases = sorted({p for prof in profiled.values() for p in prof}, key=lambda p: -max(prof.get(p, 0) for prof in profiled.values()))
        print("| phase | " + " | ".join(profiled) + " |")
        print("|---|" + "---:|" * len(profiled))
        for phase in phases:
            cells = [f"{prof.get(phase, 0.0):.3f} ({100 * prof.get(phase, 0.0) / sum(prof.values()):.0f}%)" for prof in profiled.values()]
            print(f"| {phase} | " + " | ".join(cells) + " |")
        print("| total | " + " | ".join(f"{sum(prof.values()):.3f}" for prof in profiled.values()) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
