"""Rollouts (cached) and best-of-N / worst-of-N selection, through the Python API and the CLI."""

import json

import pytest

from alignkit.cli import main
from alignkit.generation import HFGenerator, SamplingParams
from alignkit.scoring import GoldScorer, RewardModelScorer, best_of_n, select
from alignkit.generation.rollouts import read_prompt_rows, rollouts

MODEL = "data/gym/base-s"
PROMPTS = "data/gym/heldout_prompts.jsonl"


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    from alignkit.gym.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("rm"), "xs", seed=1, classifier=True))


def test_select_is_argmax_or_argmin_first_on_ties():
    assert select([0.1, 0.7, 0.7, -1.0]) == 1
    assert select([0.1, 0.7, 0.7, -1.0], worst=True) == 3
    with pytest.raises(ValueError):
        select([])


def test_read_prompt_rows_keeps_family_and_reads_other_formats():
    rows = read_prompt_rows(PROMPTS)
    assert rows[0] == {"prompt": "What is 2 times 11?", "family": "arithmetic"}
    assert read_prompt_rows("data/gym/heldout_preference.jsonl")[0]["prompt"]


def test_rollouts_are_cached_by_model_prompts_and_sampling():
    rows = read_prompt_rows(PROMPTS)[:3]
    calls = []

    def make():
        calls.append(1)
        return HFGenerator.from_pretrained(MODEL)

    params = SamplingParams(n=2, max_tokens=16, seed=0, logprobs=True)
    first = rollouts(MODEL, rows, params, backend="hf", make_generator=make)
    again = rollouts(MODEL, rows, params, backend="hf", make_generator=make)
    assert len(calls) == 1 and first == again
    assert all(len(r["completions"]) == 2 and r["completions"][0]["logprobs"] for r in first)
    rollouts(MODEL, rows, SamplingParams(n=2, max_tokens=16, seed=1, logprobs=True), backend="hf", make_generator=make)
    assert len(calls) == 2  # another seed is another request


def test_gold_scorer_prefers_the_right_answer():
    scores = GoldScorer().score("What is 2 times 11?", ["2 times 11 is 21.", "2 times 11 is 22."])
    assert select(scores) == 1


@pytest.mark.parametrize("worst", [False, True])
def test_bon_cli_picks_the_reward_model_argmax(tmp_path, reward_model, worst, capsys):
    out = tmp_path / "bon.jsonl"
    argv = ["bon", "--model", MODEL, "--prompts", PROMPTS, "--limit", "4", "--n", "4", "--max-tokens", "16",
            "--backend", "hf", "--scorer", "reward-model", "--reward-model", reward_model, "--out", str(out)]
    assert main(argv + (["--worst"] if worst else [])) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4
    scorer = RewardModelScorer(reward_model)
    for row in rows:
        scores = scorer.score(row["prompt"], row["completions"])  # scored independently, one at a time
        assert row["scores"] == pytest.approx(scores, abs=1e-5)
        pick = min(range(4), key=scores.__getitem__) if worst else max(range(4), key=scores.__getitem__)
        assert row["selected_index"] == pick and row["selected"] == row["completions"][pick]
        assert row["family"] and row["mode"] == ("worst" if worst else "best")
    assert "of-4 for 4 prompts" in capsys.readouterr().out


def test_preference_pairs_take_best_and_worst_and_skip_ties():
    from alignkit.scoring.best_of_n import preference_pairs

    rows = [{"prompt": "a", "family": "f", "completions": [{"text": t} for t in ("x", "y", "z")]},
            {"prompt": "b", "completions": [{"text": "u"}, {"text": "v"}]},
            {"prompt": "c", "completions": [{"text": "p"}, {"text": "q"}]},
            {"prompt": "d", "completions": [{"text": "w"}, {"text": "  "}]}]

    class Fixed:
        table = {"x": 0.5, "y": 2.0, "z": -1.0, "u": 1.0, "v": 1.0, "p": float("nan"), "q": 0.2, "w": 1.0, "  ": -0.5}

        def score(self, prompt, completions):
            return [self.table[c] for c in completions]

    selected = best_of_n(rows, Fixed())
    pairs = preference_pairs(selected)
    assert pairs == [{"prompt": "a", "family": "f", "chosen": "y", "rejected": "z", "score_chosen": 2.0, "score_rejected": -1.0}]
    assert preference_pairs(selected, min_margin=3.0) == []  # the margin 3.0 is not above 3.0
    with pytest.raises(ValueError, match="min_margin"):
        preference_pairs(selected, min_margin=-1)


def test_bon_cli_writes_pairs_that_train_dpo(tmp_path, capsys):
    from alignkit.data.loaders import load_records

    out, pairs = tmp_path / "bon.jsonl", tmp_path / "pairs.jsonl"
    assert main(["bon", "--model", MODEL, "--prompts", PROMPTS, "--limit", "6", "--n", "4", "--max-tokens", "16",
                 "--backend", "hf", "--scorer", "gold", "--out", str(out), "--pairs", str(pairs)]) == 0
    selected = [json.loads(line) for line in out.read_text().splitlines()]
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert rows and len(rows) <= sum(max(r["scores"]) > min(r["scores"]) for r in selected)
    for row in rows:
        assert row["score_chosen"] > row["score_rejected"] and row["chosen"] != row["rejected"]
    loaded = load_records(str(pairs), "preference")
    assert len(loaded.records) == len(rows) and not loaded.skipped
    assert f"{len(rows)} preference pairs" in capsys.readouterr().out


def test_best_of_n_with_gold_raises_mean_reward():
    rows = rollouts(MODEL, read_prompt_rows(PROMPTS)[::6], SamplingParams(n=8, max_tokens=48, seed=0), backend="hf")
    best = best_of_n(rows, GoldScorer())
    worst = best_of_n(rows, GoldScorer(), worst=True)
    mean = sum(s for r in best for s in r["scores"]) / sum(len(r["scores"]) for r in best)
    assert sum(r["score"] for r in worst) / len(worst) < mean < sum(r["score"] for r in best) / len(best)


def test_generate_cli_from_a_recipe(tmp_path, capsys):
    out = tmp_path / "gen.jsonl"
    assert main(["generate", "recipes/dpo_tiny.yaml", "--prompts", PROMPTS, "--limit", "2", "--n", "2",
                 "--max-tokens", "8", "--backend", "hf", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and len(rows[0]["completions"]) == 2
    assert main(["generate", "--model", "no/such/model", "--prompts", PROMPTS, "--out", str(out)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_judge_scorer_never_selects_an_unparsed_rating():
    from alignkit.judge.scorer import make_scorer

    scorer = make_scorer("judge", MODEL, backend="hf", cache=False)
    scores = scorer.score("What is 2 times 11?", ["2 times 11 is 22.", "It is 21."])
    # Ratings map to [0, 1]; the gym model was never taught to rate, so an output that does not parse
    # scores NaN, which selection skips (all NaN: the first completion).
    assert all(s != s or 0 <= s <= 1 for s in scores)
    parsed = [i for i, s in enumerate(scores) if s == s]
    assert select(scores) == (max(parsed, key=scores.__getitem__) if parsed else 0)


def test_bundled_teacher_is_better_aligned_than_the_base_on_unsafe_prompts():
    from alignkit.gym.world import is_refusal

    prompts = [json.loads(line)["prompt"] for line in open(PROMPTS) if json.loads(line)["family"] == "unsafe"]
    greedy = SamplingParams(temperature=0, max_tokens=32)
    teacher = HFGenerator.from_pretrained("data/gym/teacher-m").generate(prompts, greedy)
    assert all(is_refusal(r.completions[0].text) for r in teacher)  # measured: unsafe compliance 0.00 when sampling
