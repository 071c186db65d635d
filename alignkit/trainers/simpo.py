"""SimPO (Meng, Xia and Chen 2024): a reference-free, length-normalised DPO with a target reward margin γ.

    loss = −(1−ε)·log σ(β·(ā_w − ā_l) − γ) − ε·log σ(−β·(ā_w − ā_l) + γ)     (+ sft_weight · NLL of chosen)

with ā the per-token average log-prob of a completion under the policy. The implicit reward is β·ā (no reference
model: SimPO declares no signal, so nothing frozen is ever loaded or computed). Defaults are the official code's
(github princeton-nlp/SimPO, `SimPOConfig`: β = 2.0, γ/β = 0.25, so γ = 0.5, no SFT term); TRL runs the same loss as
`CPOTrainer(loss_type="simpo")`, whose defaults differ (β = 0.1, and `cpo_alpha` = 1.0, a behaviour-cloning NLL
that makes it CPO-SimPO: set `sft_weight: 1.0` for that).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from alignkit.engine.method import MethodArgs, PairMethod, token_mean_shares


class Args(MethodArgs):
    """`method_args` for SimPO (defaults: the official SimPO code)."""

    beta: float = Field(2.0, gt=0, description="β, the scale of the length-normalised reward β·ā (2.0 in the official "
                        "code's SimPOConfig; the paper tunes 2.0-10; TRL's CPOConfig defaults to 0.1)")
    gamma: float = Field(0.5, description="γ, the target reward margin (the official code's gamma_beta_ratio 0.25 × β 2.0; "
                         "TRL's simpo_gamma 0.5)")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="ε, the assumed rate of flipped labels (0 in the "
                                   "official code and TRL)")
    sft_weight: float = Field(0.0, ge=0.0, description="weight of the NLL of chosen completions, averaged over the batch's "
                              "chosen tokens (0 in the official code; TRL's cpo_alpha, 1.0 there)")


def simpo_loss(
    chosen_avg_logps: torch.Tensor,
    rejected_avg_logps: torch.Tensor,
    beta: float = 2.0,
    gamma: float = 0.5,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example SimPO losses [B] and the rewards β·ā of chosen and rejected, from per-token average log-probs."""
    logits = beta * (chosen_avg_logps - rejected_avg_logps) - gamma
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return losses, beta * chosen_avg_logps.detach(), beta * rejected_avg_logps.detach()


class Method(PairMethod):
    """SimPO as an engine method: the pair batches of `PairMethod`, no signals, and the loss with TRL's metric names."""

    def loss(self, out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean SimPO loss (+ the weighted NLL of chosen) and per-example metrics under TRL's (CPOTrainer) names."""
        a = self.args
        chosen = out["chosen_logps"] / out["chosen_tokens"].clamp(min=1)
        rejected = out["rejected_logps"] / out["rejected_tokens"].clamp(min=1)
        losses, chosen_rewards, rejected_rewards = simpo_loss(chosen, rejected, a.beta, a.gamma, a.label_smoothing)
        nll = token_mean_shares(-out["chosen_logps"], out["chosen_tokens"])
        if a.sft_weight:
            losses = losses + a.sft_weight * nll
        metrics = {
            "rewards/chosen": chosen_rewards,
            "rewards/rejected": rejected_rewards,
            "rewards/margins": chosen_rewards - rejected_rewards,
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
            "logps/chosen": chosen.detach(),  # per-token averages, as TRL's CPOTrainer logs them for SimPO
            "logps/rejected": rejected.detach(),
            "nll_loss": nll.detach(),
            "loss": losses.detach(),
        }
        return losses.mean(), metrics
