"""Shared-prompt batches: a prompt shared by several sequences is computed once, and the log-probs (and their
gradients) equal the unshared ones, for DPO's chosen/rejected and D²O's K + 1 sequences."""

import pytest
import torch

from alignkit.config import load_recipe


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("recipe,extra", [("recipes/dpo_tiny.yaml", []),
                                          ("recipes/d2o_tiny.yaml", ["method_args.num_samples=3", "method_args.sample_max_tokens=10"])])
def test_shared_prompt_logprobs_equal_unshared(tmp_path, attn, recipe, extra):
    from transformers import AutoModelForCausalLM

    from alignkit.engine.run import build
    from alignkit.modeling.loading import resolve_model_path

    outputs, grads = {}, {}
    for share in (False, True):
        prep = build(load_recipe(recipe, ["model.path=tiny:xs", "data.eval=[]", f"data.share_prompts={share}", *extra]))
        examples = prep.train_examples[:5]
        batch = prep.method.collate(examples)
        if share:  # one row per distinct prompt, far fewer tokens than one row per sequence
            assert batch["input_ids"].shape[0] == len({tuple(e["prompt_ids"]) for e in examples})
        model = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny:xs"), attn_implementation=attn)
        out = prep.method.sequence_outputs(model, batch)
        key = "chosen_logps" if "chosen_logps" in out else "sample_logps"
        out[key].sum().backward()
        outputs[share] = {k: v.detach() for k, v in out.items()}
        grads[share] = model.model.layers[0].mlp.up_proj.weight.grad.clone()
    for k in outputs[False]:
        assert torch.allclose(outputs[False][k], outputs[True][k], atol=1e-4), k
    assert torch.allclose(grads[False], grads[True], atol=1e-5)


def test_shared_prompts_refused_where_a_method_reads_positions():
    from alignkit.engine.run import build

    with pytest.raises(ValueError, match="share_prompts is not supported"):
        build(load_recipe("recipes/cut_tiny.yaml", ["model.path=tiny:xs", "data.share_prompts=true"]), compute_signals=False)
    with pytest.raises(ValueError, match="choose one"):
        build(load_recipe("recipes/dpo_tiny.yaml", ["model.path=tiny:xs", "data.share_prompts=true", "data.packing=true"]),
              compute_signals=False)
