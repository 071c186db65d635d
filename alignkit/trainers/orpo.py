"""ORPO (Hong, Lee and Thorne 2024): supervised fine-tuning on chosen plus an odds-ratio penalty on rejected, with no
reference model.

    loss = NLL(chosen) − β·log σ(log odds(y_w) − log odds(y_l)),    log odds(y) = ā(y) − log(1 − exp ā(y))

with ā the per-token average log-prob of a completion under the policy (Eqs. 4-7 of the paper). As in the official
code (github xfactlab/orpo) and TRL's `ORPOTrainer`, the NLL is the token-weighted mean over the batch's chosen
sequences *including their prompt tokens* (`nll_on_prompt: false` scores the completion only, the official code's
later `disable_prompt_loss`). β is the paper's λ: 0.1 in the paper's runs and TRL's `ORPOConfig`. ORPO declares no
signal, so nothing frozen is ever loaded or computed.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from alignkit.engine.method import MethodArgs, PairMethod, token_mean_shares
from alignkit.modeling.logprobs import batch_token_logprobs, per_sequence_sum


class Args(MethodArgs):
    """`method_args` for ORPO (defaults: the ORPO paper, its official code and TRL's `ORPOConfig`)."""

    beta: float = Field(0.1, gt=0, description="λ, the weight of the odds-ratio term (0.1 in the paper and TRL)")
    nll_on_prompt: bool = Field(True, description="the NLL of chosen also scores its prompt tokens, as the official code "
                                "and TRL do; false scores the completion only")


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x < 0, accurate on both sides of −log 2 (Mächler's rule)."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(
    chosen_avg_logps: torch.Tensor,
    rejected_avg_logps: torch.Tensor,
    chosen_nll: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example ORPO losses [B] = chosen_nll − β·log σ(log odds ratio), the rewards β·ā of chosen and rejected,
    and per example log σ(log odds ratio) and the log odds ratio itself (TRL's log_odds_ratio, log_odds_chosen)."""
    log_odds = (chosen_avg_logps - rejected_avg_logps) - (log1mexp(chosen_avg_logps) - log1mexp(rejected_avg_logps))
    ratio = F.logsigmoid(log_odds)
    losses = chosen_nll - beta * ratio
    return losses, beta * chosen_avg_logps.detach(), beta * rejected_avg_logps.detach(), ratio.detach(), log_odds.detach()


class Method(PairMethod):
    """ORPO as an engine method: pair batches whose chosen rows may score their prompt too, no signals, and the loss."""

    supports_shared_prompts = False  # with nll_on_prompt a chosen row scores its prompt, so prompts cannot be shared

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """All chosen rows, then all rejected; `completion_mask` marks the completion tokens when a chosen row scores
        its prompt too (the two layouts are the same, as rows keep their lengths)."""
        rows = [(e["prompt_ids"], e["chosen_ids"]) for e in examples] + [(e["prompt_ids"], e["rejected_ids"]) for e in examples]
        batch = self.batch(rows)
        if self.args.nll_on_prompt:
            full = self.batch([([], [*p, *c]) for p, c in rows[: len(examples)]] + rows[len(examples):])
            full["completion_mask"] = batch["loss_mask"]
            return full
        return batch

    def sequence_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Completion log-prob sums and token counts of chosen and rejected, and the summed log-probs and token count
        of what the NLL scores (chosen rows with or without their prompt)."""
        logps, mask = batch_token_logprobs(model, batch, self.args.logprob_chunk_size)
        completion = batch.get("completion_mask", batch["loss_mask"])[:, 1:].bool() & mask
        sums = per_sequence_sum(logps.masked_fill(~completion, 0.0), mask, batch)
        tokens = per_sequence_sum(completion.to(logps.dtype), mask, batch)
        scored = per_sequence_sum(logps, mask, batch)
        scored_tokens = per_sequence_sum(mask.to(logps.dtype), mask, batch)
        n = sums.shape[0] // 2
        return {"chosen_logps": sums[:n], "rejected_logps": sums[n:], "chosen_tokens": tokens[:n], "rejected_tokens": tokens[n:],
                "nll_logps": scored[:n], "nll_tokens": scored_tokens[:n]}

    def loss(self, out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean ORPO loss and per-example metrics under TRL's (ORPOTrainer) names."""
        chosen = out["chosen_logps"] / out["chosen_tokens"].clamp(min=1)
        rejected = out["rejected_logps"] / out["rejected_tokens"].clamp(min=1)
        nll = token_mean_shares(-out["nll_logps"], out["nll_tokens"])
        losses, chosen_rewards, rejected_rewards, ratio, log_odds = orpo_loss(chosen, rejected, nll, self.args.beta)
        metrics = {
            "rewards/chosen": chosen_rewards,
            "rewards/rejected": rejected_rewards,
            "rewards/margins": chosen_rewards - rejected_rewards,
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
            "logps/chosen": chosen.detach(),  # per-token averages, as TRL's ORPOTrainer logs them
            "logps/rejected": rejected.detach(),
            "nll_loss": nll.detach(),
            "log_odds_ratio": ratio,
            "log_odds_chosen": log_odds,
            "loss": losses.detach(),
        }
        return losses.mean(), metrics
