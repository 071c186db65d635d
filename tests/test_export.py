"""`alignkit export`: a LoRA run merged into a standalone folder that transformers and vLLM load, with a model card."""

import json

import pytest
import torch

from alignkit.cli import main
from alignkit.config import load_recipe
from alignkit.generation import HFGenerator, SamplingParams

PROMPTS = ["What is 3 plus 4?", "What is the capital of Dunmark?", "List 3 colors."]
GREEDY = SamplingParams(n=1, temperature=0.0, max_tokens=16)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A DPO run with a LoRA adapter on the gym base, trained hard enough to change its answers."""
    from alignkit.engine.run import train

    out = tmp_path_factory.mktemp("lora") / "run"
    recipe = load_recipe("recipes/dpo_tiny.yaml", [
        f"training.output_dir={out}", "model.lora={r: 8, alpha: 16, dropout: 0.0}", "training.learning_rate=2e-2",
        "training.warmup_steps=0", "training.max_steps=2", "training.save_steps=2", "training.logging_steps=1",
        "training.per_device_train_batch_size=8", "data.eval=data/samples/preference.jsonl", "data.max_length=128",
        "data.train={path: data/gym/train_preference.jsonl, max_records: 64}"])
    train(recipe)
    return out


def _greedy(generator):
    return [r.completions[0].text for r in generator.generate(PROMPTS, GREEDY)]


def test_lora_run_exports_merged_for_transformers_and_vllm(lora_run, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "export"
    assert main(["export", str(lora_run), "--out", str(out)]) == 2  # an adapter is not standalone: say how
    assert "is a LoRA adapter on data/gym/base-s; pass --merge-lora" in capsys.readouterr().err and not out.exists()
    assert main(["export", str(lora_run), "--out", str(out), "--merge-lora"]) == 0
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "alignkit_recipe.yaml", "run_summary.json"} <= files
    assert not {"adapter_config.json", "training_args.bin", "optimizer.pt"} & files

    exported = HFGenerator.from_pretrained(str(out))
    base = AutoModelForCausalLM.from_pretrained("data/gym/base-s")
    tokenizer = AutoTokenizer.from_pretrained(lora_run / "final")
    peft = HFGenerator(PeftModel.from_pretrained(base, str(lora_run / "final")), tokenizer)
    # the merged model computes what base + adapter computes, and the adapter did change the model
    ids = torch.tensor([tokenizer("What is 3 plus 4?")["input_ids"]])
    with torch.no_grad():
        merged_logits, peft_logits = exported.model(ids).logits, peft.model(ids).logits
        base_logits = AutoModelForCausalLM.from_pretrained("data/gym/base-s")(ids).logits
    assert torch.allclose(merged_logits, peft_logits, atol=1e-4)
    assert (merged_logits - base_logits).abs().max() > 1e-2
    texts = _greedy(exported)
    assert texts == _greedy(peft)

    from alignkit.generation.vllm_engine import VLLMGenerator

    engine = VLLMGenerator(str(out), enforce_eager=True)
    assert _greedy(engine) == texts

    card = (out / "README.md").read_text()
    summary = json.loads((lora_run / "run_summary.json").read_text())
    assert "LoRA adapter (r=8, alpha=16" in card and "## Recipe" in card and "method: dpo" in card
    assert "| train | `data/gym/train_preference.jsonl` | 64 | 476 |" in card
    assert f"| rewards/margins | {summary['before']['rewards/margins']:.4f} | {summary['after']['rewards/margins']:.4f} |" in card


def test_checkpoint_and_dtype(lora_run, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "bf16"
    assert main(["export", str(lora_run / "checkpoint-2"), "--out", str(out), "--merge-lora", "--dtype", "bfloat16"]) == 0
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert "(checkpoint at step 2)" in (out / "README.md").read_text()
    assert len(_greedy(HFGenerator.from_pretrained(str(out), dtype="bfloat16"))) == len(PROMPTS)
    # a full-weight model (here the gym's reward model, a sequence classifier) exports in its own class
    from transformers import AutoModelForSequenceClassification

    rm = tmp_path / "rm"
    assert main(["export", "data/gym/rm-s", "--out", str(rm), "--dtype", "bfloat16"]) == 0
    assert AutoModelForSequenceClassification.from_pretrained(rm).dtype == torch.bfloat16
