"""A sequence-classification reward model as a scorer, including remote-code ones with their own output.

Prompt and completion are tokenised exactly as for training (`alignkit.data.tokenization`: the prompt
rendered by the template, the completion tokenised jointly with it, EOS appended, the prompt
left-truncated). A reward model trained by alignkit (`method: reward`) carries its recipe, and its
template and lengths are used, so it scores what it was trained on; for other reward models the
`template` and lengths given here apply.

The model is a frozen model like any other (`alignkit.modeling.loading.load_frozen`): it runs on the
process's accelerator (or `device`) in `dtype` (`auto`: bf16 on a GPU, fp32 on the CPU), and completions are
scored in batches of similar length bounded by `max_batch_tokens` padded tokens (and `batch_size` rows).

Which number is the reward (`output`): `logits` (default; a one-label classifier, transformers' and TRL's
reward models), `logits:K` (column K of a multi-label head), or the name of an attribute of the model's own
output object, optionally with a column, e.g. `score` for ArmoRM (`RLHFlow/ArmoRM-Llama3-8B-v0.1`, remote
code: `trust_remote_code=True`), whose forward returns `.score` (the gated preference score) beside
`.rewards` (its 19 objectives, `rewards:K`).
"""

from __future__ import annotations

from typing import Any, Sequence

from alignkit.data.records import Prompt

OPTIONS = ("batch_size", "max_length", "max_prompt_length", "dtype", "trust_remote_code", "output", "device",
           "max_batch_tokens", "revision")


def check_options(options: dict[str, Any]) -> None:
    """Raise ValueError naming any option a reward model does not take (before it loads)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown reward model option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    if "output" in options:
        parse_output(options["output"])


class RewardModelScorer:
    """Score with a sequence-classification reward model (see the module docstring for `output`)."""

    def __init__(self, path: str, template: str = "chat", batch_size: int = 32, max_length: int = 1024,
                 max_prompt_length: int | None = None, dtype: str = "auto", trust_remote_code: bool = False,
                 output: str = "logits", device: str | None = None, max_batch_tokens: int = 16384,
                 revision: str | None = None) -> None:
        from alignkit.data.tokenization import PromptCompletionTokenizer
        from alignkit.modeling.loading import frozen_placement, load_frozen, load_tokenizer

        parse_output(output)  # a malformed selector fails before the model loads
        settings, template, max_length, max_prompt_length = _scoring_setup(path, template, max_length, max_prompt_length, dtype,
                                                                           trust_remote_code, device, revision)
        self.tokenizer = load_tokenizer(settings)
        self.model = load_frozen(settings, kind="sequence_classifier", labels=None)
        labels = getattr(self.model.config, "num_labels", 1)
        if output == "logits" and labels != 1:
            raise ValueError(f"{path} has {labels} labels; `output: logits` reads a one-label reward model. Pick a column "
                             f"(`output: logits:K`) or the model's own reward attribute (e.g. `output: score` for ArmoRM)")
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokens = PromptCompletionTokenizer(self.tokenizer, template, max_length, max_prompt_length)
        self.template, self.batch_size, self.max_batch_tokens, self.output = template, batch_size, max_batch_tokens, output
        self.device, self.dtype = frozen_placement(settings)
        self.identity = _identity(settings, template, max_length, max_prompt_length, output)

    def score(self, prompt: Prompt, completions: Sequence[str]) -> list[float]:
        """Reward of each completion of one prompt."""
        return self.score_batch([prompt] * len(completions), list(completions))

    def score_batch(self, prompts: Sequence[Prompt], completions: Sequence[str], progress: bool = False,
                    desc: str = "reward model") -> list[float]:
        """Reward of each (prompt, completion) pair, in batches of similar length (at most `max_batch_tokens`
        padded tokens and `batch_size` rows each), in input order."""
        import torch
        from tqdm.auto import tqdm

        from alignkit.modeling.batching import pad_rows, token_batches

        rows = [self.tokens.encode(p, [c]) for p, c in zip(prompts, completions)]
        out: list[float] = [0.0] * len(rows)
        groups = token_batches([len(p) + len(c) for p, c in rows], self.max_batch_tokens, self.batch_size)
        with tqdm(total=len(rows), desc=desc, unit="response", disable=not progress) as bar:
            for group in groups:
                batch = {k: v.to(self.device) for k, v in pad_rows([rows[i] for i in group], self.tokenizer.pad_token_id).items()}
                with torch.no_grad():
                    values = sequence_rewards(self.model, batch, self.output).float().cpu().tolist()
                for i, value in zip(group, values):
                    out[i] = value
                bar.update(len(group))
        return out


def _scoring_setup(path: str, template: str, max_length: int, max_prompt_length: int | None, dtype: str,
                   trust_remote_code: bool, device: str | None, revision: str | None) -> tuple[Any, str, int, int]:
    """The load settings, template and lengths a reward model scores with: those it was trained with when alignkit
    trained it (its saved recipe), the given ones otherwise."""
    from alignkit.config import ModelSettings, saved_recipe
    from alignkit.modeling.loading import resolve_model_path

    trained = (saved_recipe(resolve_model_path(path)) or {}).get("data")
    if trained:  # alignkit trained it: score with its own template and lengths
        template, max_length = trained["template"], trained["max_length"]
        max_prompt_length = trained["max_prompt_length"]
    settings = ModelSettings(path=path, dtype=dtype, trust_remote_code=trust_remote_code, device=device, revision=revision)
    return settings, template, max_length, max_prompt_length or max_length // 2


def _identity(settings: Any, template: str, max_length: int, max_prompt_length: int, output: str) -> str:
    from alignkit.modeling.loading import model_fingerprint, placed_settings

    selector = "" if output == "logits" else f"|{output}"
    return f"reward-model:{model_fingerprint(placed_settings(settings))}|{template}|{max_length}|{max_prompt_length}{selector}"


def reward_model_identity(path: str, template: str = "chat", batch_size: int = 32, max_length: int = 1024,
                          max_prompt_length: int | None = None, dtype: str = "auto", trust_remote_code: bool = False,
                          output: str = "logits", device: str | None = None, max_batch_tokens: int = 16384,
                          revision: str | None = None) -> str:
    """`RewardModelScorer(...).identity` without loading the model (its weights are hashed, not loaded): what a
    cache of its scores is keyed by, so a cache hit needs no model."""
    parse_output(output)
    settings, template, max_length, max_prompt_length = _scoring_setup(path, template, max_length, max_prompt_length, dtype,
                                                                       trust_remote_code, device, revision)
    return _identity(settings, template, max_length, max_prompt_length, output)


def parse_output(selector: str) -> tuple[str, int | None]:
    """(attribute, column) of an output selector: `logits`, `logits:2`, `score`, `rewards:0`."""
    name, sep, column = selector.partition(":")
    if not name.isidentifier() or (sep and not column.isdigit()):
        raise ValueError(f"reward model output {selector!r}: expected an output attribute with an optional column, "
                         "e.g. logits, logits:0, score, rewards:3")
    return name, int(column) if sep else None


def sequence_rewards(model: Any, batch: dict[str, Any], output: str = "logits") -> Any:
    """One reward per sequence of a right-padded batch [B]: the classifier's output at each sequence's last
    non-pad token (transformers' rule, which TRL's reward trainer shares; with pad == EOS that is the
    token before the EOS, the same in training and scoring). `output` selects it from the model's output
    (see the module docstring): `logits` is column 0 of the logits."""
    name, column = parse_output(output)
    result = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    value = getattr(result, name, None)
    if value is None:
        have = ", ".join(k for k in getattr(result, "keys", lambda: [])()) or type(result).__name__
        raise ValueError(f"the reward model's output has no {name!r} (it has: {have}); set the reward model's output "
                         "selector (e.g. `output: score`)")
    if value.dim() == 2:
        return value[:, column or 0]
    if value.dim() == 1 and column is None:
        return value
    raise ValueError(f"reward model output {output!r}: expected one value per sequence or a [batch, k] tensor, "
                     f"got shape {tuple(value.shape)}")
