"""P-Aligner (Song et al., arXiv 2508.04626): instruction pre-alignment. A small rewriter turns a raw instruction
into a clearer, better-framed one before any downstream model answers it; its training data comes from a
principle-guided Monte Carlo tree search over rewrites, scored by a reward on a downstream model's responses.

    alignkit paligner synthesize --config configs/paligner_gym.yaml   # MCTS -> trees, DPO and SFT data
    alignkit train recipes/paligner_rewriter_tiny.yaml                # train the rewriter (staged: SFT, then DPO)
    alignkit rewrite --model runs/paligner_rewriter/dpo/final --prompts data/gym/heldout_noisy_prompts.jsonl --out rewritten.jsonl

See docs/paligner.md.
"""

from alignkit.paligner.mcts import Node, SearchSettings, Tree, q_value, search, select, uct
from alignkit.paligner.principles import Principle, PrincipleTable
from alignkit.paligner.rewrite import ModelRewriter, parse_rewrite, rewrite_answer, rewrite_prompts, rewrite_request

__all__ = ["ModelRewriter", "Node", "Principle", "PrincipleTable", "SearchSettings", "Tree", "parse_rewrite", "q_value",
           "rewrite_answer", "rewrite_prompts", "rewrite_request", "search", "select", "uct"]
