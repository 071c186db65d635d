"""P-Aligner: principles as data, the MCTS against hand computations with a seeded fake generator and a fake
reward, resume equal to an uninterrupted run, the exporters, the rewrite parser, and the gym pipeline pieces."""

import json
import math

import pytest

from alignkit.paligner import PrincipleTable, parse_rewrite, rewrite_answer, rewrite_request
from alignkit.paligner.mcts import Node, SearchSettings, Tree, backpropagate, new_trees, q_value, search, select, uct, untried
from alignkit.paligner.principles import Principle


class SuffixRewriter:
    """Appends the principle's initials: rewrites are a deterministic function of (instruction, principle)."""

    def __init__(self, fail_on: str | None = None):
        self.calls, self.fail_on = [], fail_on

    def rewrite(self, requests):
        self.calls.append(len(requests))
        return [None if self.fail_on and p.name == self.fail_on and "#" not in x else x + " " + "".join(w[0] for w in p.name.split())
                for x, p in requests]


def length_reward(items, iteration):
    """A fake generator + reward: n = 2 'responses' whose reward is a function of the instruction's text only
    (longer instructions with more 'C's score higher); the original instruction shifts every reward."""
    out = []
    for instruction, original in items:
        base = len(instruction) % 7 + instruction.count("C") - 0.1 * len(original)
        out.append(([instruction.upper(), instruction.lower()], [base, base + 1.0]))
    return out


def test_principle_table_actions_and_user_tables(tmp_path):
    table = PrincipleTable()
    assert [p.name for p in table.actions("Math")] == ["Hint Addition", "Solution Verification", "Clarification Request",
                                                      "Information Augmentation", "Tone Improvement"]
    assert len(table.actions(None)) == len(table.actions("Unknown")) == 3  # Helpfulness only
    assert len(table.actions("Honesty")) == 4 and len(table.actions("Harmlessness")) == 5
    path = tmp_path / "p.yaml"
    path.write_text("Helpfulness:\n  - {name: Shorter, description: be brief}\nMath:\n  - {name: Hint, description: add a hint}\n")
    custom = PrincipleTable.load(path)
    assert [p.name for p in custom.actions("Math")] == ["Hint", "Shorter"]
    path.write_text("Math:\n  - {name: Hint, description: add a hint}\n")
    with pytest.raises(ValueError, match="Helpfulness"):
        PrincipleTable.load(path)


def test_q_value_uct_and_backpropagation_by_hand():
    tree = Tree(0, None, [Node("root", reward=None), Node("a", "A", 0, reward=1.0), Node("b", "B", 0, reward=3.0),
                          Node("a1", "A", 1, reward=5.0)])
    tree.nodes[0].children, tree.nodes[1].children = [1, 2], [3]
    assert q_value(tree, 3) == 5.0 and q_value(tree, 2) == 3.0
    assert q_value(tree, 1) == (1.0 + 5.0) / 2  # (r + Σ Q(children)) / (1 + #children)
    for i, v in enumerate((4, 2, 1, 1)):
        tree.nodes[i].visits = v
    assert uct(tree, 0, 1, 0.1) == pytest.approx(3.0 + 0.1 * math.sqrt(math.log(4) / 2))
    assert uct(tree, 0, 2, 0.1) == pytest.approx(3.0 + 0.1 * math.sqrt(math.log(4) / 1))
    actions = [Principle("A", "", "x"), Principle("B", "", "x")]
    assert select(tree, actions, 0.1) == 2  # root fully expanded (2 of 2); child b has the higher UCT; b has room
    assert select(tree, actions, 0.0) == 1  # without exploration a and b tie on Q; the first wins, and a has room
    assert [a.name for a in untried(tree, 1, actions)] == ["B"]
    tree.nodes.append(Node("b1", "A", 2, reward=7.0))
    tree.nodes[2].children.append(4)
    backpropagate(tree, 4)
    assert [tree.nodes[i].visits for i in (0, 2, 4)] == [5, 2, 1] and tree.nodes[0].best == 7.0 and tree.nodes[1].visits == 2


def test_search_builds_the_tree_a_hand_computation_predicts():
    table = PrincipleTable({"Helpfulness": [("Alpha Beta", "a"), ("Charlie", "c")]})
    settings = SearchSettings(iterations=3, exploration=0.0, samples_per_node=2, seed=1)
    (tree,) = search(new_trees(["hello"], [None]), table, SuffixRewriter(), length_reward, settings, progress=False)
    # Iterations 1-2 expand the root with its two actions (in the seeded RNG's order); with c = 0 iteration 3 goes
    # below the child with the higher Q. Each reward by hand: mean(len % 7 + #C − 0.1·len("hello"), +1).
    rewards = {n.instruction: n.reward for n in tree.nodes}
    assert rewards["hello C"] == pytest.approx((len("hello C") % 7 + 1 - 0.5) + 0.5)
    assert rewards["hello AB"] == pytest.approx((len("hello AB") % 7 - 0.5) + 0.5)
    best_child = max(tree.nodes[0].children, key=lambda c: tree.nodes[c].reward)
    assert tree.nodes[3].parent == best_child  # the third expansion goes under the better child
    assert tree.nodes[0].visits == 3 and tree.nodes[0].reward == pytest.approx(len("hello") % 7 - 0.5 + 0.5)  # root scored last
    assert tree.next_iter == 3 and len(tree.nodes) == 4


def test_resume_after_an_interruption_gives_the_uninterrupted_tree(tmp_path):
    table = PrincipleTable()
    seeds, domains = ["What is 2 plus 3?", "Tell me a joke", "Fix this code"], ["Math", None, "Coding & Debugging"]
    settings = SearchSettings(iterations=8, exploration=0.1, samples_per_node=2, seed=3)
    whole = search(new_trees(seeds, domains), table, SuffixRewriter(), length_reward, settings, tmp_path / "a.jsonl", progress=False)
    from alignkit.paligner.mcts import load_trees

    search(new_trees(seeds, domains), table, SuffixRewriter(), length_reward, settings, tmp_path / "b.jsonl", progress=False,
           stop_after=3)
    interrupted = load_trees(tmp_path / "b.jsonl")
    assert [t.next_iter for t in interrupted] == [3, 3, 3] and all(t.root.reward is None for t in interrupted)
    resumed = search(interrupted, table, SuffixRewriter(), length_reward, settings, tmp_path / "b.jsonl", progress=False)
    assert [t.to_json() for t in resumed] == [t.to_json() for t in whole]
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


def test_a_failed_expansion_is_retried_and_batched_across_trees():
    table = PrincipleTable({"Helpfulness": [("Alpha", "a"), ("Bravo", "b")]})
    rewriter = SuffixRewriter(fail_on="Bravo")
    trees = search(new_trees(["x", "y", "z"], [None] * 3), table, rewriter, length_reward,
                   SearchSettings(iterations=2, exploration=0.0, samples_per_node=2, seed=0), progress=False)
    assert all(len(t.nodes) >= 2 for t in trees)  # every tree grew although Bravo always fails at the root
    assert rewriter.calls[0] == 3  # one batched rewriter call for the three trees' first expansions
    assert sum(t.failures for t in trees) > 0


def test_exporters_by_hand():
    from alignkit.paligner.export import best_rows, preference_rows, random_node_rows, step_rows

    table = PrincipleTable()
    tree = Tree(0, None, [Node("raw", reward=1.0), Node("better", "Tone Improvement", 0, reward=2.0),
                          Node("worse", "Clarification Request", 0, reward=0.5), Node("best", "Tone Improvement", 1, reward=3.0)])
    tree.nodes[0].children, tree.nodes[1].children = [1, 2], [3]
    (pair,) = preference_rows([tree])
    assert pair["prompt"] == rewrite_request("raw") and pair["chosen"] == rewrite_answer("best")
    assert pair["rejected"] == rewrite_answer("worse")
    assert best_rows([tree])[0]["completion"] == rewrite_answer("best")
    steps = step_rows([tree], table)
    assert [s["completion"] for s in steps] == [rewrite_answer("better"), rewrite_answer("best")]  # raw->better, better->best
    assert "optimize this prompt by" in steps[0]["prompt"][0]["content"]
    (truncated,) = preference_rows([tree], limit=1)  # the truncated-tree ablation: the root and the first expansion only
    assert truncated["chosen"] == rewrite_answer("better") and truncated["rejected"] == rewrite_answer("raw")
    assert len(random_node_rows([tree], seed=0)) == 1
    flat = Tree(1, None, [Node("same", reward=1.0), Node("also", "Tone Improvement", 0, reward=1.0)])
    assert preference_rows([flat]) == []  # no preference without two distinct rewards
    twin = Tree(2, None, [Node("same", reward=0.0), Node("same", "Tone Improvement", 0, reward=2.0),
                          Node("other", "Clarification Request", 0, reward=1.0)])
    (pair,) = preference_rows([twin])  # the root's word-for-word twin scored higher: never chosen == rejected
    assert pair["chosen"] == rewrite_answer("same") and pair["rejected"] == rewrite_answer("other")
    assert preference_rows([Tree(3, None, [Node("a", reward=0.0), Node("a", "Tone Improvement", 0, reward=1.0)])]) == []


def test_parse_rewrite_with_fallback():
    text = rewrite_answer("What is 2 plus 3?")
    assert parse_rewrite(text, "raw") == ("What is 2 plus 3?", True)
    assert parse_rewrite("The Optimized Prompt: What is 2 plus 3?", "raw") == ("raw", False)
    assert parse_rewrite("[The Start of Optimized Prompt]\n\n[The End of Optimized Prompt]", "raw") == ("raw", False)
    assert parse_rewrite("[The Start of Optimized Prompt]\nunfinished", "raw") == ("raw", False)


def test_gym_rule_rewriter_edits():
    from alignkit.gym.rewriter import GymRuleRewriter, augment, spell_correct, tone

    assert spell_correct("Wat is 5 plsu 15?") == "What is 5 plus 15?"
    assert tone("Hi! WHAT IS 5 PLUS 15") == "What is 5 plus 15?"
    assert augment("2 times 11 =") == "What is 2 times 11?" and augment("capital of Nowhere").startswith("Please answer in full:")
    table = PrincipleTable()
    out = GymRuleRewriter().rewrite([("What is 2 plus 3?", table.by_name["Hint Addition"]), ("x", Principle("Unknown", "", "H"))])
    assert out == ["What is 2 plus 3? Think it through step by step.", None]


def test_synthesis_on_the_gym_end_to_end_and_rewrite_cli(tmp_path, capsys):
    """A few trees on the gym with the real downstream model and gold, exported data, and `alignkit rewrite`."""
    from alignkit.cli import main

    out = tmp_path / "syn"
    assert main(["paligner", "synthesize", "--config", "configs/paligner_gym.yaml", "--set", "limit=4", "--set", "iterations=3",
                 "--set", f"output_dir={out}", "--set", "scorer={kind: gold}", "--set", "downstream.max_tokens=12"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trees"] == 4 and summary["nodes_evaluated"] == 4 * 3 and summary["complete"]
    rows = [json.loads(line) for line in (out / "preference.jsonl").read_text().splitlines()]
    assert all(r["chosen_reward"] > r["rejected_reward"] for r in rows)
    # an untrained model as the rewriter: no markers, so every prompt falls back to its raw form (and is counted)
    rewritten = tmp_path / "rewritten.jsonl"
    assert main(["rewrite", "--model", "tiny:xs", "--prompts", "data/gym/heldout_noisy_prompts.jsonl", "--limit", "3",
                 "--max-tokens", "8", "--backend", "hf", "--out", str(rewritten)]) == 0
    lines = [json.loads(line) for line in rewritten.read_text().splitlines()]
    assert [r["prompt"] for r in lines] == [r["raw_prompt"] for r in lines] and not any(r["parsed"] for r in lines)
    assert "3 kept their raw form" in capsys.readouterr().out


# -- issue 29 row 9: the official operator prompts, decoding and seed data ----------------------------------------


class Recording:
    """A generation backend double that records prompts and sampling parameters and answers a fixed text."""

    def __init__(self, text):
        self.text, self.calls = text, []

    def generate(self, prompts, params):
        from alignkit.generation.base import Completion, GenerationResult

        self.calls.append((list(prompts), params))
        return [GenerationResult(p, [Completion(self.text, [], "stop")]) for p in prompts]


def test_principle_directions_complete_the_official_by_sentence():
    """Every direction is a gerund phrase with its own full stop, so "optimize this prompt by <direction>" reads as the
    official rules do ("by making it ...", never "by make it ...", and no doubled full stop in the SinglePO prompt)."""
    table = PrincipleTable()
    for principle in table.by_name.values():
        assert principle.description.split()[0].endswith("ing") and principle.description.endswith("."), principle
        request = rewrite_request("What is 2 plus 3?", principle)[0]["content"]
        assert request.endswith(f"\n\nYou should optimize this prompt by {principle.description}") and not request.endswith("..")


def test_the_official_rules_file_loads_as_it_is(tmp_path):
    official = {"Helpfulness": [{"name": "Clarification Request", "content": "making it more clear and instructive."}],
                "Math": [{"name": "Hint Addition", "content": "introducing hints."}]}
    path = tmp_path / "rule_P-Aligner.json"
    path.write_text(json.dumps(official))
    table = PrincipleTable.load(path)
    assert table.by_name["Hint Addition"].description == "introducing hints."


def test_operator_prompt_keeps_the_official_line_breaks_and_decoding():
    from alignkit.paligner.rewrite import ModelRewriter

    principle = PrincipleTable().by_name["Tone Improvement"]
    gen = Recording("Could you please tell me what 2 plus 3 is?")
    assert ModelRewriter(gen).rewrite([("wat 2 plus 3", principle)]) == ["Could you please tell me what 2 plus 3 is?"]
    (prompts, params), = gen.calls
    system, user = prompts[0]
    assert system == {"role": "system", "content": "You are an assistant who helps optimize user queries."}
    assert user["content"] == (f"The user query to be paraphrased is [wat 2 plus 3]. \nYou should optimize this query by "
                               f"{principle.description}. \nYou should also return the optimized version directly, without any prefix.")
    assert (params.temperature, params.max_tokens) == (1.0, 4096)  # the official GPT-4 call leaves the API default
    single = Recording(rewrite_answer("What is 2 plus 3?"))
    assert ModelRewriter(single, style="singlepo").rewrite([("wat 2 plus 3", principle)]) == ["What is 2 plus 3?"]
    assert (single.calls[0][1].temperature, single.calls[0][1].max_tokens) == (0.0, 4096)  # greedy, as the official local operator
    greedy = Recording("x")
    ModelRewriter(greedy, temperature=0.0, max_tokens=64).rewrite([("q", principle)])
    assert (greedy.calls[0][1].temperature, greedy.calls[0][1].max_tokens) == (0.0, 64)


def test_released_seed_rows_are_read_as_the_official_loader_reads_them(tmp_path):
    from alignkit.paligner.synthesis import SynthesisConfig, read_seeds

    seeds = tmp_path / "seeds.jsonl"
    rows = [{"context": [{"role": "user", "content": "Solve 2x = 6."}], "category": "Math", "meta": {}},
            {"context": [{"role": "user", "content": "Write a haiku."}], "category": "Creative Writing", "meta": {}}]
    seeds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = SynthesisConfig(seeds=str(seeds), seeds_format="ultraprompt", domain_field="category", rewriter={"kind": "gym"},
                             downstream={"model": "x"}, scorer={"kind": "gold"}, output_dir=str(tmp_path / "o"))
    prompts, domains = read_seeds(config)
    assert prompts == ["Solve 2x = 6.", "Write a haiku."] and domains == ["Math", "Creative Writing"]
    table = PrincipleTable()
    assert len(table.actions(domains[0])) == 5 and len(table.actions(domains[1])) == 3  # another category: Helpfulness only
    seeds.write_text(json.dumps({"prompt": "no context"}) + "\n")
    with pytest.raises(ValueError, match="seeds.jsonl:1: field 'context'"):
        read_seeds(config)
