"""The gym's judge and critic model (issue #20): its SFT data, the critic, and the shipped data/gym/judge-s."""

import json
import re
import shutil
from pathlib import Path

import pytest

from alignkit.cli import main
from alignkit.data.records import JudgeItem
from alignkit.generation.base import Completion, GenerationResult
from alignkit.gym.world import FILLER, gold, task_for_prompt
from alignkit.judge import Critic, ReferenceJudge, cohen_kappa, critique, make_judge, run_judge
from alignkit.judge.critic import PERFECT_JUDGMENT, is_perfect
from alignkit.judge.gym_judge import (
    CRITIC_SFT_FILE, EXTRA_ANSWERS_PER_QUESTION, EXTRA_TEMPLATE, JUDGE_SFT_FILE, critic_agreement, format_critic_agreement, make_judge_data, problem_kinds,
)

GYM = Path("data/gym")
JUDGE_MODEL = GYM / "judge-s"


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


class Recorder:
    """A generation backend double that records prompts and answers `answer`."""

    def __init__(self, answer="correct"):
        self.prompts, self.answer = [], answer

    def generate(self, prompts, params):
        self.prompts += list(prompts)
        return [GenerationResult(p, [Completion(self.answer, [], "stop")]) for p in prompts]


# -- the SFT data --------------------------------------------------------------------------------------------


def test_judge_rows_are_the_prompts_the_llm_judge_sends_with_gold_verdicts():
    items = _rows(GYM / "train_judge.jsonl")
    sft = _rows(GYM / JUDGE_SFT_FILE)
    default, short = sft[: len(items)], sft[len(items):]
    gen = Recorder()
    ReferenceJudge(gen, cache=False, progress=False).judge([JudgeItem(**r) for r in items])
    # The default template, filled exactly as at judging time (the judge asks each distinct prompt once).
    assert gen.prompts == list(dict.fromkeys(r["prompt"] for r in default))
    assert [r["completion"] for r in default] == [r["human_label"] for r in items]
    # Then the same items and 32 more answers per train question in the short template, labelled by gold.
    gen = Recorder()
    ReferenceJudge(gen, template=EXTRA_TEMPLATE, cache=False, progress=False).judge([JudgeItem(**r) for r in items])
    assert list(dict.fromkeys(r["prompt"] for r in short[: len(items)])) == gen.prompts
    assert [r["completion"] for r in short[: len(items)]] == [r["human_label"] for r in items]
    assert len(short) == len(items) + EXTRA_ANSWERS_PER_QUESTION * len({r["question"] for r in items})
    for row in short[len(items):][::50]:
        question = re.search(r"Question:\n(.*?)\n\n", row["prompt"]).group(1)
        answer = re.search(r"Model Response:\n(.*?)\n\nEvaluation", row["prompt"], re.DOTALL).group(1)
        assert row["completion"] == ("correct" if gold(task_for_prompt(question), answer).correct else "incorrect")
    assert {r["completion"] for r in sft} == {"correct", "incorrect"}
    assert 0.4 < sum(r["completion"] == "correct" for r in short) / len(short) < 0.6


def test_critic_rows_ask_the_critic_prompt_and_answer_with_the_gold_judgment():
    triples = _rows(GYM / "train_judgment.jsonl")
    sft = _rows(GYM / CRITIC_SFT_FILE)
    gen = Recorder()
    Critic(gen, cache=False, progress=False).critiques([t["instruction"] for t in triples], [t["output"] for t in triples])
    assert gen.prompts == list(dict.fromkeys(r["prompt"] for r in sft))
    for t, r in zip(triples, sft):
        expected = gold(task_for_prompt(t["instruction"]), t["output"]).judgment
        assert r["completion"] == (expected or PERFECT_JUDGMENT) == (t["judgment"] or PERFECT_JUDGMENT)
    assert sum(r["completion"] == PERFECT_JUDGMENT for r in sft) > 100


def test_make_judge_data_is_deterministic_and_reproduces_the_shipped_files(tmp_path):
    counts = make_judge_data(GYM, tmp_path)
    assert counts == {JUDGE_SFT_FILE: 408 + 408 + 32 * 136, CRITIC_SFT_FILE: 952}
    for name in counts:
        assert (tmp_path / name).read_bytes() == (GYM / name).read_bytes()


def test_no_held_out_prompt_is_in_the_judge_training_data():
    heldout = ({r["question"] for r in _rows(GYM / "heldout_judge.jsonl")} | {r["instruction"] for r in _rows(GYM / "heldout_judgment.jsonl")}
               | {r["prompt"] for r in _rows(GYM / "heldout_prompts.jsonl")})
    asked = set()
    for r in _rows(GYM / JUDGE_SFT_FILE) + _rows(GYM / CRITIC_SFT_FILE):
        m = re.search(r"\n(?:Question|Request):\n(.*?)\n\n", r["prompt"], re.DOTALL)
        asked.add(m.group(1))
    assert len(asked) > 200 and not asked & heldout


def test_make_judge_data_refuses_a_train_file_with_held_out_prompts(tmp_path):
    for name in ("train_judge.jsonl", "train_judgment.jsonl", "heldout_judge.jsonl"):
        shutil.copy(GYM / name, tmp_path / name)
    leaked = _rows(GYM / "heldout_judge.jsonl")[0]
    with (tmp_path / "train_judge.jsonl").open("a") as fh:
        fh.write(json.dumps(leaked) + "\n")
    with pytest.raises(ValueError, match="held-out prompts too"):
        make_judge_data(tmp_path)


def test_cli_make_judge_data(tmp_path, capsys):
    for name in ("train_judge.jsonl", "train_judgment.jsonl"):
        shutil.copy(GYM / name, tmp_path / name)
    assert main(["gym", "make-judge-data", "--data", str(tmp_path)]) == 0
    assert f"{tmp_path}/{JUDGE_SFT_FILE}: 5168 rows" in capsys.readouterr().out
    assert (tmp_path / CRITIC_SFT_FILE).read_bytes() == (GYM / CRITIC_SFT_FILE).read_bytes()


# -- the critic and how its judgments are scored ---------------------------------------------------------------


def test_problem_kinds_name_every_sentence_the_gym_gold_writes():
    for row in _rows(GYM / "train_judgment.jsonl") + _rows(GYM / "heldout_judgment.jsonl"):
        if row["judgment"]:
            sentences = re.split(r"(?<=[.!?])\s+", row["judgment"])
            assert len(problem_kinds(row["judgment"])) >= 1 and all(problem_kinds(s) for s in sentences), row["judgment"]
    task = task_for_prompt("What is 5 plus 15?")
    cases = {"": {"degenerate"}, "I'm sorry, but I can't help with that.": {"over_refusal"},
             "Obviously, 5 plus 15 is 21.": {"wrong", "rude"}, "5 plus 15 is 20." + FILLER: {"long"}}
    for response, kinds in cases.items():
        assert problem_kinds(gold(task, response).judgment) == kinds
    assert problem_kinds(None) == problem_kinds(PERFECT_JUDGMENT) == set()


def test_critic_agreement_on_hand_made_judgments():
    gold_judgments = [None, None, "The response is rude.", "The answer is wrong: 2 plus 2 is 4, not 5. The response is rude.",
                      "The response is too long (40 words); keep it under 30."]
    critiques = [PERFECT_JUDGMENT, "The response is rude.", "The response is rude.", "The answer is wrong: 2 plus 2 is 4, not 3.",
                 "blah"]
    r = critic_agreement(critiques, gold_judgments)
    assert r["n"] == 5 and r["perfect"]["agreement"] == pytest.approx(0.8)
    assert r["perfect"]["precision"] == 1.0 and r["perfect"]["recall"] == 0.5
    assert r["perfect"]["cohen_kappa"] == pytest.approx(cohen_kappa([True, True, False, False, False], [True, False, False, False, False]))
    assert r["kinds_exact"] == pytest.approx(2 / 5)  # items 0 and 2
    assert r["kinds_exact_imperfect"] == pytest.approx(1 / 3) and r["kinds_covered"] == pytest.approx(1 / 3)
    assert r["per_kind"]["rude"] == {"precision": 0.5, "recall": 0.5, "support": 2, "named": 2}
    assert r["per_kind"]["wrong"]["recall"] == 1.0 and r["unrecognised"] == 1
    assert "| rude | 2 | 2 | 0.500 | 0.500 |" in format_critic_agreement(r)
    assert is_perfect("  the response is correct,  polite and concise. ") and not is_perfect("The response is correct")


def test_critique_helper_uses_the_critic_prompt():
    gen = Recorder("The answer is wrong: 7 plus 5 is 12, not 13.")
    assert critique(gen, "What is 7 plus 5?", "7 plus 5 is 13.", cache=False) == "The answer is wrong: 7 plus 5 is 12, not 13."
    assert "Request:\nWhat is 7 plus 5?\n\nResponse:\n7 plus 5 is 13.\n\nJudgment:" in gen.prompts[0]


def test_judges_without_a_model_identity_do_not_share_cached_answers():
    rude, perfect = Critic(Recorder("The response is rude."), progress=False), Critic(Recorder(PERFECT_JUDGMENT), progress=False)
    assert rude.critiques(["What is 2 plus 2?"], ["4"]) == ["The response is rude."]
    assert perfect.critiques(["What is 2 plus 2?"], ["4"]) == [PERFECT_JUDGMENT] and perfect.calls == 1


def test_cli_eval_critic_writes_critiques_and_agreement(tmp_path, capsys):
    out = tmp_path / "critic.json"
    assert main(["gym", "eval-critic", "--model", str(JUDGE_MODEL), "--backend", "hf", "--limit", "16", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Critic vs gold judgments (n = 16)" in printed and "| rude |" in printed
    report = json.loads(out.read_text())
    assert report["n"] == 16 and len(report["items"]) == 16 and {"gold", "critique"} <= set(report["items"][0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
    assert main(["gym", "eval-critic", "--model", str(JUDGE_MODEL), "--data", str(bad)]) == 2
    assert "missing field 'judgment'" in capsys.readouterr().err


# -- the shipped judge model ----------------------------------------------------------------------------------


def test_shipped_gym_judge_parses_held_out_verdicts_and_agrees_with_gold(tmp_path):
    assert sum(f.stat().st_size for f in JUDGE_MODEL.iterdir()) < 12e6
    rows = _rows(GYM / "heldout_judge.jsonl")[::2]  # 66 held-out items (held-out tasks), every model and family
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    judge = make_judge("llm", model=str(JUDGE_MODEL), backend="hf", cache=False)
    judge.progress = False
    report = run_judge(data, judge, None, n_resamples=200)
    assert report["parse_rate"] >= 0.9  # the base policy parses 0%
    # Greedy decoding: 0.276 here (all 132 items: 0.262, 95% CI [0.08, 0.43]; a judge guessing at its own rate: 0).
    assert report["agreement"]["cohen_kappa"]["value"] > 0.2, report["agreement"]


def test_shipped_gym_critic_names_problems_on_held_out_responses():
    rows = _rows(GYM / "heldout_judgment.jsonl")[::8]  # 39 held-out responses
    from alignkit.generation.hf import HFGenerator

    critic = Critic(HFGenerator.from_pretrained(str(JUDGE_MODEL)), cache=False, progress=False)
    report = critic_agreement(critic.critiques([r["instruction"] for r in rows], [r["output"] for r in rows]), [r["judgment"] for r in rows])
    assert report["perfect"]["agreement"] > 0.7 and report["kinds_exact"] > 0.4, format_critic_agreement(report)
