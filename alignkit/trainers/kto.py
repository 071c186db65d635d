"""KTO (Ethayarajh et al. 2024): alignment from unpaired thumbs-up / thumbs-down feedback, anchored at a KL
reference point.

    r(x, y) = log π(y|x) − log π_ref(y|x)        z = max(0, mean over mismatched pairs (x, y') of r(x, y'))
    desirable y:    λ_D · (1 − σ(β·(r(x, y) − z)))        undesirable y:    λ_U · (1 − σ(β·(z − r(x, y))))

z, the KL reference point, is estimated as TRL's `KTOTrainer` does: each example is paired with another example's
completion (its own prompt, a mismatched answer), the mean log-ratio of those pairs is taken without gradient,
averaged over processes and clipped at 0. The mismatched pairs are fixed when the examples are built: within every
`per_device_train_batch_size` consecutive examples, completions are rotated by one (TRL's rule), or by the smallest
shift that pairs no example with a completion of its own prompt (TRL pairs the two halves of a split preference pair
with each other, a matched pair). Fixed pairs let `prepare` compute and cache the reference log-probs of the KL pairs
with the others (`SequenceLogps` keys `logps` and `kl_logps`). TRL also fixes its batches (a sequential sampler over
the data as given); alignkit keeps the engine's shuffled batches unless `training.train_sampling_strategy: sequential`
is set, in which case every batch is one group and its KL pairs lie inside it, exactly as in TRL.

Defaults: β = 0.1 and λ_D = λ_U = 1 (paper and TRL). `loss_type: apo_zero_unpaired` is APO-zero's unpaired form
(D'Oosterlinck et al. 2024; TRL's `KTOConfig`): 1 − σ(β·r) for desirable, σ(β·r) for undesirable, with no KL term.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Sequence

import torch
from pydantic import Field

from alignkit.data.records import UnpairedPreference
from alignkit.engine.method import CompletionMethod, ReferenceArgs

log = logging.getLogger("alignkit")


class Args(ReferenceArgs):
    """`method_args` for KTO (defaults: the KTO paper and TRL's `KTOConfig`)."""

    beta: float = Field(0.1, gt=0, description="β, the scale of the implied reward β·log(π/π_ref) (0.1 in the paper and TRL)")
    desirable_weight: float = Field(1.0, gt=0, description="λ_D, the weight of desirable examples' losses (1.0 in TRL; "
                                    "the paper keeps λ_D·n_D / (λ_U·n_U) in [1, 4/3], and a warning says when it is not)")
    undesirable_weight: float = Field(1.0, gt=0, description="λ_U, the weight of undesirable examples' losses (1.0 in TRL)")
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field("kto", description="kto (the paper's loss with the KL reference "
                                                           "point), or apo_zero_unpaired (APO-zero's unpaired form, no KL)")


def kto_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    kl: torch.Tensor | float,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    loss_type: str = "kto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """KTO losses [n_desirable + n_undesirable] (desirable first, each weighted), and the rewards β·log(π/π_ref)
    of the desirable (chosen) and undesirable (rejected) examples. `kl` is the reference point z (ignored by
    apo_zero_unpaired)."""
    chosen_ratio = policy_chosen_logps - reference_chosen_logps
    rejected_ratio = policy_rejected_logps - reference_rejected_logps
    if loss_type == "kto":
        chosen_losses = 1 - torch.sigmoid(beta * (chosen_ratio - kl))
        rejected_losses = 1 - torch.sigmoid(beta * (kl - rejected_ratio))
    elif loss_type == "apo_zero_unpaired":
        chosen_losses = 1 - torch.sigmoid(beta * chosen_ratio)
        rejected_losses = torch.sigmoid(beta * rejected_ratio)
    else:
        raise ValueError(f"unknown KTO loss_type {loss_type!r}")
    losses = torch.cat([desirable_weight * chosen_losses, undesirable_weight * rejected_losses])
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def mismatch_shift(prompts: Sequence[Any]) -> int:
    """The shift k (1 ≤ k < n) by which a group's completions rotate, example i taking example i − k's: 1 (TRL's) when
    that gives every example another prompt's completion, else the smallest k that matches the fewest (0 for n = 1)."""
    n = len(prompts)
    matched = {k: sum(prompts[i] == prompts[(i - k) % n] for i in range(n)) for k in range(1, n)}
    return min(matched, key=lambda k: (matched[k], k)) if matched else 0


def kl_reference_point(policy_kl_logps: torch.Tensor, reference_kl_logps: torch.Tensor) -> torch.Tensor:
    """z: the mean log-ratio of the batch's mismatched pairs, without gradient, averaged over processes, at least 0."""
    kl = (policy_kl_logps - reference_kl_logps).mean().detach()
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(kl)
        kl = kl / torch.distributed.get_world_size()
    return kl.clamp(min=0)


class Method(CompletionMethod):
    """KTO as an engine method: unpaired examples with their mismatched KL pairs, reference log-probs of both, and the
    loss with TRL's metric names."""

    record_type = UnpairedPreference

    @property
    def uses_kl(self) -> bool:
        """Whether the loss has the KL reference point (so examples carry mismatched pairs)."""
        return self.args.loss_type == "kto"

    def signals(self, recipe: Any) -> list[Any]:
        """Reference log-probs of each completion, and of each mismatched KL pair."""
        return [self.args.reference_signal(recipe, ("logps", "kl_logps") if self.uses_kl else ("logps",))]

    def select_records(self, records: list[UnpairedPreference]) -> list[UnpairedPreference]:
        """All records; a warning when the weights do not balance desirable and undesirable ones (paper, Eq. 8)."""
        desirable = sum(r.label for r in records)
        undesirable = len(records) - desirable
        if not desirable or not undesirable:
            log.warning("KTO: the training data has %d desirable and %d undesirable examples; it learns from both kinds",
                        desirable, undesirable)
        else:
            a = self.args
            ratio = a.desirable_weight * desirable / (a.undesirable_weight * undesirable)
            if not 1.0 <= ratio <= 4 / 3:
                low = a.undesirable_weight * undesirable / desirable
                log.warning("KTO: %d desirable vs %d undesirable examples give desirable_weight·n_D / (undesirable_weight·n_U) "
                            "= %.2f; the paper keeps it in [1, 4/3]: e.g. desirable_weight in [%.2f, %.2f]",
                            desirable, undesirable, ratio, low, low * 4 / 3)
        return records

    def build_example(self, record: UnpairedPreference) -> dict[str, Any]:
        """Token ids of the prompt and the completion (truncated to fit), and the label."""
        prompt, completion = self.tokens.encode(record.prompt, [record.completion])
        return {"prompt_ids": prompt, "completion_ids": completion, "label": record.label, "length": len(prompt) + len(completion)}

    def link_examples(self, examples: list[dict[str, Any]], recipe: Any) -> None:
        """Give every example a mismatched completion (`kl_completion_ids`) from its group of
        `per_device_train_batch_size` consecutive examples (see the module docstring)."""
        if not self.uses_kl:
            return
        size = recipe.training.per_device_train_batch_size
        if size < 2:
            raise ValueError("KTO estimates its KL reference point from mismatched pairs within a batch: "
                             "training.per_device_train_batch_size must be at least 2")
        matched = 0
        for start in range(0, len(examples), size):
            group = examples[start : start + size]
            shift = mismatch_shift([e["prompt_ids"] for e in group])
            for i, e in enumerate(group):
                partner = group[(i - shift) % len(group)]
                matched += partner["prompt_ids"] == e["prompt_ids"]
                e["kl_completion_ids"] = partner["completion_ids"][: self.tokens.max_length - len(e["prompt_ids"])]
        if matched:
            log.warning("KTO: %d of %d KL pairs share their prompt (groups of %d consecutive examples with one prompt); "
                        "shuffle the data so neighbouring examples have different prompts", matched, len(examples), size)

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """The examples' sequences, their labels and reference values, and (prefixed `kl_`) their mismatched pairs."""
        batch = self.batch_with_reference([(e["prompt_ids"], e["completion_ids"]) for e in examples], examples)
        batch["label"] = torch.tensor([bool(e["label"]) for e in examples])
        if self.uses_kl:
            kl = self.batch([(e["prompt_ids"], e["kl_completion_ids"]) for e in examples])
            batch.update({f"kl_{k}": v for k, v in kl.items()})
        return batch

    def sequence_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Summed completion log-probs and token counts, the labels, and the KL pairs' log-probs (without gradient,
        as TRL: the reference point is a baseline, not a target)."""
        logps, tokens = self.completion_logps(model, batch)
        out = {"logps": logps, "tokens": tokens, "label": batch["label"]}
        if self.uses_kl:
            with torch.no_grad():
                out["kl_logps"] = self.completion_logps(model, {k[len("kl_"):]: v for k, v in batch.items() if k.startswith("kl_")})[0]
        return out

    def loss(self, out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean KTO loss and metrics under TRL's names (per example, NaN where they do not apply; `kl` and
        `rewards/margins` once per batch)."""
        a = self.args
        label = out["label"].bool()
        logps, ref_logps = out["logps"], ref["logps"]
        kl = kl_reference_point(out["kl_logps"], ref["kl_logps"]) if self.uses_kl else logps.new_zeros(())
        losses, chosen_rewards, rejected_rewards = kto_loss(logps[label], logps[~label], ref_logps[label], ref_logps[~label], kl,
                                                            a.beta, a.desirable_weight, a.undesirable_weight, a.loss_type)
        n = int(label.sum())
        per_example = torch.empty_like(logps)
        per_example[label], per_example[~label] = losses[:n], losses[n:]
        nan = torch.full_like(logps, float("nan"))
        metrics = {
            "rewards/chosen": nan.masked_scatter(label, chosen_rewards),
            "rewards/rejected": nan.masked_scatter(~label, rejected_rewards),
            "logps/chosen": torch.where(label, logps.detach(), nan),
            "logps/rejected": torch.where(~label, logps.detach(), nan),
            "rewards/margins": (chosen_rewards.mean() - rejected_rewards.mean()).reshape(1),  # NaN without one of the kinds
            "kl": kl.detach().reshape(1),
            "loss": per_example.detach(),
        }
        return per_example.mean(), metrics
