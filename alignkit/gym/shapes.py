"""Shapes of the gym's tiny Llamas (pure data: recipes are validated against it before any model loads)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TinySize:
    """Shape of a tiny Llama. head_dim = hidden / heads stays >= 32 (vLLM's CPU kernels need it)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int = 1024


SIZES: dict[str, TinySize] = {
    "xs": TinySize(64, 2, 2, 128),
    "s": TinySize(128, 4, 4, 256),
    "m": TinySize(256, 6, 8, 688),
    "100m": TinySize(768, 12, 12, 2048, vocab_size=4096),
}
