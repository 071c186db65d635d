"""From search trees to training data (spec §1.4), as files alignkit's DPO and SFT methods read.

- `preference_rows`: per tree, the best node vs the worst node (all nodes, the root included: a root that wins
  teaches "leave it as it is"), as P-Aligner's DPO triples in the rewriter's chat format.
- `best_rows`: the seed → best node as SFT rows (the official pipeline also writes this SFT variant).
- `step_rows`: every parent → child edge whose child scored higher, as single-step SFT rows with the principle
  in the prompt (SinglePO's data).
- `truncated` / `random_node`: the ablations of the paper's Table 3 (best node among the first k expansions, or
  a random node instead of the best).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

from alignkit.paligner.mcts import Node, Tree
from alignkit.paligner.principles import PrincipleTable
from alignkit.paligner.rewrite import rewrite_answer, rewrite_request


def _scored(tree: Tree, limit: int | None = None) -> list[Node]:
    nodes = tree.nodes if limit is None else tree.nodes[: limit + 1]
    return [n for n in nodes if n.reward is not None]


def best_and_worst(tree: Tree, limit: int | None = None) -> tuple[Node, Node] | None:
    """(best, worst) node by mean reward; None when no node with another instruction scores lower than
    the best (no preference). A rewrite can repeat its parent's text word for word and get another
    reward estimate; such a twin is never the best's rejected side (the pair would be chosen == rejected)."""
    nodes = _scored(tree, limit)
    ordered = sorted(nodes, key=lambda n: n.reward)  # stable: ties keep tree order
    if not ordered:
        return None
    best = ordered[-1]
    worst = next((n for n in ordered if n.reward < best.reward and n.instruction.strip() != best.instruction.strip()), None)
    return None if worst is None else (best, worst)


def preference_rows(trees: Sequence[Tree], limit: int | None = None) -> list[dict[str, Any]]:
    """DPO triples: the rewrite request of the seed, the best node's rewrite as chosen, the worst's as rejected."""
    rows = []
    for tree in trees:
        pair = best_and_worst(tree, limit)
        if pair is None:
            continue
        best, worst = pair
        rows.append({"prompt": rewrite_request(tree.root.instruction), "chosen": rewrite_answer(best.instruction),
                     "rejected": rewrite_answer(worst.instruction), "seed": tree.root.instruction,
                     "chosen_reward": best.reward, "rejected_reward": worst.reward})
    return rows


def best_rows(trees: Sequence[Tree], limit: int | None = None) -> list[dict[str, Any]]:
    """SFT rows: the seed's rewrite request and the best node's rewrite."""
    rows = []
    for tree in trees:
        nodes = _scored(tree, limit)
        if nodes:
            best = max(nodes, key=lambda n: n.reward)
            rows.append({"prompt": rewrite_request(tree.root.instruction), "completion": rewrite_answer(best.instruction),
                         "seed": tree.root.instruction, "reward": best.reward})
    return rows


def random_node_rows(trees: Sequence[Tree], seed: int = 0) -> list[dict[str, Any]]:
    """The ablation: a random scored node instead of the best, as SFT rows."""
    rng = random.Random(seed)
    rows = []
    for tree in trees:
        nodes = _scored(tree)
        if nodes:
            node = rng.choice(nodes)
            rows.append({"prompt": rewrite_request(tree.root.instruction), "completion": rewrite_answer(node.instruction),
                         "seed": tree.root.instruction, "reward": node.reward})
    return rows


def step_rows(trees: Sequence[Tree], table: PrincipleTable) -> list[dict[str, Any]]:
    """SinglePO's single-step SFT rows: every parent → child edge whose child scored higher than its parent."""
    rows = []
    for tree in trees:
        for node in tree.nodes[1:]:
            parent = tree.nodes[node.parent]
            if node.reward is not None and parent.reward is not None and node.reward > parent.reward:
                principle = table.by_name[node.action]
                rows.append({"prompt": rewrite_request(parent.instruction, principle), "completion": rewrite_answer(node.instruction),
                             "action": node.action, "gain": node.reward - parent.reward})
    return rows


def write_training_data(trees_file: str | Path, out: str | Path, limit: int | None = None, random_node: bool = False,
                        principles: str | Path | None = None) -> dict[Path, int]:
    """`alignkit paligner export`: the training files of finished trees (preference pairs, best rewrites and, for whole
    trees, principle-guided steps; or one random node per tree, `random_node`) in `out`; rows written per file."""
    from alignkit.generation.rollouts import write_jsonl
    from alignkit.paligner.mcts import load_trees

    trees = load_trees(trees_file)
    table = PrincipleTable.load(principles) if principles else PrincipleTable()
    files = {"sft_random.jsonl": random_node_rows(trees)} if random_node else {
        "preference.jsonl": preference_rows(trees, limit), "sft_best.jsonl": best_rows(trees, limit),
        **({} if limit else {"sft_steps.jsonl": step_rows(trees, table)})}
    written = {}
    for name, rows in files.items():
        write_jsonl(Path(out) / name, rows)
        written[Path(out) / name] = len(rows)
    return written
