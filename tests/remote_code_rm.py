"""A tiny reward model of the real remote-code kind (as ArmoRM is), built in a folder at test time.

Its folder holds its own modeling code (`config.json` maps `AutoConfig` and `AutoModelForSequenceClassification`
to `modeling_tiny_armo.py`), so transformers loads it only with `trust_remote_code=True`; its forward returns
its own output class with `.score` (one gated score per sequence, [B, 1], of the mean token embedding) and `.rewards` (3 objectives, [B, 3])
and no `.logits`; its config says 3 labels. Read as a one-label classifier's `.logits[:, 0]`, it cannot score.
`expected_scores` computes what `.score` must be, by hand, for the tests to compare with.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

MODELING = '''
from dataclasses import dataclass
from typing import Optional

import torch
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput


class TinyArmoConfig(PretrainedConfig):
    model_type = "tiny_armo"

    def __init__(self, vocab_size=512, hidden_size=16, num_objectives=3, **kwargs):
        self.vocab_size, self.hidden_size, self.num_objectives = vocab_size, hidden_size, num_objectives
        kwargs.setdefault("num_labels", num_objectives)
        super().__init__(**kwargs)


@dataclass
class TinyArmoOutput(ModelOutput):
    rewards: Optional[torch.FloatTensor] = None
    score: Optional[torch.FloatTensor] = None


class TinyArmoForRewardModel(PreTrainedModel):
    config_class = TinyArmoConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.regression = torch.nn.Linear(config.hidden_size, config.num_objectives)
        self.gate = torch.nn.Linear(config.hidden_size, config.num_objectives)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            module.weight.data.normal_(0.0, 0.5)
            if getattr(module, "bias", None) is not None:
                module.bias.data.zero_()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        mask = attention_mask.unsqueeze(-1).to(self.embed.weight.dtype)
        h = (self.embed(input_ids) * mask).sum(1) / mask.sum(1)   # mean over the sequence (padding excluded)
        rewards = self.regression(h)
        weights = torch.softmax(self.gate(h), dim=-1)
        return TinyArmoOutput(rewards=rewards, score=(rewards * weights).sum(-1, keepdim=True))
'''


def build_remote_code_rm(folder: Path, tokenizer_from: str | Path = "data/gym/rm-s", seed: int = 0) -> Path:
    """Write the tiny remote-code reward model (weights, config with `auto_map`, its code, the gym tokenizer)."""
    import torch
    from transformers import AutoTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    code = folder / "modeling_tiny_armo.py"
    code.write_text(MODELING)
    spec = importlib.util.spec_from_file_location(f"modeling_tiny_armo_{abs(hash(str(folder)))}", code)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    torch.manual_seed(seed)
    model = module.TinyArmoForRewardModel(module.TinyArmoConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    import json

    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "modeling_tiny_armo.TinyArmoConfig",
                          "AutoModelForSequenceClassification": "modeling_tiny_armo.TinyArmoForRewardModel"}
    config["architectures"] = ["TinyArmoForRewardModel"]
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    template = Path(tokenizer_from) / "chat_template.jinja"
    if template.is_file() and not (folder / "chat_template.jinja").is_file():
        shutil.copy(template, folder / "chat_template.jinja")
    return folder


def expected_scores(folder: Path, prompts: list, completions: list[str], template: str = "chat") -> list[float]:
    """`.score` of each (prompt, completion), computed one sequence at a time without alignkit's scorer."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from alignkit.data.tokenization import PromptCompletionTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    tokens = PromptCompletionTokenizer(tokenizer, template, 1024, 512)
    out = []
    for prompt, completion in zip(prompts, completions):
        p, c = tokens.encode(prompt, [completion])
        ids = torch.tensor([list(p) + list(c)])
        with torch.no_grad():
            out.append(float(model(input_ids=ids, attention_mask=torch.ones_like(ids)).score[0, 0]))
    return out
