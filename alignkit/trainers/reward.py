"""Reward-model training: a Bradley–Terry model of preference pairs, as TRL's `RewardTrainer` and
OpenRLHF's reward model train it.

A sequence classifier with one output r(x, y), read at the last token of prompt + response (the
tokenisation every alignkit scorer uses), is trained so that the chosen response scores higher:

    L = −log σ(r(x, y_w) − r(x, y_l) − m)

with an optional margin m (each pair's own `margin` field, as TRL's `margin` column and Llama-2's rating
margins, else a fixed `margin`), and TRL's optional reward centring `center_coefficient`·E[(r_w + r_l)²],
which keeps the rewards' offset near 0 (it is otherwise unidentified). Metrics: accuracy (r_w > r_l),
margins, mean chosen/rejected reward.

The trained model is a plain `AutoModelForSequenceClassification` folder with the recipe saved beside it;
`alignkit.scoring.RewardModelScorer`, `alignkit bon --scorer reward-model` and `alignkit judge --judge
reward` read its template and lengths from that recipe and score exactly as it was trained.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from alignkit.data.records import PreferencePair
from alignkit.engine.method import CompletionMethod, MethodArgs


class Args(MethodArgs):
    """`method_args` for reward-model training (defaults: TRL's `RewardConfig`)."""

    margin: float = Field(0.0, description="margin m in −log σ(r_w − r_l − m) for pairs without their own `margin` "
                          "field (TRL: 0; a pair's `margin`, as TRL's margin column, always wins)")
    center_coefficient: float | None = Field(None, ge=0, description="TRL's center_rewards_coefficient: weight of "
                                             "E[(r_w + r_l)^2] (Eisenstein et al. 2023 use 0.01); None disables it")


def reward_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | float = 0.0,
                center_coefficient: float | None = None) -> torch.Tensor:
    """Per-pair Bradley–Terry losses [B] from rewards of chosen and rejected [B]."""
    losses = -F.logsigmoid(chosen - rejected - margin)
    if center_coefficient:
        losses = losses + center_coefficient * (chosen + rejected) ** 2
    return losses


class Method(CompletionMethod):
    """Reward-model training as an engine method."""

    record_type = PreferencePair
    model_kind = "sequence_classifier"

    def __init__(self, args: Any, tokenizer: Any, data: Any) -> None:
        super().__init__(args, tokenizer, data)
        if data.packing:
            raise ValueError("method reward reads each sequence's last token; data.packing is not supported")

    def build_example(self, record: PreferencePair) -> dict[str, Any]:
        """Token ids of the prompt and both completions (as every alignkit scorer tokenises them)."""
        prompt, chosen, rejected = self.tokens.encode(record.prompt, [record.chosen, record.rejected])
        margin = self.args.margin if record.margin is None else record.margin
        return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected, "margin": margin,
                "length": len(prompt) + max(len(chosen), len(rejected))}

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """All chosen rows, then all rejected rows (right-padded), and each pair's margin."""
        rows = [(e["prompt_ids"], e["chosen_ids"]) for e in examples] + [(e["prompt_ids"], e["rejected_ids"]) for e in examples]
        batch = self.batch(rows)
        batch["margin"] = torch.tensor([e["margin"] for e in examples], dtype=torch.float32)
        return batch

    def sequence_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rewards of chosen and rejected."""
        from alignkit.scoring.reward_model import sequence_rewards

        rewards = sequence_rewards(model, batch).float()
        b = rewards.shape[0] // 2
        return {"chosen": rewards[:b], "rejected": rewards[b:], "margin": batch["margin"]}

    def loss(self, out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean Bradley–Terry loss and per-pair metrics."""
        losses = reward_loss(out["chosen"], out["rejected"], out["margin"], self.args.center_coefficient)
        chosen, rejected = out["chosen"].detach(), out["rejected"].detach()
        return losses.mean(), {"loss": losses.detach(), "accuracy": (chosen > rejected).float(), "margins": chosen - rejected,
                               "rewards/chosen": chosen, "rewards/rejected": rejected}
