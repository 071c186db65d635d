"""SLiC-HF's calibration loss on preference pairs, against a frozen reference: the worked example of the method
contract in docs/architecture.md (whose code block is this file, checked by tests/test_contract.py)."""

from __future__ import annotations

import torch
from pydantic import Field

from alignkit.engine.method import PairMethod, ReferenceArgs


class Args(ReferenceArgs):  # the recipe's method_args, validated when the recipe loads
    margin: float = Field(1.0, gt=0, description="the hinge margin δ between chosen and rejected log-ratios")


def hinge_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
               margin: float) -> torch.Tensor:
    """Per-pair max(0, δ − (log-ratio of chosen − log-ratio of rejected)): pure, tensors in and out."""
    return torch.relu(margin - ((chosen - ref_chosen) - (rejected - ref_rejected)))


class Method(PairMethod):  # PairMethod: examples, chosen-then-rejected batches, summed completion log-probs
    def signals(self, recipe):  # a declaration: the engine computes, caches and hands back the values
        return [self.args.reference_signal(recipe, ["chosen_logps", "rejected_logps"])]

    def loss(self, out, ref):  # per batch: the policy's sequence_outputs and the reference's values
        losses = hinge_loss(out["chosen_logps"], out["rejected_logps"], ref["chosen_logps"], ref["rejected_logps"],
                            self.args.margin)
        return losses.mean(), {"loss": losses.detach(), "margin": (out["chosen_logps"] - out["rejected_logps"]).detach()}
