"""DPO (Rafailov et al. 2023) with sigmoid, IPO, hinge and robust/cDPO losses and an optional NLL term.

`dpo_loss` is a pure function of sequence log-probs; `Method` builds examples from preference
pairs, stacks chosen above rejected in one forward pass, and reports TRL's metric names.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from alignkit.data.records import PreferencePair
from alignkit.engine.method import CompletionMethod, ReferenceArgs

LossType = Literal["sigmoid", "ipo", "hinge", "robust"]


class Args(ReferenceArgs):
    """`method_args` for DPO (defaults: the DPO paper and TRL's `DPOConfig`)."""

    beta: float = Field(0.1, gt=0, description="β, the KL strength of the implicit reward β·log(π/π_ref) "
                        "(0.1 in the DPO paper and TRL)")
    loss_type: LossType = Field("sigmoid", description="sigmoid (DPO paper), ipo (Azar et al.; length-averaged log-probs "
                                "as in TRL), hinge (SLiC), robust (Chowdhury et al.'s unbiased noisy-label loss)")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="ε, the assumed rate of flipped labels: conservative "
                                   "DPO (cDPO) for sigmoid, the robust estimator for robust (0 in TRL)")
    rpo_alpha: float | None = Field(None, ge=0, description="weight of the per-token NLL on chosen (RPO, Pang et al. "
                                    "2024; 1.0 in the paper); None disables it (TRL's default)")


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: LossType = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example DPO losses [B] and the implicit rewards β·log(π/π_ref) of chosen and rejected.

    - sigmoid: −(1−ε)·log σ(β·h) − ε·log σ(−β·h), with h the log-ratio margin (ε = label_smoothing, cDPO)
    - robust: the unbiased noisy-label estimator of Chowdhury et al., ((1−ε)·ℓ(h) − ε·ℓ(−h)) / (1−2ε)
    - hinge: relu(1 − β·h)
    - ipo: (h − 1/(2β))²; pass length-averaged log-probs for IPO, as TRL and the IPO authors do
      (`Method` does this for `loss_type="ipo"`).
    """
    chosen_ratio = policy_chosen_logps - ref_chosen_logps
    rejected_ratio = policy_rejected_logps - ref_rejected_logps
    margin = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * margin) - label_smoothing * F.logsigmoid(-beta * margin)
    elif loss_type == "robust":
        losses = (-(1 - label_smoothing) * F.logsigmoid(beta * margin) + label_smoothing * F.logsigmoid(-beta * margin)) / (
            1 - 2 * label_smoothing
        )
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * margin)
    elif loss_type == "ipo":
        losses = (margin - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


class Method(CompletionMethod):
    """DPO as an engine method: examples, collation, sequence log-probs and the loss with metrics."""

    supports_shared_prompts = True
    record_type = PreferencePair

    def signals(self, recipe: Any) -> list[Any]:
        """Reference log-probs of chosen and rejected."""
        return [self.args.reference_signal(recipe, ("chosen_logps", "rejected_logps"))]

    def build_example(self, record: PreferencePair) -> dict[str, Any]:
        """Token ids of the prompt and of both completions (truncated to fit)."""
        prompt, chosen, rejected = self.tokens.encode(record.prompt, [record.chosen, record.rejected])
        return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected,
                "length": len(prompt) + max(len(chosen), len(rejected))}

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """One batch of 2B sequences: all chosen, then all rejected (padded or packed)."""
        rows = [(e["prompt_ids"], e["chosen_ids"]) for e in examples] + [(e["prompt_ids"], e["rejected_ids"]) for e in examples]
        return self.batch_with_reference(rows, examples)

    def sequence_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Summed completion log-probs of chosen and rejected, and the chosen token count."""
        seq, tokens = self.completion_logps(model, batch)
        n = seq.shape[0] // 2
        return {"chosen_logps": seq[:n], "rejected_logps": seq[n:], "chosen_tokens": tokens[:n], "rejected_tokens": tokens[n:]}

    def loss(self, out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean DPO loss (+ RPO NLL) and per-example metrics under TRL's names."""
        a = self.args
        logps = [out["chosen_logps"], out["rejected_logps"], ref["chosen_logps"], ref["rejected_logps"]]
        if a.loss_type == "ipo":  # IPO works on per-token average log-ratios
            lengths = [out["chosen_tokens"], out["rejected_tokens"]] * 2
            logps = [lp / n.clamp(min=1) for lp, n in zip(logps, lengths)]
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            *logps, beta=a.beta, loss_type=a.loss_type, label_smoothing=a.label_smoothing
        )
        metrics = {
            "rewards/chosen": chosen_rewards,
            "rewards/rejected": rejected_rewards,
            "rewards/margins": chosen_rewards - rejected_rewards,
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
            "logps/chosen": out["chosen_logps"].detach(),
            "logps/rejected": out["rejected_logps"].detach(),
        }
        if a.rpo_alpha is not None:
            nll = -(out["chosen_logps"] / out["chosen_tokens"].clamp(min=1))
            losses = losses + a.rpo_alpha * nll
            metrics["nll_loss"] = nll.detach()
        metrics["loss"] = losses.detach()  # per example: the engine logs the exact example-weighted mean
        return losses.mean(), metrics

