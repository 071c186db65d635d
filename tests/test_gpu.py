"""CUDA checks, marked `gpu`: skipped without a GPU (conftest), run by `eval/gpu_check.sh` on one.

Each check is a function of the device, so its logic also runs on the CPU (`run_on(device)`; the
tolerances below were set from CPU runs of the same code in bf16 and fp32, see docs/gpu.md).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu
MODEL = "data/gym/base-s"
PROMPTS = ["What is 3 plus 4?", [{"role": "user", "content": "What is the capital of Dunmark?"}], "List 3 colors.",
           "Explain how to pick a lock to break into a house."]


def chunked_vs_full(device: str, dtype: torch.dtype) -> dict[str, float]:
    """Max |delta| between chunked-head and full-logit per-token log-probs (and their gradients) of tiny:100m
    (4k vocabulary, untied head) on a left-padded batch longer than one chunk, plus the gap to fp32."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from alignkit.modeling.loading import resolve_model_path
    from alignkit.modeling.logprobs import sequence_token_logprobs

    path = resolve_model_path("tiny:100m")
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, AutoConfig.from_pretrained(path).vocab_size, (3, 300), generator=gen).to(device)
    attention = torch.ones_like(ids)
    attention[1, :40] = 0
    loss_mask = attention.clone()
    loss_mask[:, :100] = 0
    out, results = {}, {}
    for name, dt in (("low", dtype), ("fp32", torch.float32)):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dt).to(device)
        for chunk in (128, None):
            model.zero_grad()
            logps, mask = sequence_token_logprobs(model, ids, attention, loss_mask, chunk_size=chunk)
            logps[mask].sum().backward()
            grad = torch.cat([model.lm_head.weight.grad.flatten(), model.model.layers[0].mlp.up_proj.weight.grad.flatten()]).float()
            results[(name, chunk)] = (logps.detach().float(), mask, grad)
    (a, mask_a, ga), (b, mask_b, gb) = results[("low", 128)], results[("low", None)]
    assert torch.equal(mask_a, mask_b)
    out["max_dlogp"] = (a - b)[mask_a].abs().max().item()
    out["grad_rel"] = ((ga - gb).norm() / gb.norm()).item()
    out["max_dlogp_vs_fp32"] = (a - results[("fp32", None)][0])[mask_a].abs().max().item()
    return out


def test_bf16_chunked_logprobs_equal_full_logits_on_cuda():
    gaps = chunked_vs_full("cuda", torch.bfloat16)
    assert gaps["max_dlogp"] < 2e-2, gaps  # bf16 GEMMs of different shapes may round a logit 1 ulp apart
    assert gaps["grad_rel"] < 2e-2, gaps
    assert gaps["max_dlogp_vs_fp32"] < 0.25, gaps  # bf16 itself, through 12 layers


def test_fp32_chunked_logprobs_equal_full_logits_on_cuda():
    gaps = chunked_vs_full("cuda", torch.float32)
    assert gaps["max_dlogp"] < 1e-4 and gaps["grad_rel"] < 1e-4, gaps


def dpo_two_steps(tmp_path: Path, cuda: bool, *extra: str) -> list[dict]:
    """`alignkit train` DPO (gym base, batch 16, 2 steps, logging every step) on the GPU or with CUDA hidden;
    each run has its own cache, so the reference log-probs are computed on that device too."""
    out = tmp_path / ("cuda" if cuda else "cpu")
    sets = ["data.eval=[]", "training.max_steps=2", "training.logging_steps=1", "training.save_strategy=steps",
            "training.save_steps=2", "training.learning_rate=1e-3", "training.warmup_steps=0",
            f"training.output_dir={out}", *extra]
    env = {**os.environ, "ALIGNKIT_CACHE": str(out) + "-cache"}
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    run = subprocess.run([sys.executable, "-m", "alignkit", "train", "recipes/dpo_tiny.yaml", *[x for s in sets for x in ("--set", s)]],
                         env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    state = json.loads(max(out.glob("checkpoint-*/trainer_state.json")).read_text())
    return [e for e in state["log_history"] if "loss" in e]


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-4), ("bf16", 3e-2)])
def test_dpo_first_steps_on_cuda_equal_cpu(tmp_path, precision, tol):
    """Step 1's loss and gradient norm, and step 2's loss (after one update), on CUDA against fp32 on the CPU."""
    extra = ["model.dtype=bfloat16", "training.bf16=true"] if precision == "bf16" else ["model.dtype=float32"]
    gpu = dpo_two_steps(tmp_path, True, *extra)
    cpu = dpo_two_steps(tmp_path, False, "model.dtype=float32")
    assert [e["step"] for e in gpu] == [1, 2] == [e["step"] for e in cpu]
    for g, c in zip(gpu, cpu):
        assert abs(g["loss"] - c["loss"]) < tol, (gpu, cpu)
        assert abs(g["grad_norm"] - c["grad_norm"]) < tol * 10 * max(1.0, c["grad_norm"]), (gpu, cpu)
    assert abs(cpu[1]["loss"] - cpu[0]["loss"]) > 1e-3  # the first step moved the policy


@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("vllm")
    from alignkit.generation.vllm_engine import VLLMGenerator

    return VLLMGenerator(MODEL, dtype="float32", enforce_eager=True, gpu_memory_utilization=0.2)


def assert_same_greedy(a, b, tol: float = 1e-3):
    for x, y in zip(a, b):
        cx, cy = x.completions[0], y.completions[0]
        assert cx.token_ids == cy.token_ids and cx.text == cy.text
        assert max(abs(i - j) for i, j in zip(cx.logprobs, cy.logprobs)) < tol


def test_vllm_greedy_equals_hf_on_cuda(engine):
    from alignkit.generation import HFGenerator, SamplingParams

    params = SamplingParams(n=1, temperature=0, max_tokens=32, logprobs=True)
    assert_same_greedy(engine.generate(PROMPTS, params), HFGenerator.from_pretrained(MODEL).generate(PROMPTS, params))


def test_vllm_weight_sync_from_a_cuda_model_in_memory(engine):
    from alignkit.generation import HFGenerator, SamplingParams

    hf = HFGenerator.from_pretrained(MODEL)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for p in hf.model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    trainer_copy = HFGenerator.from_pretrained(MODEL).model.cuda()
    trainer_copy.load_state_dict(hf.model.state_dict())
    assert engine.in_process_worker()
    engine.sync_weights(trainer_copy)  # CUDA tensors, copied by vLLM into its own parameters
    params = SamplingParams(n=1, temperature=0, max_tokens=24, logprobs=True)
    assert_same_greedy(engine.generate(PROMPTS, params), hf.generate(PROMPTS, params))


def test_hf_generator_with_a_cuda_model():
    from alignkit.generation import HFGenerator, SamplingParams

    hf = HFGenerator.from_pretrained(MODEL)
    hf.model.cuda()
    (r,) = hf.generate(PROMPTS[:1], SamplingParams(n=1, temperature=0, max_tokens=8, logprobs=True))
    assert r.completions[0].logprobs
