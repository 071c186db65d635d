"""The base of methods that train on prompt + completion sequences.

A method module under `alignkit/trainers/` defines `Args` (its validated `method_args`), a pure loss
function, and `Method(args, tokenizer, data)` with:

- `record_type`: the record kind it trains on; `reference_keys`: the per-example values a frozen
  reference supplies (empty when none);
- `select_records(records) -> records`: a one-off selection before training (e.g. CUT's Align-P
  downsampling); the default keeps every record;
- `augment_records(records, recipe, split) -> records`: add what the records lack and a model must
  produce before training (e.g. D²O's self-generated samples); the default returns them unchanged;
- `training_callbacks(recipe) -> list`: `transformers.TrainerCallback`s the method needs during
  training (e.g. D²O's online re-sampling); none by default;
- `build_example(record) -> dict` of token-id lists (fields ending in `_ids`) and a `length`;
- `collate(examples) -> batch`; `sequence_outputs(model, batch) -> dict` of per-sequence tensors;
- `loss(outputs, reference) -> (loss, per-example metrics)`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from alignkit.engine.batching import PromptCompletionTokenizer, rows_to_batch
from alignkit.engine.logprobs import batch_token_logprobs, per_sequence_sum


class CompletionMethod:
    """Tokenisation, batching and summed completion log-probs shared by the methods."""

    reference_keys: tuple[str, ...] = ()

    def __init__(self, args: Any, tokenizer: Any, data: Any) -> None:
        self.args = args
        self.tokens = PromptCompletionTokenizer(tokenizer, data.template, data.max_length, data.max_prompt_length)
        self.pad_id = tokenizer.pad_token_id
        self.packing = data.packing

    def select_records(self, records: list[Any]) -> list[Any]:
        """Records to train on (all of them unless a method overrides this)."""
        return records

    def augment_records(self, records: list[Any], recipe: Any, split: str) -> list[Any]:
        """Records with anything generated before training added (none unless a method overrides this)."""
        return records

    def training_callbacks(self, recipe: Any) -> list[Any]:
        """TrainerCallbacks this method adds to training (none unless a method overrides this)."""
        return []

    def batch(self, rows: Sequence[tuple[Sequence[int], Sequence[int]]]) -> dict[str, torch.Tensor]:
        """(prompt, completion) rows as a padded or packed batch."""
        return rows_to_batch(rows, self.pad_id, self.packing)

    def batch_with_reference(self, rows: Sequence[tuple[Sequence[int], Sequence[int]]],
                             examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """`batch(rows)` plus each `ref_<key>` the examples carry (precomputed reference values, one per example)."""
        batch = self.batch(rows)
        for key in self.reference_keys:
            if f"ref_{key}" in examples[0]:
                batch[f"ref_{key}"] = torch.tensor([e[f"ref_{key}"] for e in examples], dtype=torch.float32)
        return batch

    def completion_logps(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed completion log-probs and completion token counts, one per sequence of the batch."""
        logps, mask = batch_token_logprobs(model, batch, getattr(self.args, "logprob_chunk_size", 256))
        return per_sequence_sum(logps, mask, batch), per_sequence_sum(mask.to(logps.dtype), mask, batch)
