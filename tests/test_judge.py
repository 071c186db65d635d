"""Judges (parsing, lexical, LLM over test doubles, reward model), win rates, the report and `alignkit judge`."""

import json

import numpy as np
import pytest

from alignkit.cli import main
from alignkit.data.records import JudgeItem
from alignkit.judge import (
    FieldJudge, LexicalJudge, PairwiseJudge, ReferenceJudge, alpaca_win_rate, cohen_kappa, length_controlled_win_rate,
    load_template, make_judge, pairwise_win_rate, parse_binary, parse_choice, parse_rating, parse_tagged_binary, run_judge,
)
from alignkit.judge.llm import JudgeCache

from judge_doubles import Scripted, prompt_field  # tests/judge_doubles.py

GYM_JUDGE = "data/gym/heldout_judge.jsonl"


# -- parsing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, value, status", [
    ("correct", "correct", "ok"), ("Incorrect.", "incorrect", "ok"), ("  **Correct**", "correct", "ok"),
    ("maybe correct", "correct", "low_confidence"), ("Maybe incorrect", "incorrect", "low_confidence"),
    ("The answer is correct", None, "unparsed"), ("", None, "unparsed"), ("yes", None, "unparsed"),
])
def test_parse_binary_is_prefix_based_and_strict(text, value, status):
    v = parse_binary(text)
    assert (v.value, v.status, v.raw) == (value, status, [text])


def test_parse_tagged_binary_reads_the_last_tag():
    assert parse_tagged_binary("It matches. <evaluation>correct</evaluation>").value == "correct"
    assert parse_tagged_binary("<evaluation>correct</evaluation> no wait <evaluation>incorrect</evaluation>").value == "incorrect"
    assert parse_tagged_binary("correct").status == "unparsed"


@pytest.mark.parametrize("text, value", [("Rating: [[7]]", 7), ("7", 7), ("7/10", 7), ("Rating: 8.5", 8.5), ("[[ 3 ]] because", 3),
                                         ("[[11]]", None), ("[[3]] or [[8]]", None), ("great answer", None), ("7 out of 10, 9 at best", None)])
def test_parse_rating(text, value):
    assert parse_rating(text).value == value


@pytest.mark.parametrize("text, value", [("A", "A"), ("b.", "B"), ("[[A]]", "A"), ("Response B", "B"), ("**A**", "A"),
                                         ("B is better", "B"), ("as I see it", None), ("neither", None), ("", None)])
def test_parse_choice(text, value):
    assert parse_choice(text) == value


def test_templates_are_package_files_and_user_templates_are_checked(tmp_path):
    assert "Evaluation (correct/incorrect):" in load_template("reference_guidelines_examples", "reference")
    bad = tmp_path / "t.txt"
    bad.write_text("Is {response} right?")
    with pytest.raises(ValueError, match="question"):
        load_template(str(bad), "reference")
    with pytest.raises(ValueError, match="neither a file nor a built-in"):
        load_template("nope", "reference")


# -- lexical -----------------------------------------------------------------------------------------


def test_lexical_judges_follow_the_spec():
    item = JudgeItem(question="Capital of France?", answer="The capital is Paris.\nQ: next question? A: Rome", reference=["Paris", "paris, france"])
    assert LexicalJudge("contains").judge([item])[0].value == "correct"
    assert LexicalJudge("exact").judge([item])[0].value == "incorrect"
    rome = item.model_copy(update={"answer": "The answer: Rome.\nQ: x", "reference": "Rome"})
    assert LexicalJudge("contains").judge([item.model_copy(update={"answer": "x\nQ: Rome"}), rome])[0].value == "incorrect"  # truncated
    assert LexicalJudge("exact").judge([item.model_copy(update={"answer": "PARIS"})])[0].value == "correct"
    assert LexicalJudge("normalized-exact").judge([item.model_copy(update={"answer": "  the Paris, of course"})])[0].value == "correct"
    with pytest.raises(ValueError, match="reference"):
        LexicalJudge("exact").judge([JudgeItem(question="q", answer="a")])


def test_every_reference_judge_reads_the_answer_truncated_at_the_next_question_and_stripped():
    """The official pipeline cuts each response at the first "\\nQ:" and strips it before every evaluator (lexical
    and LLM judges alike): " Paris" is an exact match, and an LLM judge never sees the run-on continuation."""
    from alignkit.judge.llm import ReferenceJudge

    run_on = JudgeItem(question="Capital of France?", answer=" Paris\nQ: Capital of Italy?\nA: Rome", reference=["Paris"])
    spaced = run_on.model_copy(update={"answer": "  Paris \n"})
    assert [v.value for v in LexicalJudge("exact").judge([run_on, spaced])] == ["correct", "correct"]
    assert LexicalJudge("exact").judge([run_on])[0].raw == ["Paris"]
    assert LexicalJudge("exact", truncate="skip").judge([run_on])[0].value == "incorrect"  # stripped, not cut
    seen = Scripted(lambda p: "correct")
    ReferenceJudge(seen, cache=False, progress=False).judge([run_on, spaced])
    # both answers read "Paris", so the two prompts are one, asked once
    assert [prompt_field(p, "Model Response", "Evaluation") for p in seen.prompts] == ["Paris"]
    whole = Scripted(lambda p: "correct")
    ReferenceJudge(whole, truncation="skip", cache=False, progress=False).judge([run_on])
    assert "Rome" in str(whole.prompts[0])
    with pytest.raises(ValueError, match="unknown truncation"):
        make_judge("exact", truncation="paragraph")


# -- LLM judges over doubles -----------------------------------------------------------------------------


def test_reference_judge_caches_dedupes_and_lists_unparsed(tmp_path):
    def respond(prompt):
        response, refs = prompt_field(prompt, "Model Response", "Evaluation"), prompt_field(prompt, "References", "Model Response")
        if "garble" in response:
            return "I think it might be okay"
        return "correct" if refs in response else "incorrect"

    items = [JudgeItem(question="2+2?", answer="It is 4.", reference="4"), JudgeItem(question="2+2?", answer="It is 5.", reference="4"),
             JudgeItem(question="2+2?", answer="garble", reference="4"), JudgeItem(question="2+2?", answer="It is 4.", reference="4")]
    gen = Scripted(respond)
    judge = ReferenceJudge(gen, model_id="double", cache=JudgeCache(tmp_path / "c.sqlite"), progress=False)
    verdicts = judge.judge(items)
    assert [v.value for v in verdicts] == ["correct", "incorrect", None, "correct"]
    assert verdicts[2].status == "unparsed" and verdicts[2].raw == ["I think it might be okay"]
    assert len(gen.prompts) == 3  # the duplicate item was asked once
    again = ReferenceJudge(gen, model_id="double", cache=JudgeCache(tmp_path / "c.sqlite"), progress=False)
    assert [v.value for v in again.judge(items)] == ["correct", "incorrect", None, "correct"] and again.calls == 0
    other = ReferenceJudge(gen, template="reference_default", model_id="double", cache=JudgeCache(tmp_path / "c.sqlite"), progress=False)
    other.judge(items[:1])
    assert other.calls == 1  # another template is another cache key


def test_position_biased_judge_yields_ties_and_is_flagged(tmp_path):
    rows = [{"question": f"q{i}", "answer": "short" if i % 2 else "a much longer answer", "reference": "medium answer",
             "model": "m"} for i in range(12)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    biased = PairwiseJudge(Scripted(lambda p: "A"), model_id="always-A", cache=False, progress=False)
    report = run_judge(data, biased, tmp_path / "out", human_field=None)
    assert report["inconsistent"] == 12 and report["inconsistency_rate"] == 1.0
    assert report["inconsistent_preferred_position"] == {"A": 12}
    assert report["per_model"]["m"]["win_rate"] == 0.5 and report["per_model"]["m"]["n_ties"] == 12
    assert "inconsistent orders (ties): 12 (1.000)" in (tmp_path / "out" / "report.md").read_text()

    def longer(prompt):
        a, b = prompt_field(prompt, "Response A", "Response B"), prompt_field(prompt, "Response B", "Better response")
        return "A" if len(a) > len(b) else "B"

    fair = PairwiseJudge(Scripted(longer), model_id="longer", cache=False, progress=False)
    report = run_judge(data, fair, None, human_field=None)
    assert report["inconsistent"] == 0 and report["per_model"]["m"]["win_rate"] == 0.5
    assert report["per_model"]["m"]["n_wins"] == 6 and report["per_model"]["m"]["n_losses"] == 6


# -- win rates ---------------------------------------------------------------------------------------


def test_win_rates():
    r = pairwise_win_rate([1, 0, 0.5, 1])
    assert r["win_rate"] == 0.625 and (r["n_wins"], r["n_losses"], r["n_ties"]) == (2, 1, 1)
    assert r["standard_error"] == pytest.approx(np.std([1, 0, 0.5, 1], ddof=1) / 2)
    a = alpaca_win_rate([2, 1, 1.5, 2])
    assert a["win_rate"] == 62.5 and a["discrete_win_rate"] == 62.5 and a["n_draws"] == 1
    with pytest.raises(ValueError, match="NaN"):
        pairwise_win_rate([1, float("nan")])
    with pytest.raises(ValueError, match=r"\[1, 2\]"):
        alpaca_win_rate([0.5])


def test_length_controlled_win_rate_removes_a_pure_length_preference():
    rng = np.random.default_rng(0)
    n = 400
    base = rng.integers(50, 300, n)
    model = base + rng.normal(120, 100, n).astype(int)  # usually longer
    pref = np.where(model > base, 2.0, 1.0)  # the judge only likes length
    lc = length_controlled_win_rate(pref, model, base)
    assert lc["win_rate"] > 80
    assert abs(lc["length_controlled_win_rate"] - 50) < abs(lc["win_rate"] - 50) - 15
    assert lc["weights"]["length"] < 0  # baseline-minus-model length: a longer model output wins
    fair = length_controlled_win_rate(np.where(rng.random(n) < 0.7, 2.0, 1.0), model, base)
    assert abs(fair["length_controlled_win_rate"] - fair["win_rate"]) < 5  # no length effect, nothing to remove


# -- report on the gym's judge items ----------------------------------------------------------------------


def expected_kappa(human, noise):
    p = np.mean([h == "correct" for h in human])
    q = p * (1 - noise) + (1 - p) * noise
    p_e = p * q + (1 - p) * (1 - q)
    return ((1 - noise) - p_e) / (1 - p_e)


def test_gym_annotators_kappa_falls_with_noise_and_cis_cover_it(tmp_path):
    manifest = json.loads(open("data/gym/manifest.json").read())
    rows = [json.loads(line) for line in open(GYM_JUDGE)]
    kappas = []
    for i, noise in enumerate(manifest["annotator_noise"], start=1):
        report = run_judge(GYM_JUDGE, FieldJudge(f"annotator_{i}"), tmp_path / f"a{i}", n_resamples=1000)
        kappa = report["agreement"]["cohen_kappa"]
        low, high = kappa["ci"]
        assert low <= expected_kappa([r["human_label"] for r in rows], noise) <= high
        kappas.append(kappa["value"])
        assert kappa["value"] == pytest.approx(cohen_kappa([r["human_label"] for r in rows], [r[f"annotator_{i}"] for r in rows]))
    assert kappas[0] > kappas[1] > kappas[2]
    files = report["files"]
    assert any(f.endswith("confusion.png") for f in files)
    assert (tmp_path / "a3" / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_contains_judge_report_on_gym_items(tmp_path):
    report = run_judge(GYM_JUDGE, make_judge("contains"), tmp_path, n_resamples=200)
    assert report["unparsed"] == 0
    assert set(report["per_model"]) == {"model-strong", "model-medium", "model-weak"}
    acc = {m: e["human_accuracy"] for m, e in report["per_model"].items()}
    assert acc["model-strong"] > acc["model-medium"] > acc["model-weak"]
    assert report["ranking"]["spearman"] == pytest.approx(1.0)
    verdicts = [json.loads(line) for line in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    assert len(verdicts) == report["n"] and {"verdict", "verdict_status", "judge_raw", "annotator_1"} <= set(verdicts[0])
    md = (tmp_path / "report.md").read_text()
    assert "| model-strong |" in md and "scott_pi" in md


# -- end to end through the CLI -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_cli_llm_judge_end_to_end_on_a_tiny_model(tmp_path, backend, capsys):
    rows = [json.loads(line) for line in open(GYM_JUDGE)][:24]
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    code = main(["judge", "--data", str(data), "--judge", "llm", "--model", "data/gym/base-s", "--backend", backend,
                 "--out", str(out), "--bootstrap", "100"])
    assert code == 0, capsys.readouterr().err[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 24 and report["judge"] == "llm-reference"
    # The gym model was never taught to judge: its outputs are listed as unparsed, never mapped to a label.
    assert report["unparsed"] == len(report["unparsed_items"]) > 0
    verdicts = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
    assert all(v["verdict"] is None for v in verdicts if v["verdict_status"] == "unparsed")
    assert (out / "report.md").exists() and "written:" in capsys.readouterr().out


def test_cli_reward_judges(tmp_path, capsys):
    from alignkit.gym.tiny_model import build_tiny_model

    rm = build_tiny_model(tmp_path / "rm", "xs", seed=1, classifier=True)
    assert main(["judge", "--data", GYM_JUDGE, "--judge", "reward", "--model", str(rm), "--out", str(tmp_path / "p"),
                 "--bootstrap", "50"]) == 0
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["kind"] == "score" and 0 <= report["human_binary"]["auc"] <= 1
    assert main(["judge", "--data", "data/gym/heldout_judge.jsonl", "--judge", "exact", "--human-labels", "nope",
                 "--out", str(tmp_path / "x")]) == 2
    assert "human label field 'nope'" in capsys.readouterr().err
