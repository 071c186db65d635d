"""Supervised fine-tuning: maximum likelihood on completion tokens (the gym's base policy, warm starts), or on
the whole conversation.

`sft_loss` is the per-example mean negative log-likelihood over the trained tokens; the batch loss is the mean
over examples, so long completions do not dominate. `loss_on: completion` (default) trains the last assistant
turn given the rendered prompt; `loss_on: conversation` trains every token of the conversation rendered by the
template (every turn, user turns included), as TRL's `SFTTrainer` does on a plain-text dataset and as the
released ADPA recipes' SFT stages (`dataset_text_field: text`) train.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from alignkit.data.records import SFTExample
from alignkit.engine.method import CompletionMethod, MethodArgs


class Args(MethodArgs):
    """`method_args` for SFT."""

    loss_on: Literal["completion", "conversation"] = Field("completion", description="completion: the last assistant "
                                                           "turn given the prompt; conversation: every token of the "
                                                           "rendered conversation (TRL SFTTrainer on text; the released "
                                                           "ADPA SFT stages)")


def sft_loss(token_logps_sum: torch.Tensor, token_counts: torch.Tensor) -> torch.Tensor:
    """Per-example mean NLL [B] from summed completion log-probs [B] and completion token counts [B]."""
    return -token_logps_sum / token_counts.clamp(min=1)


class Method(CompletionMethod):
    """SFT as an engine method."""

    supports_shared_prompts = True
    record_type = SFTExample

    def build_example(self, record: SFTExample) -> dict[str, Any]:
        if self.args.loss_on == "conversation":  # no prompt: every token after the first is trained
            ids = self.tokens.encode_conversation(record.prompt, record.completion)
            return {"prompt_ids": [], "completion_ids": ids, "length": len(ids)}
        prompt, completion = self.tokens.encode(record.prompt, [record.completion])
        return {"prompt_ids": prompt, "completion_ids": completion, "length": len(prompt) + len(completion)}

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.batch([(e["prompt_ids"], e["completion_ids"]) for e in examples])

    def sequence_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logps, tokens = self.completion_logps(model, batch)
        return {"logps": logps, "tokens": tokens}

    def loss(self, out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses = sft_loss(out["logps"], out["tokens"])
        return losses.mean(), {"loss": losses.detach(), "tokens": out["tokens"].detach()}

