"""Engine: chunked log-probs, reference cache reuse/invalidation, training effect, resume."""

import json

import pytest
import torch

from alignkit.config import load_recipe
from alignkit.modeling.logprobs import sequence_token_logprobs


def tiny_recipe(tmp_path, *overrides):
    return load_recipe("recipes/dpo_tiny.yaml", [
        "model.path=tiny:xs", f"training.output_dir={tmp_path / 'run'}", "training.num_train_epochs=1",
        "training.per_device_train_batch_size=8", "training.logging_steps=1", *overrides,
    ])


def test_chunked_logprobs_equal_full_logits_with_gradients(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.randint(3, 1000, (3, 41))
    attention = torch.ones_like(ids)
    attention[1, 30:] = 0
    score = torch.zeros_like(ids)
    score[:, 10:] = 1
    score[1, 30:] = 0
    chunked, mask = sequence_token_logprobs(model, ids, attention, score, chunk_size=7)
    chunked.sum().backward()
    g_chunked = model.model.layers[0].mlp.up_proj.weight.grad.clone()
    model.zero_grad()
    full, _ = sequence_token_logprobs(model, ids, attention, score, chunk_size=None)
    full.sum().backward()
    assert torch.allclose(chunked, full, atol=1e-5)
    assert torch.allclose(g_chunked, model.model.layers[0].mlp.up_proj.weight.grad, atol=1e-6)
    assert mask.sum() == 31 + 20 + 31 and (chunked[~mask] == 0).all()  # positions 10..40, row 1 stops at 29


def test_reference_cache_reused_and_invalidated(tmp_path, monkeypatch):
    from alignkit.engine.run import prepare

    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))  # other tests may have cached these keys

    recipe = tiny_recipe(tmp_path, "data.train=data/samples/preference.jsonl", "data.eval=[]")
    first = prepare(recipe)
    assert ": computed for 2 examples" in first and ": reused" not in first
    second = prepare(recipe)
    assert ": reused" in second and ": computed" not in second
    # Different data, different max length, or different model: new keys, never a stale hit.
    for change in ("data.train=data/gym/heldout_preference.jsonl", "data.max_prompt_length=16", "model.path=tiny:s"):
        changed = tiny_recipe(tmp_path, "data.train=data/samples/preference.jsonl", "data.eval=[]", change)
        assert ": computed for" in prepare(changed), change
    # Nor values scored under another rule of which tokens count (the layouts' SCORING_VERSION).
    import alignkit.engine.signals as signals

    monkeypatch.setattr(signals, "SCORING_VERSION", signals.SCORING_VERSION + 1)
    assert ": computed for 2 examples" in prepare(recipe)


def test_precomputed_reference_equals_live_reference(tmp_path):
    from alignkit.engine.run import build
    from alignkit.modeling.loading import load_causal_lm

    recipe = tiny_recipe(tmp_path, "data.train=data/samples/preference.jsonl", "data.eval=[]")
    prep = build(recipe)
    batch = prep.method.collate(prep.train_examples)
    with torch.no_grad():
        live = prep.method.sequence_outputs(load_causal_lm(recipe.model, trainable=False), batch)
    for key in ("chosen_logps", "rejected_logps"):
        assert torch.allclose(batch[f"ref_{key}"], live[key], atol=1e-5)


def test_dpo_training_raises_heldout_preference_accuracy(tmp_path):
    from alignkit.engine.run import train

    summary = train(tiny_recipe(tmp_path, "training.max_steps=40", "training.learning_rate=2e-3"))
    assert summary.steps == 40
    assert summary.before["rewards/accuracies"] == 0.0  # policy == reference before training
    assert summary.after["rewards/accuracies"] > 0.7
    assert summary.after["loss"] < summary.before["loss"] - 0.05
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_resume_continues_with_the_same_data_order(tmp_path):
    import shutil

    from alignkit.engine.run import train

    steps = ["training.max_steps=6", "training.save_steps=3", "training.save_total_limit=null", "training.learning_rate=1e-3"]
    full = tiny_recipe(tmp_path / "a", *steps)
    train(full)
    history = json.loads((tmp_path / "a" / "run" / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
    # Simulate an interruption after step 3: keep only checkpoint-3, then resume.
    shutil.copytree(tmp_path / "a" / "run" / "checkpoint-3", tmp_path / "b" / "run" / "checkpoint-3")
    resumed = tiny_recipe(tmp_path / "b", *steps)
    summary = train(resumed, resume=True)
    assert summary.steps == 6
    again = json.loads((tmp_path / "b" / "run" / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
    losses = lambda h: [(e["step"], round(e["loss"], 4), round(e["logps/chosen"], 3)) for e in h if "loss" in e and e["step"] > 3]
    assert losses(again) == losses(history) and len(losses(history)) == 3


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("recipe", ["recipes/dpo_tiny.yaml", "recipes/cut_tiny.yaml", "recipes/dckd_tiny.yaml"])
def test_packed_and_padded_batches_give_the_same_logprobs(tmp_path, recipe, attn):
    """Packed rows of at most max_length tokens (SDPA, eager), one packed row (what flash-attention gets) and padded
    rows give the same per-sequence values and train."""
    from transformers import AutoModelForCausalLM

    from alignkit.config import load_recipe
    from alignkit.engine.run import build
    from alignkit.modeling.loading import resolve_model_path

    outputs = {}
    for layout in ("padded", "rows", "one row"):
        prep = build(load_recipe(recipe, ["model.path=tiny:xs", f"training.output_dir={tmp_path / 'run'}", "data.eval=[]",
                                          f"model.attn_implementation={attn}", f"data.packing={layout != 'padded'}",
                                          *(["method_args.teacher=tiny:s", "method_args.k=8"] if "dckd" in recipe else [])]))
        if layout == "one row":
            prep.method.pack_width = None
        batch = prep.method.collate(prep.train_examples[:6])
        rows = batch["input_ids"].shape[0]
        if layout == "padded":
            assert "attention_mask" in batch and rows == int(batch["sequence_index"].max()) + 1
        else:
            assert "attention_mask" not in batch and (rows == 1) == (layout == "one row")
            width = prep.method.tokens.max_length
            if layout == "rows":  # several rows, each holding several sequences
                assert 1 < rows < int(batch["sequence_index"].max()) + 1
                assert (batch["sequence_index"][:, 1:] >= batch["sequence_index"][:, :-1]).all()  # order kept within rows
                # but not across them (first-fit decreasing), so the per-position consumers' reordering is exercised
                assert not (batch["sequence_index"][1:, 0] > batch["sequence_index"][:-1, -1]).all()
                assert batch["input_ids"].shape[1] <= -(-width // 8) * 8
        model = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny:xs"), attn_implementation=attn)
        out = prep.method.sequence_outputs(model, batch)
        next(v for v in out.values() if v.requires_grad).sum().backward()  # packing must train too
        outputs[layout] = out
    for layout in ("rows", "one row"):
        for key, value in outputs["padded"].items():
            assert torch.allclose(value.float(), outputs[layout][key].float(), atol=1e-4), (layout, key)


@pytest.mark.parametrize("route", ["model", "adapter"])
def test_live_reference_routes_equal_precomputed(tmp_path, route):
    """(a) a frozen reference model and (b) the LoRA policy with its adapter off give route (c)'s numbers."""
    from alignkit.modeling.loading import load_causal_lm
    from alignkit.engine.run import build, training_arguments
    from alignkit.engine.trainer import AlignTrainer, LiveReference

    overrides = ["data.train=data/samples/preference.jsonl", "data.eval=[]", "model.lora={r: 4, alpha: 8, dropout: 0.0}"]
    precomputed = build(tiny_recipe(tmp_path, *overrides))
    batch = precomputed.method.collate(precomputed.train_examples)
    expected = {k: batch[f"ref_{k}"] for k in ("chosen_logps", "rejected_logps")}

    recipe = tiny_recipe(tmp_path, *overrides, f"method_args.reference={route}")
    prep = build(recipe)
    policy = load_causal_lm(recipe.model, trainable=True)
    with torch.no_grad():  # move the adapter away from zero so the policy differs from the reference
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    ref_model = load_causal_lm(recipe.model, trainable=False) if route == "model" else None
    live_ref = LiveReference(("chosen_logps", "rejected_logps"), ref_model)
    trainer = AlignTrainer(model=policy, args=training_arguments(recipe), method=prep.method, live_references=[live_ref])
    live_batch = prep.method.collate(prep.train_examples)
    assert not any(k.startswith("ref_") for k in live_batch)  # a live route computes nothing before training
    live = trainer.reference_outputs(trainer.model, live_batch)
    for key, value in expected.items():
        assert torch.allclose(live[key], value, atol=1e-4), key
    policy_out = prep.method.sequence_outputs(policy, live_batch)
    assert not torch.allclose(policy_out["chosen_logps"], expected["chosen_logps"], atol=1e-3)


def test_lora_policy_with_gradient_checkpointing_gets_the_gradients_of_one_without(tmp_path):
    """Checkpointing a LoRA policy (non-reentrant outside ZeRO-3) changes no adapter gradient, and the live
    adapter-off reference under it still equals the precomputed one."""
    from alignkit.engine.run import build
    from alignkit.modeling.loading import load_causal_lm

    recipe = tiny_recipe(tmp_path, "data.train=data/samples/preference.jsonl", "data.eval=[]",
                         "model.lora={r: 4, alpha: 8, dropout: 0.0}")
    prep = build(recipe)
    batch = prep.method.collate(prep.train_examples)
    grads = {}
    for ckpt in (False, True):
        torch.manual_seed(0)
        policy = load_causal_lm(recipe.model, trainable=True, gradient_checkpointing=ckpt)
        with torch.no_grad():
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.linspace(-0.05, 0.05, p.numel()).reshape(p.shape))
        policy.train()
        with torch.no_grad(), policy.disable_adapter():
            ref = prep.method.sequence_outputs(policy, batch)
        assert torch.allclose(ref["chosen_logps"], batch["ref_chosen_logps"], atol=1e-4)
        out = prep.method.sequence_outputs(policy, batch)
        (out["chosen_logps"] - out["rejected_logps"]).sum().backward()
        grads[ckpt] = {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}
    assert grads[True].keys() == grads[False].keys() and any("lora_A" in n for n in grads[True])
    for name, grad in grads[False].items():
        assert grad.abs().sum() > 0, name
        assert torch.allclose(grads[True][name], grad, atol=1e-5, rtol=1e-4), name


def test_a_lora_run_does_not_depend_on_what_the_cache_held(tmp_path, monkeypatch):
    """The adapter's random initialisation comes from the seed alone: a run that first builds its tiny model and
    reference cache ends with the weights of a run that finds them."""
    from safetensors.torch import load_file

    from alignkit.engine.run import train

    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    weights = []
    for name in ("cold", "warm"):
        train(tiny_recipe(tmp_path, "data.train=data/samples/preference.jsonl", "data.eval=[]", "training.max_steps=1",
                          "model.lora={r: 4, alpha: 8, dropout: 0.0}", f"training.output_dir={tmp_path / name}"))
        weights.append(load_file(tmp_path / name / "final" / "adapter_model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_a_first_token_with_no_prompt_is_unscored_in_every_layout():
    """Nothing precedes it: padded rows never score it, and packed or shared rows must not predict it from the
    sequence before it (or from padding); an empty sequence shifts nothing."""
    from alignkit.modeling.batching import pack_rows, pad_rows, shared_prompt_rows
    from alignkit.modeling.logprobs import completion_matrix

    rows = [([], []), ([5, 6], [7, 8]), ([], [9, 10, 11])]
    for batch in (pad_rows(rows, 0), pack_rows(rows, 0, width=16), pack_rows(rows, 0)):
        mask = batch["loss_mask"][:, 1:].bool()
        matrix, valid = completion_matrix(batch["input_ids"][:, 1:], mask, batch)
        assert [m[v].tolist() for m, v in zip(matrix, valid)] == [[], [7, 8], [10, 11]]
    shared = shared_prompt_rows([([5], [6, 7]), ([], [9])], 0)
    assert shared["labels"].tolist() == [6, 7] and int(shared["sequence_index"].max()) + 1 == 2


def test_packed_rows_keep_each_sequence_whole_fit_the_width_and_use_first_fit_decreasing_rows():
    import random

    from alignkit.modeling.batching import _first_fit_decreasing, pack_rows
    from alignkit.modeling.logprobs import completion_matrix, scored_positions

    rng = random.Random(0)
    for _ in range(300):
        rows = [([1] * rng.randint(0, 30), [2 + i] * rng.randint(1, 40)) for i in range(rng.randint(1, 20))]
        lengths = [len(p) + len(c) for p, c in rows]
        width = rng.choice([None, 16, 50, 100, 400])
        batch = pack_rows(rows, 0, width=width)
        scored = [c if p else c[1:] for p, c in rows]  # a first token with no prompt is not scored (as when padded)
        assert int((batch["input_ids"] != 0).sum()) == sum(lengths) and int(batch["loss_mask"].sum()) == sum(map(len, scored))
        index, positions = batch["sequence_index"], batch["position_ids"]
        for i, n in enumerate(lengths):  # each sequence whole, in one row, contiguous, positions 0..n-1
            r, c = torch.nonzero((index == i) & (batch["input_ids"] != 0), as_tuple=True)
            assert r.unique().numel() == 1 and (c == torch.arange(c[0], c[0] + n)).all()
            assert (positions[r, c] == torch.arange(n)).all()
        mask = batch["loss_mask"][:, 1:].bool()
        matrix, valid = completion_matrix(batch["input_ids"][:, 1:], mask, batch)  # sequence order restored
        for i, c in enumerate(scored):
            assert matrix[i][valid[i]].tolist() == c
        at = scored_positions(mask, batch)
        assert batch["input_ids"][:, 1:][at].tolist() == [t for c in scored for t in c]
        if width is None:
            assert batch["input_ids"].shape[0] == 1
        else:
            cap = max(width, max(lengths))
            assert batch["input_ids"].shape[1] <= -(-cap // 8) * 8
            assert batch["input_ids"].shape[0] <= len(_first_fit_decreasing(lengths, cap))  # as few rows as FFD needs
            assert batch["input_ids"].shape[0] >= -(-sum(lengths) // cap)
