"""DCKD and ADPA: the per-position terms against their formulas on hand-made tensors, the official-code
options, the shared-vocabulary check, the trainers on tiny models, and staged recipes (ADPA+)."""

import json
import math

import pytest
import torch

from alignkit.config import load_recipe
from alignkit.trainers.adpa import adpa_advantages, adpa_loss, adpa_token_term
from alignkit.trainers.dckd import dckd_loss, dckd_token_kl

V = 12


def logits(seed, n=5, v=V, scale=2.0):
    return torch.randn(n, v, generator=torch.Generator().manual_seed(seed)) * scale


def full_topk(z, k):
    logp = z.log_softmax(-1)
    values, ids = logp.topk(k, -1)
    return ids, values


# -- DCKD --------------------------------------------------------------------------------------------


def test_dckd_kl_with_the_teacher_equal_to_the_student_is_zero_and_equals_plain_kd():
    z = logits(0)
    ids, lp = full_topk(z, V)
    assert dckd_token_kl(z, ids, lp, clamp=False).abs().max() < 1e-6
    teacher = logits(1)
    ids, lp = full_topk(teacher, V)
    plain_kd = (teacher.softmax(-1) * (teacher.log_softmax(-1) - z.log_softmax(-1))).sum(-1)  # KL(p ‖ q), full vocabulary
    assert torch.allclose(dckd_token_kl(z, ids, lp, clamp=False), plain_kd, atol=1e-5)
    assert torch.allclose(dckd_token_kl(z, None, teacher.log_softmax(-1), clamp=False), plain_kd, atol=1e-5)  # k = None


def test_dckd_topk_mode_approaches_the_full_kl_as_k_grows():
    z, teacher = logits(2), logits(3, scale=4.0)
    exact = dckd_token_kl(z, None, teacher.log_softmax(-1), clamp=False)
    gaps = []
    for k in (2, 6, 10, V):
        ids, lp = full_topk(teacher, k)
        gaps.append((dckd_token_kl(z, ids, lp, clamp=False) - exact).abs().max().item())
    assert gaps[-1] < 1e-5 and gaps[0] > gaps[-1]
    # K bins + tail by hand, K = 2: the tail bin holds the rest of both distributions
    ids, lp = full_topk(teacher, 2)
    p, q = teacher.softmax(-1), z.softmax(-1)
    pk, qk = p.gather(-1, ids), q.gather(-1, ids)
    pt, qt = 1 - pk.sum(-1), 1 - qk.sum(-1)
    by_hand = (pk * (pk.log() - qk.log())).sum(-1) + pt * (pt.log() - qt.log())
    assert torch.allclose(dckd_token_kl(z, ids, lp, clamp=False), by_hand, atol=1e-5)


def test_dckd_official_clamps_and_out_of_vocabulary_ids():
    z = torch.tensor([[30.0, 0.0, 0.0, 0.0]])  # the student puts ~all mass on token 0
    lp = torch.log(torch.tensor([[0.5, 0.5]]))
    ids = torch.tensor([[1, 2]])
    # official: the student's bins are floored at 1e-7, so the KL stays finite; the exact KL is far larger
    official = dckd_token_kl(z, ids, lp, clamp=True)
    q = z.softmax(-1)[0]
    tau = torch.tensor([0.5, 0.5, 1e-8])
    qb = torch.stack([q[1], q[2], 1 - q[1] - q[2]]).clamp(1e-8, 1 - 1e-8).clamp(min=1e-7)
    assert torch.allclose(official, (tau * (tau.log() - qb.log())).sum()[None], atol=1e-4)
    assert dckd_token_kl(z, ids, lp, clamp=False) > official
    # a teacher id beyond the student's vocabulary counts in the tail bin
    wide = dckd_token_kl(logits(4, n=1, v=4), torch.tensor([[0, 7]]), torch.log(torch.tensor([[0.6, 0.3]])), clamp=False)
    folded = dckd_token_kl(logits(4, n=1, v=4), torch.tensor([[0]]), torch.log(torch.tensor([[0.6]])), clamp=False)
    assert torch.allclose(wide, folded, atol=1e-6)


def test_dckd_loss_weights():
    nll, kc, kr = torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([3.0])
    assert dckd_loss(nll, kc, kr).item() == pytest.approx(2.0 + 0.1 + 0.3)
    assert dckd_loss(nll, kc, kr, 0.0, 1.0, 0.0).item() == pytest.approx(1.0)


# -- ADPA --------------------------------------------------------------------------------------------


def test_adpa_full_vocabulary_no_clip_is_minus_the_expected_log_ratio():
    z, dpo, ref = logits(5), logits(6), logits(7)
    ids = torch.arange(V).expand(5, V)
    adv = adpa_advantages(ids, dpo.log_softmax(-1), ref.log_softmax(-1), fallback="exact", beta_adv=1.0)
    term = adpa_token_term(z, ids, adv, advantage_clip=None)
    q = z.softmax(-1)
    expected = (q * (dpo.log_softmax(-1) - ref.log_softmax(-1))).sum(-1)
    assert torch.allclose(term, expected, atol=1e-5)
    # the loss: −γ · mean over the T positions
    loss = adpa_loss(torch.zeros(1), term.mean()[None], sft_weight=1.0, gamma=1.0)
    assert loss.item() == pytest.approx(-expected.sum().item() / 5, abs=1e-5)


def test_adpa_gradient_is_zero_when_the_teachers_agree():
    z = logits(8).requires_grad_()
    teacher = logits(9)
    ids, lp = full_topk(teacher, 5)
    adv = adpa_advantages(ids, lp, lp, fallback="exact")
    assert adv.abs().max() == 0
    adpa_token_term(z, ids, adv, advantage_clip=None).sum().backward()
    assert z.grad.abs().max() == 0


def test_official_clip_keeps_only_1e8_of_an_all_negative_position():
    z = logits(10, n=1)
    ids = torch.tensor([[0, 1, 2]])
    adv = torch.tensor([[-2.0, -0.5, -3.0]])
    term = adpa_token_term(z, ids, adv)  # official clip (1e-8, 1 − 1e-8)
    q = z.softmax(-1)[0]
    bins = torch.cat([q[:3], (1 - q[:3].sum())[None]]).clamp(1e-8, 1 - 1e-8)
    assert term.item() == pytest.approx(1e-8 * bins.sum().item(), rel=1e-4)
    # positive advantages are capped at ~1
    big = adpa_token_term(z, ids, torch.tensor([[5.0, 5.0, 5.0]]))
    assert big.item() == pytest.approx(q[:3].sum().item() * (1 - 1e-8) + 1e-8 * (1 - q[:3].sum().item()), rel=1e-4)


def test_official_reference_fallback():
    dpo_ids = torch.tensor([[0, 1, 2]])
    dpo_lp = torch.log(torch.tensor([[0.5, 0.3, 0.1]]))
    ref_at_dpo = torch.log(torch.tensor([[0.4, 0.2, 0.05]]))
    ref_ids = torch.tensor([[0, 1, 5]])  # token 2 is outside π_ref's own top-K
    ref_lp = torch.log(torch.tensor([[0.4, 0.2, 0.3]]))
    official = adpa_advantages(dpo_ids, dpo_lp, ref_at_dpo, ref_ids, ref_lp, "official")
    exact = adpa_advantages(dpo_ids, dpo_lp, ref_at_dpo, ref_ids, ref_lp, "exact")
    assert torch.allclose(official[0, :2], exact[0, :2])
    assert official[0, 2].item() == pytest.approx(math.log(0.1 / 0.1), abs=1e-6)  # π_dpo's K-th probability stands in
    assert exact[0, 2].item() == pytest.approx(math.log(0.1 / 0.05), abs=1e-6)
    assert torch.allclose(adpa_advantages(dpo_ids, dpo_lp, ref_at_dpo, fallback="exact", beta_adv=2.0), 2 * exact)


# -- the trainers on tiny models ---------------------------------------------------------------------


def test_a_teacher_with_another_tokenizer_is_refused(tmp_path):
    from transformers import AutoModelForCausalLM

    from alignkit.engine.run import build
    from test_engine_v2 import sentencepiece_like_tokenizer

    other = tmp_path / "other"
    AutoModelForCausalLM.from_pretrained(__import__("alignkit.modeling.loading", fromlist=["x"]).resolve_model_path("tiny:xs")).save_pretrained(other)
    sentencepiece_like_tokenizer().save_pretrained(other)
    recipe = load_recipe("recipes/dckd_tiny.yaml", ["model.path=tiny:xs", f"method_args.teacher={other}", "data.eval=[]"],
                         check_files=False)
    with pytest.raises(ValueError, match="different tokenizer"):
        build(recipe)


def distill_recipe(name, tmp_path, *extra):
    return load_recipe(f"recipes/{name}_tiny.yaml", ["model.path=tiny:xs", "method_args.teacher=data/gym/base-s", "data.eval=[]",
                                                     "data.train=data/gym/heldout_preference.jsonl", "training.max_steps=3",
                                                     f"training.output_dir={tmp_path / name}", *extra], check_files=False)


def test_dckd_trains_and_its_topk_cache_is_reused(tmp_path):
    from alignkit.engine.run import prepare, train

    recipe = distill_recipe("dckd", tmp_path)
    assert "teacher top-50 by data/gym/base-s: computed for" in prepare(recipe)
    summary = train(recipe)
    assert summary.steps == 3 and summary.after["kl_chosen"] < summary.before["kl_chosen"]
    assert ": reused" in prepare(recipe)


def test_adpa_samples_once_and_trains(tmp_path):
    from alignkit.engine.run import build, prepare, train

    recipe = distill_recipe("adpa", tmp_path, "method_args.ref_teacher=tiny:s", "method_args.sample_max_tokens=8",
                            "method_args.advantage_clip=null")
    first = prepare(recipe)
    assert "student_samples: 1 samples for each of" in first and "ref: ref_teacher top-50" in first
    prep = build(recipe)
    ex = prep.train_examples[0]
    assert 1 <= len(ex["sample_ids"]) <= 8 and ex["chosen_ids"]
    batch = prep.method.collate(prep.train_examples[:2])
    assert batch["adv_ids"].shape[0] == sum(len(e["sample_ids"]) for e in prep.train_examples[:2])
    # packed rows (first-fit decreasing, so sequences out of row-major order) place the advantages as padded rows do
    from transformers import AutoModelForCausalLM

    from alignkit.modeling.loading import resolve_model_path

    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny:xs"), attn_implementation="sdpa")
    examples = prep.train_examples[:8]
    padded = prep.method.sequence_outputs(model, prep.method.collate(examples))
    prep.method.packing, prep.method.pack_width = True, 48
    packed_batch = prep.method.collate(examples)
    assert 1 < packed_batch["input_ids"].shape[0] < 16 and not (packed_batch["sequence_index"][1:, 0] > packed_batch["sequence_index"][:-1, -1]).all()
    packed = prep.method.sequence_outputs(model, packed_batch)
    for key, value in padded.items():
        assert torch.allclose(value, packed[key], atol=1e-4), key
    summary = train(recipe)
    assert summary.steps == 3 and summary.after["advantage_term"] > summary.before["advantage_term"]


def test_adpa_reads_the_dpo_teachers_reference_from_its_saved_recipe(tmp_path):
    from alignkit.engine.run import load_method, train
    from alignkit.modeling.loading import load_tokenizer

    dpo = load_recipe("recipes/dpo_tiny.yaml", ["model.path=tiny:s", "data.eval=[]", "training.max_steps=1",
                                                f"training.output_dir={tmp_path / 'teacher'}"])
    teacher = train(dpo).checkpoint
    recipe = distill_recipe("adpa", tmp_path, f"method_args.teacher={teacher}", "method_args.ref_teacher=null")
    method = load_method(recipe, load_tokenizer(recipe.model))
    ref = [s for s in method.signals(recipe) if getattr(s, "name", "") == "ref"][0]
    assert ref.model.path == "tiny:s"  # the model the teacher was DPO-trained from
    plain = distill_recipe("adpa", tmp_path, "method_args.ref_teacher=null")  # base-s has no saved recipe
    with pytest.raises(ValueError, match="ref_teacher is required"):
        load_method(plain, load_tokenizer(plain.model)).signals(plain)


# -- staged recipes ----------------------------------------------------------------------------------


def test_staged_recipe_resolves_outputs_skips_complete_and_resumes(tmp_path, capsys):
    import yaml

    from alignkit.cli import main
    from alignkit.config import load_staged

    staged = tmp_path / "staged.yaml"
    staged.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "runs"), "stages": [
        {"name": "first", "recipe": "recipes/dpo_tiny.yaml",
         "set": {"model.path": "tiny:xs", "data.eval": [], "training.max_steps": 2, "training.save_steps": 1}},
        {"name": "second", "recipe": {"method": "sft", "model": {"path": "${first}"},
                                      "data": {"train": "data/samples/sft.jsonl", "format": "sft"},
                                      "training": {"max_steps": 1, "save_strategy": "no", "report_to": "none"}}},
    ]}))
    stages = load_staged(staged)
    assert stages[1].recipe.model.path == str(tmp_path / "runs" / "first" / "final")
    assert main(["train", str(staged)]) == 0
    assert (tmp_path / "runs" / "second" / "final" / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["train", str(staged)]) == 0  # both complete: nothing trains
    assert "second ->" in capsys.readouterr().out
    marker = json.loads((tmp_path / "runs" / "second" / "stage.json").read_text())
    assert marker["stage"] == "second"
    # a changed stage trains again; an earlier one stays
    from alignkit.engine.run import stage_status

    changed = load_staged(staged, ["second.training.max_steps=2"])
    assert [stage_status(s) for s in changed] == ["complete", "changed"]
    spelled = load_staged(staged, ["second.training.max_steps=1", "second.launch.num_processes=1"])  # defaults spelled out
    assert [stage_status(s) for s in spelled] == ["complete", "complete"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"output_dir": "x", "stages": [{"name": "a", "recipe": "recipes/sft_x.yaml",
                                                                  "set": {"model.path": "${later}"}}]}))
    from alignkit.config import RecipeError

    with pytest.raises(RecipeError, match=r"\$\{later\} names no earlier stage"):
        load_staged(bad)


def test_adpa_plus_recipes_validate():
    from alignkit.config import load_staged

    gym = load_staged("recipes/adpa_plus_tiny.yaml")
    assert [s.name for s in gym] == ["teacher_dpo", "dckd", "adpa"]
    assert gym[2].recipe.model.path == str(gym[1].output) and gym[2].recipe.method_args["teacher"] == str(gym[0].output)
    # the released setting: every stage validates (schema only: its data is not on this machine)
    real = load_staged("recipes/adpa_plus_llama3_1b.yaml", check_files=False)
    assert [s.name for s in real] == ["teacher_sft", "teacher_dpo", "student_sft", "dckd", "adpa"]
    adpa = real[-1].recipe
    assert adpa.model.path == str(real[3].output) and adpa.method_args["ref_teacher"] == str(real[0].output)
    assert adpa.training.optim == "adamw_torch" and adpa.training.seed == 42 and adpa.method_args["gamma"] == 1.6


def test_the_teacher_pair_check_runs_and_finds_the_gym_pairs_pull_toward_compliance():
    """`eval/adpa_teacher_check.py` (documented in docs/distillation.md) on the shipped gym teacher pair."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "eval/adpa_teacher_check.py"], capture_output=True, text=True, check=True).stdout
    assert "12 unsafe prompts" in out and "| first response token |" in out
    floor = float(out.split("the refusal token at the floor at ")[1].split("%")[0])
    assert floor > 90  # the refusal's advantage is clipped to ~0 almost everywhere (what ADPA then learns from)


def test_the_released_sft_stages_train_the_whole_conversation_with_the_header_only_template():
    """Issue 29 row 7: the ADPA+ GPU recipe's SFT stages as released: loss on every token of the conversation (the
    official SFTTrainer trains its rendered `text`), rendered by the header-only Llama-3 template."""
    from types import SimpleNamespace

    from alignkit.config import ModelSettings, load_staged
    from alignkit.data.records import SFTExample
    from alignkit.modeling.loading import load_tokenizer
    from alignkit.trainers.sft import Args, Method

    stages = {s.name: s.recipe for s in load_staged("recipes/adpa_plus_llama3_1b.yaml", check_files=False)}
    for name in ("teacher_sft", "student_sft"):
        assert stages[name].method_args["loss_on"] == "conversation" and stages[name].data.packing
    template = stages["teacher_sft"].model.chat_template
    assert template == stages["student_sft"].model.chat_template
    tok = load_tokenizer(ModelSettings(path="data/gym/base-s", chat_template=template))
    turns = [{"role": "user", "content": "Hi "}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "What is 2 plus 3?"}]
    record = SFTExample(prompt=turns, completion="5.")
    data = SimpleNamespace(template="chat", max_length=512, max_prompt_length=256, packing=False, share_prompts=False)
    method = Method(Args(loss_on="conversation"), tok, data)
    example = method.build_example(record)
    expected = tok.bos_token + "".join(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>"
                                       for m in [*turns, {"role": "assistant", "content": "5."}])
    assert example["prompt_ids"] == [] and example["completion_ids"] == tok(expected, add_special_tokens=False)["input_ids"]
    batch = method.collate([example])
    assert int(batch["loss_mask"].sum()) == len(example["completion_ids"])  # every token, the user turns included
    # the default trains the last assistant turn only, after the rendered prompt
    default = Method(Args(), tok, data).build_example(record)
    assert default["prompt_ids"] and len(default["completion_ids"]) < len(example["completion_ids"]) // 4
