"""Tiny local models: built offline, reload with Auto* classes, chat template, classifier, cache."""

import os
import subprocess
import sys

import torch

from alignkit.gym.tiny_model import SIZES, build_tiny_model, resolve_tiny


def test_reloads_offline_in_a_fresh_process(tiny_model_dir):
    code = (
        "from transformers import AutoModelForCausalLM, AutoTokenizer;"
        f"m = AutoModelForCausalLM.from_pretrained({str(tiny_model_dir)!r});"
        f"t = AutoTokenizer.from_pretrained({str(tiny_model_dir)!r});"
        "print(type(m).__name__, m.config.head_dim, len(t), t.eos_token, t.pad_token)"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["LlamaForCausalLM", "32", "1024", "<|end|>", "<pad>"]


def test_tokenizer_round_trips_and_chat_template(tiny_tokenizer):
    text = "What is 7 plus 5? 7 plus 5 is 12."
    assert tiny_tokenizer.decode(tiny_tokenizer(text)["input_ids"]) == text
    ids = tiny_tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert tiny_tokenizer.decode(ids) == "<s><|user|>\nHi<|end|>\n<|assistant|>\n"


def test_model_is_deterministic_per_seed_and_generates(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    again = build_tiny_model(tmp_path / "again", "xs", seed=0)
    a = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    b = AutoModelForCausalLM.from_pretrained(again)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name
    out = a.generate(torch.tensor([[1, 4, 200]]), max_new_tokens=5, do_sample=False)
    assert out.shape == (1, 8)


def test_classifier_variant(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = build_tiny_model(tmp_path / "rm", "xs", classifier=True)
    model = AutoModelForSequenceClassification.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    batch = tok(["a good answer", "bad"], return_tensors="pt", padding=True)
    assert model(**batch).logits.shape == (2, 1)


def test_head_dim_at_least_32_for_every_size():
    assert all(s.hidden_size // s.num_attention_heads >= 32 for s in SIZES.values())


def test_resolve_tiny_builds_once_into_cache(_private_cache):
    first = resolve_tiny("tiny:xs")
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert resolve_tiny("tiny:xs") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime
    assert first.parent == _private_cache / "models"


def test_resave_in_bfloat16_halves_the_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM

    from alignkit.gym.pretrain import resave

    path = build_tiny_model(tmp_path / "m", "xs")
    before = (path / "model.safetensors").stat().st_size
    resave(path, "bfloat16")
    assert (path / "model.safetensors").stat().st_size < 0.6 * before
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)  # recipes load it in fp32
    assert next(model.parameters()).dtype == torch.float32
