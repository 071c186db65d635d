"""A sequence-classification reward model (one output) as a scorer.

Prompt and completion are tokenised exactly as for training (`alignkit.data.tokenization`: the prompt
rendered by the template, the completion tokenised jointly with it, EOS appended, the prompt
left-truncated). A reward model trained by alignkit (`method: reward`) carries its recipe, and its
template and lengths are used, so it scores what it was trained on; for other reward models the
`template` and lengths given here apply.
"""

from __future__ import annotations

from typing import Any, Sequence

from alignkit.data.records import Prompt


class RewardModelScorer:
    """Score with a sequence-classification reward model (num_labels=1)."""

    def __init__(self, path: str, template: str = "chat", batch_size: int = 32, max_length: int = 1024,
                 max_prompt_length: int | None = None, dtype: str = "float32") -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        from alignkit.config import ModelSettings
        from alignkit.data.tokenization import PromptCompletionTokenizer
        from alignkit.modeling.loading import load_tokenizer, model_fingerprint, resolve_model_path, torch_dtype

        from alignkit.config import saved_recipe

        trained = (saved_recipe(resolve_model_path(path)) or {}).get("data")
        if trained:  # alignkit trained it: score with its own template and lengths
            template, max_length = trained["template"], trained["max_length"]
            max_prompt_length = trained["max_prompt_length"]
        settings = ModelSettings(path=path, dtype=dtype)
        self.tokenizer = load_tokenizer(settings)
        self.model = AutoModelForSequenceClassification.from_pretrained(resolve_model_path(path), dtype=torch_dtype(dtype)).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(f"{path} has {self.model.config.num_labels} labels; a reward model has exactly 1")
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        max_prompt_length = max_prompt_length or max_length // 2
        self.tokens = PromptCompletionTokenizer(self.tokenizer, template, max_length, max_prompt_length)
        self.template, self.batch_size = template, batch_size
        self.device = torch.device("cpu")
        self.identity = f"reward-model:{model_fingerprint(settings)}|{template}|{max_length}|{max_prompt_length}"

    def score(self, prompt: Prompt, completions: Sequence[str]) -> list[float]:
        """Reward of each completion of one prompt."""
        return self.score_batch([prompt] * len(completions), list(completions))

    def score_batch(self, prompts: Sequence[Prompt], completions: Sequence[str], progress: bool = False,
                    desc: str = "reward model") -> list[float]:
        """Reward of each (prompt, completion) pair, in batches."""
        import torch
        from tqdm.auto import tqdm

        from alignkit.modeling.batching import pad_rows

        rows = [self.tokens.encode(p, [c]) for p, c in zip(prompts, completions)]
        out: list[float] = []
        for i in tqdm(range(0, len(rows), self.batch_size), desc=desc, unit="batch", disable=not progress):
            batch = pad_rows(rows[i : i + self.batch_size], self.tokenizer.pad_token_id)
            with torch.no_grad():
                out += sequence_rewards(self.model, batch).float().tolist()
        return out


def sequence_rewards(model: Any, batch: dict[str, Any]) -> Any:
    """One reward per sequence of a right-padded batch [B]: the classifier's output at each sequence's last
    non-pad token (transformers' rule, which TRL's reward trainer shares; with pad == EOS that is the
    token before the EOS, the same in training and scoring)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
