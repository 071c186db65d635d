"""DPO (Rafailov et al. 2023) with TRL 1.16's menu of pairwise losses, their weighted sums (MPO), and an RPO term.

`dpo_loss` is a pure function of sequence log-probs; `Method` builds examples from preference
pairs, stacks chosen above rejected in one forward pass, and reports TRL's metric names.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from alignkit.engine.method import PairMethod, ReferenceArgs, token_mean_shares

LossType = Literal["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                   "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"]
LENGTH_NORMALISED = ("ipo", "sigmoid_norm")  # work on per-token average log-ratios


class Args(ReferenceArgs):
    """`method_args` for DPO (defaults: the DPO paper and TRL's `DPOConfig`; every loss is TRL 1.16's)."""

    beta: float = Field(0.1, gt=0, description="β, the KL strength of the implicit reward β·log(π/π_ref) "
                        "(0.1 in the DPO paper and TRL); τ for IPO")
    loss_type: LossType | list[LossType] = Field(
        "sigmoid", description="sigmoid (DPO paper), hinge (SLiC), ipo (Azar et al.; length-averaged log-ratios as in "
        "TRL), exo_pair (EXO), nca_pair (NCA), robust (Chowdhury et al.), bco_pair (BCO), sppo_hard (SPPO, hard "
        "labels), aot / aot_unpaired (AOT), apo_zero / apo_down (APO), discopop (DiscoPOP), sft (NLL of chosen), "
        "sigmoid_norm (sigmoid on length-averaged log-ratios); a list sums several, weighted by loss_weights (MPO)")
    loss_weights: list[float] | None = Field(None, description="one weight per loss_type entry (MPO: e.g. "
                                             "[sigmoid, bco_pair, sft] with [0.8, 0.2, 1.0]); None weighs each 1.0 (TRL)")
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="ε, the assumed rate of flipped labels: conservative "
                                   "DPO (cDPO) for sigmoid, the robust estimator for robust, EXO's target ε for "
                                   "exo_pair (must be > 0; 1e-3 in the EXO paper), smoothing for aot (0 in TRL)")
    discopop_tau: float = Field(0.05, gt=0, description="τ of DiscoPOP's log-ratio modulated loss (0.05, the paper and TRL)")
    rpo_alpha: float | None = Field(None, ge=0, description="weight of the per-token NLL on chosen (RPO, Pang et al. "
                                    "2024; 1.0 in the paper); None disables it (TRL 1.16 has it as loss_type sft)")

    @model_validator(mode="after")
    def _consistent(self) -> "Args":
        names = loss_names(self.loss_type)
        if self.loss_weights is not None and len(self.loss_weights) != len(names):
            raise ValueError(f"loss_weights has {len(self.loss_weights)} weights for {len(names)} loss types {names}")
        if "exo_pair" in names and self.label_smoothing == 0.0:
            raise ValueError("loss_type exo_pair needs label_smoothing > 0 (the EXO paper recommends 1e-3)")
        return self


def loss_names(loss_type: str | Sequence[str]) -> list[str]:
    """A loss_type setting as a list of names."""
    return [loss_type] if isinstance(loss_type, str) else list(loss_type)


def _smoothed_sigmoid(logits: torch.Tensor, eps: float) -> torch.Tensor:
    return -(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)


def pairwise_loss(
    name: str,
    chosen_ratio: torch.Tensor,
    rejected_ratio: torch.Tensor,
    policy_margin: torch.Tensor,
    reference_margin: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
    discopop_tau: float = 0.05,
) -> torch.Tensor:
    """One of TRL 1.16's pairwise losses [B] from the log-ratios c = log π/π_ref of chosen and r of rejected
    (h = c − r), and, for aot, the policy's and the reference's own chosen-minus-rejected margins."""
    c, r, eps = chosen_ratio, rejected_ratio, label_smoothing
    h = c - r
    if name in ("sigmoid", "sigmoid_norm"):
        return _smoothed_sigmoid(beta * h, eps)
    if name == "hinge":
        return torch.relu(1 - beta * h)
    if name == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    if name == "exo_pair":  # KL(softmax(βh over the pair) ‖ [1 − ε, ε])
        if not 0 < eps < 1:
            raise ValueError(f"loss_type exo_pair needs 0 < label_smoothing < 1 (1e-3 in the EXO paper), got {eps}")
        q_w, q_l = torch.sigmoid(beta * h), torch.sigmoid(-beta * h)
        return q_w * (F.logsigmoid(beta * h) - math.log1p(-eps)) + q_l * (F.logsigmoid(-beta * h) - math.log(eps))
    if name == "nca_pair":
        return -F.logsigmoid(beta * c) - 0.5 * F.logsigmoid(-beta * c) - 0.5 * F.logsigmoid(-beta * r)
    if name == "robust":
        return (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    if name == "bco_pair":
        return -F.logsigmoid(beta * c) - F.logsigmoid(-beta * r)
    if name == "sppo_hard":
        return (c - 0.5 / beta) ** 2 + (r + 0.5 / beta) ** 2
    if name == "aot":  # the sorted policy margins against the sorted reference margins
        return _smoothed_sigmoid(beta * (torch.sort(policy_margin).values - torch.sort(reference_margin).values), eps)
    if name == "aot_unpaired":
        return _smoothed_sigmoid(beta * (torch.sort(c).values - torch.sort(r).values), eps)
    if name == "apo_zero":
        return 1 - torch.sigmoid(beta * c) + torch.sigmoid(beta * r)
    if name == "apo_down":
        return torch.sigmoid(beta * c) + 1 - torch.sigmoid(beta * h)
    if name == "discopop":
        logits = beta * h
        mix = torch.sigmoid(logits / discopop_tau)
        return -F.logsigmoid(logits) * (1 - mix) + torch.exp(-logits) * mix
    raise ValueError(f"unknown DPO loss_type {name!r}")


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: LossType | Sequence[LossType] = "sigmoid",
    label_smoothing: float = 0.0,
    *,
    loss_weights: Sequence[float] | None = None,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    discopop_tau: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example DPO losses [B] and the implicit rewards β·log(π/π_ref) of chosen and rejected, as TRL 1.16.

    With h the log-ratio margin (c − r): sigmoid −(1−ε)·log σ(βh) − ε·log σ(−βh) (ε = label_smoothing, cDPO);
    hinge relu(1 − βh); ipo (h − 1/(2β))²; robust ((1−ε)·ℓ(h) − ε·ℓ(−h)) / (1−2ε); the others as
    `pairwise_loss`. A list of loss types sums them, each weighted by `loss_weights` (default 1), as TRL's MPO.

    ipo and sigmoid_norm use per-token average log-ratios: pass the completion token counts as
    `chosen_lengths` / `rejected_lengths` (or pass already averaged log-probs without them). sft is the NLL of
    chosen averaged over every chosen token of the batch (TRL) when `chosen_lengths` is given, its per-example
    values shares of that batch mean; without it, the NLL of the log-probs as passed. The rewards are always of
    the log-probs as passed (TRL: summed).
    """
    names = loss_names(loss_type)
    weights = list(loss_weights) if loss_weights is not None else [1.0] * len(names)
    if len(weights) != len(names):
        raise ValueError(f"{len(weights)} loss_weights for {len(names)} loss types {names}")
    chosen_ratio = policy_chosen_logps - ref_chosen_logps
    rejected_ratio = policy_rejected_logps - ref_rejected_logps
    losses = torch.zeros_like(chosen_ratio)
    for name, weight in zip(names, weights):
        c, r = chosen_ratio, rejected_ratio
        if name in LENGTH_NORMALISED and chosen_lengths is not None and rejected_lengths is not None:
            c, r = c / chosen_lengths.clamp(min=1), r / rejected_lengths.clamp(min=1)
        if name == "sft":  # without lengths: the NLL of the log-probs as passed
            part = -policy_chosen_logps if chosen_lengths is None else token_mean_shares(-policy_chosen_logps, chosen_lengths)
        else:
            part = pairwise_loss(name, c, r, policy_chosen_logps - policy_rejected_logps, ref_chosen_logps - ref_rejected_logps,
                                 beta, label_smoothing, discopop_tau)
        losses = losses + weight * part
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


class Method(PairMethod):
    """DPO as an engine method: the pair batches of `PairMethod`, the reference signal, and the loss with metrics."""

    def signals(self, recipe: Any) -> list[Any]:
        """Reference log-probs of chosen and rejected."""
        return [self.args.reference_signal(recipe, ("chosen_logps", "rejected_logps"))]

    def loss(self, out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean DPO loss (+ RPO NLL) and per-example metrics under TRL's names."""
        a = self.args
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            out["chosen_logps"], out["rejected_logps"], ref["chosen_logps"], ref["rejected_logps"], beta=a.beta,
            loss_type=a.loss_type, label_smoothing=a.label_smoothing, loss_weights=a.loss_weights,
            chosen_lengths=out["chosen_tokens"], rejected_lengths=out["rejected_tokens"], discopop_tau=a.discopop_tau,
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
