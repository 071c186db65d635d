"""Engine v2: declared signals (per-token top-k, samples, rewards), one tokenisation for training and
sampling, content fingerprints, message-list prompts end to end, entry points."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignkit.config import load_recipe, validate_recipe


# -- per-token top-k -----------------------------------------------------------------------------


@pytest.mark.parametrize("k", [5, None])
def test_chunked_topk_equals_direct_topk_of_log_softmax(tiny_model_dir, k):
    from transformers import AutoModelForCausalLM

    from alignkit.modeling.logprobs import hidden_states, token_topk_from_hidden, topk_logprobs

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.randint(3, 1000, (2, 23))
    hidden, head = hidden_states(model, ids, torch.ones_like(ids))
    logps, top, tail = token_topk_from_hidden(hidden, head, k, chunk_size=4)
    direct = model(input_ids=ids).logits.float().log_softmax(-1)
    if k is None:
        assert torch.allclose(logps, direct, atol=1e-5) and top is None and torch.isinf(tail).all()
        return
    values, indices = direct.topk(k, dim=-1)
    assert torch.equal(top, indices) and torch.allclose(logps, values, atol=1e-5)
    rest = torch.log1p(-values.exp().sum(-1))
    assert torch.allclose(tail, rest, atol=1e-4)
    # the pure function on hand-made logits: mass of the top-k plus the tail is 1
    z = torch.tensor([[2.0, 0.0, -1.0, 3.0]])
    lp, i, t = topk_logprobs(z, 2)
    assert i.tolist() == [[3, 0]] and torch.allclose(lp.exp().sum() + t.exp(), torch.tensor(1.0))


def topk_recipe(tmp_path, *overrides):
    sys.path.insert(0, str(Path(__file__).parent))  # the example method lives beside the tests
    return validate_recipe({
        "method": "topk_kd_method", "model": {"path": "tiny:xs", "dtype": "float32"},
        "data": {"train": "data/samples/sft.jsonl", "format": "sft", "template": "chat", "max_length": 64, "max_prompt_length": 32},
        "training": {"output_dir": str(tmp_path / "run"), "max_steps": 3, "per_device_train_batch_size": 2, "logging_steps": 1,
                     "learning_rate": 1e-3, "report_to": "none", "save_strategy": "no"},
        "method_args": {"teacher": "tiny:s", "k": 4},
    } | {})


def test_topk_signal_round_trip_and_second_prepare_recomputes_nothing(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from alignkit.engine.run import build, prepare
    from alignkit.modeling.loading import resolve_model_path

    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    recipe = topk_recipe(tmp_path)
    first = prepare(recipe)
    assert "teacher: teacher top-4 by tiny:s: computed for" in first
    assert ": reused" in prepare(recipe)
    prep = build(recipe)
    batch = prep.method.collate(prep.train_examples[:3])
    # the cached values are the teacher's top-k at exactly the student's completion tokens
    teacher = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny:s"))
    for row, ex in enumerate(prep.train_examples[:3]):
        ids = torch.tensor([ex["prompt_ids"] + ex["completion_ids"]])
        logps = teacher(input_ids=ids).logits.float().log_softmax(-1)[0, len(ex["prompt_ids"]) - 1 : -1]
        values, indices = logps.topk(4, dim=-1)
        t = len(ex["completion_ids"])
        assert batch["teacher_valid"][row].sum() == t
        assert torch.equal(batch["teacher_ids"][row, :t], indices)
        assert torch.allclose(batch["teacher_logps"][row, :t], values, atol=2e-2)  # stored in fp16
    # a corrupted cache file is reported and recomputed
    folder = next((tmp_path / "cache" / "signals" / "topk").iterdir())
    (folder / "offsets.npy").write_bytes(b"garbage")
    assert "computed for" in prepare(recipe)
    # values scored under another rule of which tokens count (the layouts' SCORING_VERSION) are not reused
    import alignkit.engine.signals as signals

    monkeypatch.setattr(signals, "SCORING_VERSION", signals.SCORING_VERSION + 1)
    assert "computed for" in prepare(recipe)


def test_method_with_a_topk_signal_trains_through_the_engine(tmp_path):
    """The student (a random tiny model) moves toward a trained teacher (the gym's base policy)."""
    from alignkit.engine.run import train

    recipe = topk_recipe(tmp_path)
    recipe = validate_recipe(recipe.model_dump(mode="json") | {
        "method_args": {"teacher": "data/gym/base-s", "k": 8, "kd_weight": 5.0}})
    recipe.training.max_steps = 8
    summary = train(recipe)
    assert summary.steps == 8 and summary.after["kl"] < 0.9 * summary.before["kl"]


def test_full_vocabulary_mode_kl_is_zero_for_the_teacher_itself(tmp_path):
    """k=None: the teacher's whole distribution; distilling a model into itself gives KL 0."""
    from alignkit.engine.run import build
    from alignkit.modeling.loading import load_causal_lm

    recipe = topk_recipe(tmp_path, )
    recipe.method_args = {**recipe.method_args, "k": None, "teacher": "tiny:xs"}
    recipe = validate_recipe(recipe.model_dump(mode="json"))
    prep = build(recipe)
    batch = prep.method.collate(prep.train_examples[:4])
    with torch.no_grad():
        out = prep.method.sequence_outputs(load_causal_lm(recipe.model, trainable=False), batch)
    assert out["kl"][out["mask"]].abs().max() < 5e-3  # fp16 storage of the teacher's log-probs


# -- one tokenisation ----------------------------------------------------------------------------


def sentencepiece_like_tokenizer():
    """A Metaspace (SentencePiece-style) BPE tokenizer: a word-start marker is added to the first word of
    any text tokenised on its own, as Llama-2/Mistral do, so separate tokenisation of a completion differs
    from its tokenisation after a template that ends in a newline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", behavior="isolated"),
                                                 pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    corpus = ["Question: what is the answer?\nAnswer:\nSure, the answer is five.", "Sure thing. The answer is here."] * 50
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>", "<pad>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def test_completion_is_tokenised_jointly_with_its_prompt():
    from alignkit.data.tokenization import PromptCompletionTokenizer, encode_prompt

    tok = sentencepiece_like_tokenizer()
    template = "Question: {prompt}\nAnswer:\n"
    tokens = PromptCompletionTokenizer(tok, template, max_length=64, max_prompt_length=32)
    prompt, completion = tokens.encode("what is the answer?", ["Sure, the answer is five."])
    full = tok("Question: what is the answer?\nAnswer:\nSure, the answer is five.")["input_ids"]
    separate = tok("Sure, the answer is five.", add_special_tokens=False)["input_ids"]
    assert completion[:-1] != separate  # the tokenizer really differs on its own (a "▁Sure" first token)
    assert prompt + completion[:-1] == full and completion[-1] == tok.eos_token_id
    assert prompt == encode_prompt(tok, "what is the answer?", template, 32)  # what every generator feeds the model
    assert tokens.stats["boundary_merged"] == 0


def test_boundary_merge_falls_back_to_the_common_prefix(tiny_tokenizer):
    """A template that ends inside a word: the byte-level BPE merges the prompt's last token with the
    completion's first, so the boundary moves left (TRL's rule), the sequence stays the joint tokenisation,
    and the case is counted."""
    from alignkit.data.tokenization import PromptCompletionTokenizer

    tokens = PromptCompletionTokenizer(tiny_tokenizer, "Say: {prompt} ban", max_length=64, max_prompt_length=32)
    prompt, completion = tokens.encode("fruit", ["ana split"])
    full = tiny_tokenizer("Say: fruit banana split", add_special_tokens=True)["input_ids"]
    alone = tiny_tokenizer("Say: fruit ban", add_special_tokens=True)["input_ids"]
    assert full[: len(alone)] != alone  # the merge is real for this tokenizer
    assert prompt + completion[:-1] == full and len(prompt) < len(alone)
    assert tokens.stats["boundary_merged"] == 1 and "boundary moved left" in tokens.report()


def test_prompt_truncation_is_the_same_in_training_and_generation(tiny_model_dir):
    from transformers import AutoTokenizer

    from alignkit.data.tokenization import PromptCompletionTokenizer
    from alignkit.generation.hf import HFGenerator

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    long_prompt = "Tell me about the river and the garden and the market. " * 20
    tokens = PromptCompletionTokenizer(tok, "chat", max_length=48, max_prompt_length=16)
    prompt, _ = tokens.encode(long_prompt, ["Fine."])
    gen = HFGenerator(torch.nn.Linear(1, 1), tok, "chat", max_prompt_length=16)
    assert gen.encode(long_prompt) == prompt and len(prompt) == 16
    assert tokens.stats["prompt_truncated"] == 1 and "left-truncated" in tokens.report()


def test_truncation_is_counted_and_reported_in_the_run_notes(tmp_path):
    from alignkit.engine.run import build

    recipe = load_recipe("recipes/dpo_tiny.yaml", ["model.path=tiny:xs", "data.max_length=24", "data.max_prompt_length=8",
                                                   "data.train=data/gym/heldout_preference.jsonl", "data.eval=[]"])
    notes = " ".join(build(recipe, compute_signals=False).notes)
    assert "prompts left-truncated to max_prompt_length=8" in notes and "completions right-truncated" in notes


# -- fingerprints and one loader -----------------------------------------------------------------


def test_fingerprint_changes_with_any_weight_byte_and_with_load_settings(tmp_path):
    import shutil

    from alignkit.config import ModelSettings
    from alignkit.modeling.loading import model_fingerprint, resolve_model_path

    folder = tmp_path / "m"
    shutil.copytree(resolve_model_path("tiny:xs"), folder)
    base = model_fingerprint(ModelSettings(path=str(folder)))
    assert model_fingerprint(ModelSettings(path=str(folder))) == base  # stable
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0xFF  # same path, same size, a byte in the middle of the file
    stat = weights.stat()
    weights.write_bytes(bytes(data))
    import os

    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime restored
    assert model_fingerprint(ModelSettings(path=str(folder))) != base
    again = model_fingerprint(ModelSettings(path=str(folder)))
    assert again == model_fingerprint(ModelSettings(path=str(folder)))
    for change in ({"dtype": "bfloat16"}, {"attn_implementation": "eager"}, {"quantization": {"bits": 4}}):
        assert model_fingerprint(ModelSettings(path=str(folder), **change)) != again, change
    copy = tmp_path / "copy"  # the same weights under another path share the key (content-addressed)
    shutil.copytree(folder, copy)
    assert model_fingerprint(ModelSettings(path=str(copy))) == again


def test_frozen_models_keep_the_recipe_load_settings():
    from alignkit.config import ModelSettings
    from alignkit.modeling.loading import frozen_settings

    policy = ModelSettings(path="org/policy", revision="v2", dtype="bfloat16", attn_implementation="sdpa",
                           quantization={"bits": 4}, lora={"r": 8})
    same = frozen_settings(policy)
    assert same.lora is None and same.revision == "v2" and same.quantization.bits == 4 and same.attn_implementation == "sdpa"
    other = frozen_settings(policy, "org/reference")
    assert other.path == "org/reference" and other.revision is None and other.quantization.bits == 4 and other.dtype == "bfloat16"


# -- message-list prompts end to end, templates, entry points ------------------------------------


def test_message_prompts_through_generate_and_bon(tmp_path):
    from alignkit.cli import main

    out = tmp_path / "gen.jsonl"
    assert main(["generate", "--model", "tiny:xs", "--prompts", "data/samples/prompt.jsonl", "--n", "2", "--max-tokens", "4",
                 "--backend", "hf", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[1]["prompt"] == [{"role": "user", "content": "List 3 fruits."}] and len(rows[1]["completions"]) == 2
    bon = tmp_path / "bon.jsonl"
    assert main(["bon", "--model", "tiny:xs", "--prompts", "data/samples/prompt.jsonl", "--n", "2", "--max-tokens", "4",
                 "--backend", "hf", "--scorer", "judge", "--judge-model", "tiny:xs", "--out", str(bon)]) == 0
    assert json.loads(bon.read_text().splitlines()[1])["prompt"][0]["content"] == "List 3 fruits."


def test_message_prompts_through_d2o_prepare(tmp_path):
    from alignkit.engine.run import build

    data = tmp_path / "neg.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": [{"role": "user", "content": "How do I pick a lock?"}], "rejected": "Use a tension wrench."},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "rejected": "Go away."},
        {"prompt": "Plain text prompt", "rejected": "No."},
    ]))
    recipe = load_recipe("recipes/d2o_tiny.yaml", ["model.path=tiny:xs", f"data.train={data}", "data.eval=[]",
                                                   "method_args.num_samples=2", "method_args.sample_max_tokens=4"])
    prep = build(recipe)
    assert len(prep.train_examples) == 3 and all(len(e["sample_ids"]) == 2 for e in prep.train_examples)
    assert all("ref_rejected_logps" in e for e in prep.train_examples)


def test_pku_and_custom_templates():
    from alignkit.data.templates import render_prompt

    assert render_prompt("How?", "pku") == "BEGINNING OF CONVERSATION: USER: How? ASSISTANT:"
    assert render_prompt("How?", "Q: {prompt}\nA:") == "Q: How?\nA:"
    assert render_prompt("How?", "Q: {prompt}\nJ: {judgment}\nA:", judgment="wrong") == "Q: How?\nJ: wrong\nA:"
    with pytest.raises(ValueError, match="unknown template"):
        validate_recipe({"method": "sft", "model": {"path": "tiny:xs"}, "data": {"train": "x", "template": "vicuna"}})
    recipe = load_recipe("recipes/d2o_alpaca7b.yaml", check_files=False)
    assert recipe.data.template == "pku"


def test_separate_references_for_samples_and_negatives():
    from alignkit.engine.run import load_method
    from alignkit.modeling.loading import load_tokenizer

    recipe = load_recipe("recipes/d2o_tiny.yaml", ["model.path=tiny:xs", "method_args.negative_reference_model=tiny:s"])
    method = load_method(recipe, load_tokenizer(recipe.model))
    refs = [s for s in method.signals(recipe) if hasattr(s, "keys")]
    assert [(s.keys, s.model.path) for s in refs] == [(("sample_logps",), "tiny:xs"), (("rejected_logps",), "tiny:s")]


@pytest.mark.parametrize("command", ["judge", "serve", "generate", "bon", "train"])
def test_python_dash_m_alignkit_cli_help(command):
    result = subprocess.run([sys.executable, "-m", "alignkit.cli", command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: alignkit" in result.stdout, result.stderr[-2000:]


def test_bf16_model_with_mixed_precision_trains(tmp_path):
    """`model.dtype: bfloat16` with `training.bf16` (every GPU recipe): the wrapped forward returns fp32 hidden
    states under autocast, and the chunked bf16 head must still accept them (it failed with a dtype mismatch)."""
    from alignkit.engine.run import train

    recipe = load_recipe("recipes/dpo_tiny.yaml", ["model.path=tiny:xs", "model.dtype=bfloat16", "training.bf16=true",
                                                   "training.use_cpu=true", "training.max_steps=2", "data.eval=[]",
                                                   f"training.output_dir={tmp_path}"])
    assert train(recipe).steps == 2
