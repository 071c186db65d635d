"""Principle-guided Monte Carlo tree search over instruction rewrites (P-Aligner's data synthesis, paper §4.1;
spec §1.3).

Every node is a complete instruction. Expanding a node asks a rewriter to apply one principle (an untried
action of the node, chosen uniformly at random); the child is evaluated "in place": n responses of a
*downstream* model to the child instruction, each scored by a reward against the **original** instruction
x0, and the node reward r is their mean. Selection walks from the root through fully expanded nodes by
UCT = Q(child) + c·sqrt(ln V(parent) / V(child)), with Q the recursive mean Q(N) = (r_N + Σ_j Q(child_j)) /
(1 + #children), recomputed at selection time. Backpropagation adds a visit to every node on the path and
refreshes each node's best reward in its subtree. The root is scored once, after the iterations.
Defaults are the paper's: 20 iterations, c = 0.1 (for ArmoRM's scale; the official config's default is 1.0),
3 responses per node.

All trees advance in lockstep: one iteration of every tree sends all its expansions to the rewriter
together, all new children to the downstream generator together (vLLM batches them), and all responses to
the scorer together. Trees persist as JSON Lines after every iteration (atomically); a rerun resumes at the
next iteration, and because every random choice is seeded by (seed, tree, iteration, attempt) and the
generator's batch at an iteration does not depend on when the run started, the resumed trees equal an
uninterrupted run's.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from alignkit.paligner.principles import Principle, PrincipleTable

log = logging.getLogger("alignkit")


class Rewriter(Protocol):
    """Applies a principle to an instruction: one rewritten instruction (or None on failure) per request."""

    def rewrite(self, requests: Sequence[tuple[str, Principle]]) -> list[str | None]: ...


@dataclass
class Node:
    """One instruction in a tree (spec §1.3 node fields)."""

    instruction: str
    action: str | None = None  # the principle that produced it (None for the root)
    parent: int | None = None
    children: list[int] = field(default_factory=list)
    visits: int = 0
    reward: float | None = None  # r: the mean reward of its responses ("local_avg_reward")
    responses: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    best: float | None = None  # max of its own r and its children's best (kept, not used for training)


@dataclass
class Tree:
    """A search tree rooted at one seed instruction x0."""

    seed_id: int
    domain: str | None
    nodes: list[Node]
    next_iter: int = 0
    failures: int = 0

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def to_json(self) -> dict[str, Any]:
        return {"seed_id": self.seed_id, "domain": self.domain, "next_iter": self.next_iter, "failures": self.failures,
                "nodes": [asdict(n) for n in self.nodes]}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> "Tree":
        return cls(row["seed_id"], row["domain"], [Node(**n) for n in row["nodes"]], row["next_iter"], row["failures"])


def q_value(tree: Tree, index: int) -> float:
    """Recursive mean Q(N) = (r_N + Σ_children Q(child)) / (1 + #children); Q = r for a leaf (spec eq. 6)."""
    node = tree.nodes[index]
    own = node.reward if node.reward is not None else 0.0
    return (own + sum(q_value(tree, c) for c in node.children)) / (1 + len(node.children))


def uct(tree: Tree, parent: int, child: int, exploration: float) -> float:
    """Q(child) + c·sqrt(ln V(parent) / V(child)) (spec eq. 7)."""
    p, c = tree.nodes[parent], tree.nodes[child]
    return q_value(tree, child) + exploration * math.sqrt(math.log(max(p.visits, 1)) / max(c.visits, 1))


def select(tree: Tree, actions: Sequence[Principle], exploration: float) -> int:
    """The first node on the UCT path from the root that is not fully expanded (ties: the first child)."""
    index = 0
    while len(tree.nodes[index].children) >= len(actions):
        children = tree.nodes[index].children
        scores = [uct(tree, index, c, exploration) for c in children]
        index = children[scores.index(max(scores))]
    return index


def untried(tree: Tree, index: int, actions: Sequence[Principle]) -> list[Principle]:
    """The node's actions that none of its children used (a principle may recur deeper in the tree)."""
    used = {tree.nodes[c].action for c in tree.nodes[index].children}
    return [a for a in actions if a.name not in used]


def backpropagate(tree: Tree, index: int) -> None:
    """A visit for every node from `index` up to the root, and each one's best reward refreshed."""
    reward = tree.nodes[index].reward
    while index is not None:
        node = tree.nodes[index]
        node.visits += 1
        if reward is not None:
            node.best = reward if node.best is None else max(node.best, reward)
        index = node.parent


@dataclass
class SearchSettings:
    """The search budget and constants (defaults: the paper's runs)."""

    iterations: int = 20
    exploration: float = 0.1
    samples_per_node: int = 3
    seed: int = 0
    max_attempts: int = 3  # a failed expansion is retried this many times at the same iteration, then skipped


def _rng(settings: SearchSettings, tree: Tree, iteration: int, attempt: int) -> random.Random:
    return random.Random(f"{settings.seed}|{tree.seed_id}|{iteration}|{attempt}")


Evaluate = Callable[[list[tuple[str, str]], int], list[tuple[list[str], list[float]]]]


def evaluator(generator: Any, scorer: Any, params: Any) -> Evaluate:
    """`evaluate([(instruction, original), ...], iteration)`: n responses of the downstream `generator` to each
    instruction (one batch, seeded by the iteration) and their rewards against the original instruction."""
    from dataclasses import replace

    from alignkit.scoring.base import score_groups

    def evaluate(items: list[tuple[str, str]], iteration: int) -> list[tuple[list[str], list[float]]]:
        if not items:
            return []
        seeded = replace(params, seed=(params.seed or 0) + 7919 * (iteration + 1))
        results = generator.generate([instruction for instruction, _ in items], seeded)
        texts = [[c.text for c in r.completions] for r in results]
        scores = score_groups(scorer, [original for _, original in items], texts)
        return list(zip(texts, [[float(x) for x in s] for s in scores]))

    return evaluate


def new_trees(seeds: Sequence[str], domains: Sequence[str | None]) -> list[Tree]:
    """One unexpanded tree per seed instruction."""
    return [Tree(i, d, [Node(s)]) for i, (s, d) in enumerate(zip(seeds, domains))]


def load_trees(path: str | Path) -> list[Tree]:
    """Trees persisted by `search`."""
    return [Tree.from_json(json.loads(line)) for line in Path(path).read_text().splitlines() if line.strip()]


def save_trees(path: str | Path, trees: Sequence[Tree]) -> None:
    """Persist trees atomically (one JSON object per line)."""
    from alignkit.cache import write_atomic

    write_atomic(path, lambda fh: fh.writelines(json.dumps(t.to_json()) + "\n" for t in trees))


def search(trees: list[Tree], table: PrincipleTable, rewriter: Rewriter, evaluate: Evaluate, settings: SearchSettings,
           store: str | Path | None = None, progress: bool = True, stop_after: int | None = None) -> list[Tree]:
    """Run every tree to `settings.iterations` (continuing from each tree's `next_iter`), then score the roots.

    Persists to `store` after every iteration when given. `stop_after` ends the run after that many iterations
    (tests simulate an interruption with it)."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    evaluated = 0
    total = len(trees) * settings.iterations
    done = sum(min(t.next_iter, settings.iterations) for t in trees)
    bar = tqdm(total=total, initial=done, desc="P-Aligner MCTS", unit="node", disable=not progress)
    rounds = 0
    while any(t.next_iter < settings.iterations for t in trees):
        if stop_after is not None and rounds >= stop_after:
            break
        active = [t for t in trees if t.next_iter < settings.iterations]
        pending = {id(t): (t, 0) for t in active}
        expansions: list[tuple[Tree, int, Principle, str]] = []
        while pending:  # expansions, retried (at most max_attempts) where the rewriter failed
            requests = []
            for tree, attempt in pending.values():
                actions = table.actions(tree.domain)
                parent = select(tree, actions, settings.exploration)
                rng = _rng(settings, tree, tree.next_iter, attempt)
                action = rng.choice(untried(tree, parent, actions))
                requests.append((tree, attempt, parent, action))
            outputs = rewriter.rewrite([(t.nodes[p].instruction, a) for t, _, p, a in requests])
            pending = {}
            for (tree, attempt, parent, action), text in zip(requests, outputs):
                if text and text.strip():
                    expansions.append((tree, parent, action, text.strip()))
                elif attempt + 1 < settings.max_attempts:
                    tree.failures += 1
                    pending[id(tree)] = (tree, attempt + 1)
                else:
                    tree.failures += 1
                    log.warning("P-Aligner MCTS: tree %d, iteration %d: the rewriter failed %d times; iteration skipped",
                                tree.seed_id, tree.next_iter, settings.max_attempts)
        iteration = min(t.next_iter for t in active)
        evaluations = evaluate([(text, tree.root.instruction) for tree, _, _, text in expansions], iteration)
        for (tree, parent, action, text), (responses, rewards) in zip(expansions, evaluations):
            child = Node(text, action.name, parent, responses=responses, rewards=rewards,
                         reward=sum(rewards) / len(rewards) if rewards else None)
            tree.nodes.append(child)
            tree.nodes[parent].children.append(len(tree.nodes) - 1)
            backpropagate(tree, len(tree.nodes) - 1)
        for tree in active:
            tree.next_iter += 1
        evaluated += len(expansions)
        rounds += 1
        bar.update(len(active))
        bar.set_postfix(nodes_s=f"{evaluated / max(time.perf_counter() - start, 1e-9):.1f}")
        if store is not None:
            save_trees(store, trees)
    bar.close()
    if all(t.next_iter >= settings.iterations for t in trees):
        unscored = [t for t in trees if t.root.reward is None]
        if unscored:  # the root is simulated once, after the iterations (spec §1.3)
            for tree, (responses, rewards) in zip(unscored, evaluate([(t.root.instruction, t.root.instruction) for t in unscored],
                                                                     settings.iterations)):
                tree.root.responses, tree.root.rewards = responses, rewards
                tree.root.reward = sum(rewards) / len(rewards) if rewards else None
                tree.root.best = max(x for x in (tree.root.best, tree.root.reward) if x is not None)
            if store is not None:
                save_trees(store, trees)
    return trees
