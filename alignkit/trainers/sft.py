"""Supervised fine-tuning: maximum likelihood on completion tokens (the gym's base policy, warm starts).

`sft_loss` is the per-example mean negative log-likelihood over completion tokens; the batch loss is
the mean over examples, so long completions do not dominate.
"""

from __future__ import annotations

from typing import Any

import torch
from alignkit.data.records import SFTExample
from alignkit.engine.method import CompletionMethod, MethodArgs


class Args(MethodArgs):
    """`method_args` for SFT (only the shared settings)."""


def sft_loss(token_logps_sum: torch.Tensor, token_counts: torch.Tensor) -> torch.Tensor:
    """Per-example mean NLL [B] from summed completion log-probs [B] and completion token counts [B]."""
    return -token_logps_sum / token_counts.clamp(min=1)


class Method(CompletionMethod):
    """SFT as an engine method."""

    supports_shared_prompts = True
    record_type = SFTExample

    def build_example(self, record: SFTExample) -> dict[str, Any]:
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

