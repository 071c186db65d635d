"""Token-distribution-shift analysis (URIAL paper §2.1–2.2, appendix C; spec §3.2): pure functions.

For a response o = (o_1, o_2, ...) written by an *aligned* model, the *base* model is fed the same context
x_t = query + o_<t at every position t; the **base rank** η_t of o_t is its rank in the base model's
next-token distribution (1 = the base model's top token). Positions are classified as

| class     | condition   | meaning                                              |
|-----------|-------------|------------------------------------------------------|
| unshifted | η = 1       | the base model's top token is the aligned token       |
| marginal  | 1 < η ≤ 3   | the aligned token is the base model's 2nd or 3rd      |
| shifted   | η > 3       | the aligned token is unlikely under the base model    |

Ranks count the tokens with a strictly higher base log-prob, plus one, so a token tied for the top has
rank 1. Alongside η_t: P_base(o_t) and KL(P_aligned ‖ P_base) at t (needs both full distributions).
`summarize_shift` reports the class fractions overall and per position bucket, mean η, P_base(o_t) and
KL per bucket, and the tokens most often at shifted positions. The model forward passes live in
`eval/token_shift.py`; everything here takes arrays, so it is tested on hand-made log-probs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

UNSHIFTED, MARGINAL, SHIFTED = "unshifted", "marginal", "shifted"
CLASSES = (UNSHIFTED, MARGINAL, SHIFTED)
MARGINAL_MAX_RANK = 3  # spec §3.2: marginal is 1 < η ≤ 3
# 1-based response positions: t = 1, 2-3, 4-7, 8-15, 16-31, 32+ (the paper's curves fall fastest early on).
POSITION_BUCKETS: tuple[tuple[int, int | None], ...] = ((1, 1), (2, 3), (4, 7), (8, 15), (16, 31), (32, None))


def base_ranks(base_logprobs: Any, tokens: Sequence[int]) -> np.ndarray:
    """η_t: 1 + the number of vocabulary entries the base model rates strictly above token t, per position.

    `base_logprobs` is [T, V] (log-probs or logits: only their order matters), `tokens` the T aligned tokens.
    """
    lp = np.asarray(base_logprobs, dtype=np.float64)
    tok = np.asarray(tokens, dtype=np.int64)
    if lp.ndim != 2 or lp.shape[0] != len(tok):
        raise ValueError(f"base_logprobs must be [T, V] with T = len(tokens) = {len(tok)}, got shape {lp.shape}")
    if len(tok) and (tok.min() < 0 or tok.max() >= lp.shape[1]):
        raise ValueError(f"token ids must lie in [0, {lp.shape[1]}), got {tok.min()}..{tok.max()}")
    chosen = lp[np.arange(len(tok)), tok]
    return 1 + (lp > chosen[:, None]).sum(axis=1)


def classify_rank(eta: int) -> str:
    """The class of one base rank: unshifted (η = 1), marginal (1 < η ≤ 3) or shifted (η > 3)."""
    if eta < 1:
        raise ValueError(f"a base rank is at least 1, got {eta}")
    return UNSHIFTED if eta == 1 else MARGINAL if eta <= MARGINAL_MAX_RANK else SHIFTED


def classify_ranks(ranks: Sequence[int]) -> list[str]:
    """The class of every position (see `classify_rank`)."""
    return [classify_rank(int(r)) for r in ranks]


def position_kl(aligned_logprobs: Any, base_logprobs: Any) -> np.ndarray:
    """KL(P_aligned ‖ P_base) at every position, from [T, V] log-probs (normalised log-softmax outputs)."""
    a = np.asarray(aligned_logprobs, dtype=np.float64)
    b = np.asarray(base_logprobs, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"aligned and base log-probs must have the same [T, V] shape, got {a.shape} and {b.shape}")
    p = np.exp(a)
    return np.where(p > 0, p * (a - b), 0.0).sum(axis=1)


@dataclass
class ResponseShift:
    """Per-position figures of one aligned response under the base model."""

    tokens: list[int]
    ranks: list[int]
    base_prob: list[float]  # P_base(o_t)
    kl: list[float] | None = None  # KL(P_aligned ‖ P_base) at t, when both distributions were available

    @classmethod
    def from_logprobs(cls, tokens: Sequence[int], base_logprobs: Any, aligned_logprobs: Any = None) -> "ResponseShift":
        """Ranks, P_base(o_t) and (given the aligned model's [T, V] log-probs) KL from [T, V] base log-probs."""
        lp = np.asarray(base_logprobs, dtype=np.float64)
        ranks = base_ranks(lp, tokens)
        prob = np.exp(lp[np.arange(len(tokens)), np.asarray(tokens, dtype=np.int64)]) if len(tokens) else np.zeros(0)
        kl = None if aligned_logprobs is None else position_kl(aligned_logprobs, lp).tolist()
        return cls(list(map(int, tokens)), ranks.astype(int).tolist(), prob.tolist(), kl)


def bucket_label(bucket: tuple[int, int | None]) -> str:
    """'t=1', 't=2-3', ..., 't≥32'."""
    lo, hi = bucket
    return f"t={lo}" if hi == lo else f"t≥{lo}" if hi is None else f"t={lo}-{hi}"


def _in_bucket(t: int, bucket: tuple[int, int | None]) -> bool:
    lo, hi = bucket
    return t >= lo and (hi is None or t <= hi)


@dataclass
class ShiftGroup:
    """Class fractions and means over a set of positions."""

    positions: int
    fractions: dict[str, float]
    mean_rank: float
    median_rank: float
    mean_base_prob: float
    mean_kl: float | None

    @classmethod
    def of(cls, ranks: Sequence[int], probs: Sequence[float], kls: Sequence[float] | None) -> "ShiftGroup":
        counts = Counter(classify_ranks(ranks))
        n = len(ranks)
        nan = float("nan")
        return cls(n, {c: counts[c] / n if n else nan for c in CLASSES}, float(np.mean(ranks)) if n else nan,
                   float(np.median(ranks)) if n else nan, float(np.mean(probs)) if n else nan,
                   None if kls is None else (float(np.mean(kls)) if n else nan))


@dataclass
class ShiftReport:
    """Token-shift figures over many responses: overall, per position bucket, and the frequent shifted tokens."""

    overall: ShiftGroup
    buckets: dict[str, ShiftGroup]
    shifted_tokens: list[tuple[int, int]]  # (token id, count at shifted positions), most frequent first
    marginal_tokens: list[tuple[int, int]]
    responses: int
    token_counts: dict[int, int] = field(default_factory=dict)  # every token's count over all positions

    def to_json(self, decode: Any = None) -> dict[str, Any]:
        """A JSON-ready dict; `decode` (token id -> text) names the tokens."""
        name = (lambda t: decode(t)) if decode else (lambda t: t)  # noqa: E731
        group = lambda g: {"positions": g.positions, **g.fractions, "mean_rank": g.mean_rank, "median_rank": g.median_rank,  # noqa: E731
                           "mean_base_prob": g.mean_base_prob, "mean_kl": g.mean_kl}
        return {"responses": self.responses, "overall": group(self.overall),
                "buckets": {k: group(v) for k, v in self.buckets.items()},
                "shifted_tokens": [{"token": name(t), "id": t, "shifted": c, "all": self.token_counts.get(t, 0)}
                                   for t, c in self.shifted_tokens],
                "marginal_tokens": [{"token": name(t), "id": t, "marginal": c, "all": self.token_counts.get(t, 0)}
                                    for t, c in self.marginal_tokens]}


def summarize_shift(responses: Sequence[ResponseShift], buckets: Sequence[tuple[int, int | None]] = POSITION_BUCKETS,
                    top: int = 15) -> ShiftReport:
    """Class fractions overall and per 1-based position bucket, and the `top` tokens most often shifted/marginal."""
    if not responses:
        raise ValueError("no responses to summarise")
    with_kl = all(r.kl is not None for r in responses)
    flat = [(t + 1, r.tokens[t], r.ranks[t], r.base_prob[t], r.kl[t] if with_kl else None)
            for r in responses for t in range(len(r.tokens))]

    def group(rows: list[tuple[int, int, int, float, float | None]]) -> ShiftGroup:
        return ShiftGroup.of([x[2] for x in rows], [x[3] for x in rows], [x[4] for x in rows] if with_kl else None)

    shifted, marginal, counts = Counter(), Counter(), Counter()
    for _, tok, rank, _, _ in flat:
        counts[tok] += 1
        cls = classify_rank(rank)
        if cls == SHIFTED:
            shifted[tok] += 1
        elif cls == MARGINAL:
            marginal[tok] += 1
    return ShiftReport(group(flat), {bucket_label(b): group([x for x in flat if _in_bucket(x[0], b)]) for b in buckets},
                       shifted.most_common(top), marginal.most_common(top), len(responses), dict(counts))
