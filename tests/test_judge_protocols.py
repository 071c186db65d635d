"""Judge options the papers' protocols need (issue #19): templates checked before a model loads, MT-Bench ties and
order rules, low-confidence and unparsed conventions, Gwet's AC1, ranking stability, LC win rate under sklearn
metadata routing."""

import json

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from alignkit.cli import main
from alignkit.judge import (
    PairwiseJudge, Verdict, binary_report, gwet_ac1, length_controlled_win_rate, load_template, make_judge,
    parse_bracketed_choice, ranking_correlation, ranking_stability, run_judge,
)
from alignkit.judge.llm import pair_verdict

from judge_doubles import Scripted, prompt_field  # tests/judge_doubles.py


# -- 1. templates are checked before any model loads -------------------------------------------------------------


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a judge model was loaded before the template was checked")

    monkeypatch.setattr("alignkit.generation.backends.load_generator", refuse)


def test_a_bad_template_fails_before_the_judge_model_loads(tmp_path, no_model_load, capsys):
    protocol = tmp_path / "protocol.txt"
    protocol.write_text("Question: {question}\nModel Response: {response}\nEvaluation (correct/incorrect):")
    with pytest.raises(ValueError, match=r"needs the placeholder \{references\} \(it has \{question\}, \{response\}\)"):
        make_judge("llm", model="data/gym/base-s", backend="hf", template=str(protocol))
    assert main(["judge", "--data", "data/gym/heldout_judge.jsonl", "--judge", "llm", "--model", "data/gym/base-s",
                 "--template", str(protocol), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "{references}" in err and "protocol.txt" in err and "Traceback" not in err
    pair = tmp_path / "pair.txt"
    pair.write_text("Which is better? {question} [[A]] {response_a} [[B]] {response_b} [[C]] {answer}")
    assert main(["judge", "--data", "data/gym/heldout_judge.jsonl", "--judge", "pairwise", "--model", "data/gym/base-s",
                 "--template", str(pair), "--human-labels", "none", "--out", str(tmp_path / "out")]) == 2
    assert "unknown placeholder {answer}" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ('Q: {question}\nRefs: {references}\nA: {response}\nAnswer as JSON: {"verdict": "correct"}', r'unknown placeholder \{"verdict"\}'),
    ("Q: {question} {references} {response} }", "literal brace"),
    ("Q: {question} {references} {response} {}", r"unknown placeholder \{\}"),
])
def test_pasted_protocol_texts_with_stray_braces_are_named(tmp_path, text, message):
    path = tmp_path / "t.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_template(str(path), "reference")
    path.write_text(text.replace('{"verdict": "correct"}', '{{"verdict": "correct"}}'))
    if "verdict" in text:  # doubled braces are literal text and fill as single ones
        assert load_template(str(path), "reference").format(question="q", references="r", response="a").endswith('{"verdict": "correct"}')


# -- 2. MT-Bench ties and the order rule ------------------------------------------------------------------------


@pytest.mark.parametrize("text, choice", [
    ("[[A]]", "A"), ("Both are fine. [[C]]", "C"), ("Explanation... Final verdict: [[ B ]]", "B"), ("[[c]]", "C"),
    ("A", None), ("[[A]] or maybe [[B]]", None), ("[[A]] ... so [[A]]", "A"), ("[[D]]", None), ("", None),
])
def test_parse_bracketed_choice(text, choice):
    assert parse_bracketed_choice(text) == choice


@pytest.mark.parametrize("first, second, both, average, status", [
    ("[[A]]", "[[B]]", 1.0, 1.0, "ok"),          # the candidate wins in both orders
    ("[[B]]", "[[A]]", 0.0, 0.0, "ok"),          # loses in both
    ("[[C]]", "[[C]]", 0.5, 0.5, "ok"),          # a tie in both: a judged tie
    ("[[A]]", "[[C]]", 0.5, 0.75, "inconsistent"),  # wins once, tie once
    ("[[A]]", "[[A]]", 0.5, 0.5, "inconsistent"),   # always the first position
    ("[[C]]", "[[A]]", 0.5, 0.25, "inconsistent"),
])
def test_pair_rules_on_hand_made_verdicts(first, second, both, average, status):
    b = pair_verdict(first, second, "both", parse_bracketed_choice)
    a = pair_verdict(first, second, "average", parse_bracketed_choice)
    assert (b.value, b.status) == (both, status) and (a.value, a.status) == (average, status)
    assert b.detail.get("tie", False) == (first == second == "[[C]]")
    assert ("preferred_position" in b.detail) == (first == second != "[[C]]")
    assert pair_verdict("[[A]]", "sure", "both", parse_bracketed_choice).status == "unparsed"


def _pairs_file(tmp_path, kinds):
    rows = [{"question": f"q{i}", "answer": f"candidate-{k}", "reference": f"baseline-{k}", "model": "m",
             "human_label": {"win": "A", "lose": "B", "tie": "tie", "half": "A"}[k]} for i, k in enumerate(kinds)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _tie_judge(prompt):
    """A judge double for the tie template: 'win' candidates always win, 'lose' always lose, 'tie' are ties,
    and 'half' candidates win when shown first but are a tie when shown second."""
    a, b = prompt_field(prompt, "Response A", "Response B"), prompt_field(prompt, "Response B", "Verdict")
    cand, first = (a, True) if a.startswith("candidate") else (b, False)
    kind = cand.split("-")[1]
    if kind == "tie" or (kind == "half" and not first):
        return "Equally good. [[C]]"
    wins = kind in ("win", "half")
    return "[[A]]" if wins == first else "[[B]]"


@pytest.mark.parametrize("rule, win_rate, wins, ties, losses", [("both", 0.5, 2, 4, 2), ("average", 0.5625, 4, 2, 2)])
def test_tie_template_reports_wins_ties_and_losses(tmp_path, rule, win_rate, wins, ties, losses):
    data = _pairs_file(tmp_path, ["win", "win", "lose", "lose", "tie", "tie", "half", "half"])
    judge = PairwiseJudge(Scripted(_tie_judge), template="pairwise_tie", pair_rule=rule, model_id="double", cache=False, progress=False)
    assert judge.ties
    report = run_judge(data, judge, tmp_path / rule, n_resamples=50)
    m = report["per_model"]["m"]
    assert (m["n_wins"], m["n_ties"], m["n_losses"]) == (wins, ties, losses)
    assert m["win_rate"] == pytest.approx(win_rate)  # ties count ½; under "average" a win + a tie is 0.75
    assert (m["win_share"], m["tie_share"], m["loss_share"]) == (wins / 8, ties / 8, losses / 8)
    assert (m["ties_judged"], m["ties_inconsistent"]) == (2, 2 if rule == "both" else 0)
    assert report["pair_rule"] == rule and report["inconsistent"] == 2
    md = (tmp_path / rule / "report.md").read_text()
    assert f"rule `{rule}`" in md and f"| {wins} | {ties} (2 / {2 if rule == 'both' else 0}) | {losses} |" in md


def test_pair_rule_is_validated_before_the_model_loads(no_model_load, capsys):
    with pytest.raises(ValueError, match="pair_rule must be one of both, average"):
        make_judge("pairwise", model="data/gym/base-s", pair_rule="first")


# -- 3./4. low-confidence and unparsed conventions on hand-made verdicts --------------------------------------------


def _verdicts():
    """Ten items, two models. Human labels and verdicts: 6 confident (5 right), 2 hedged, 2 unparsed."""
    human = ["correct", "correct", "incorrect", "incorrect", "correct", "incorrect", "correct", "incorrect", "correct", "incorrect"]
    verdicts = [Verdict("correct", "ok"), Verdict("correct", "ok"), Verdict("incorrect", "ok"), Verdict("correct", "ok"),
                Verdict("correct", "ok"), Verdict("incorrect", "ok"),
                Verdict("correct", "low_confidence"), Verdict("correct", "low_confidence"),
                Verdict(None, "unparsed"), Verdict(None, "unparsed")]
    rows = [{"human_label": h, "model": "a" if i < 5 else "b"} for i, h in enumerate(human)]
    return human, verdicts, rows


def test_low_confidence_separate_codes_a_hedged_verdict_zero():
    human, verdicts, rows = _verdicts()
    report = binary_report(verdicts, rows, "human_label", n_resamples=50, low_confidence="separate")
    assert report["conventions"] == {"low_confidence": "separate", "unparsed": "incorrect", "human_low_confidence": "separate"}
    assert (report["unparsed"], report["low_confidence"], report["no_verdict"], report["parse_rate"]) == (2, 2, 4, 0.8)
    # the alternative coding: judge ±1 only when confident, 0 for unparsed or hedged
    code = {"correct": 1, "incorrect": -1}
    judge_codes = [code[v.value] if v.status == "ok" else 0 for v in verdicts]
    assert report["agreement"]["cohen_kappa"]["value"] == pytest.approx(cohen_kappa_score([code[h] for h in human], judge_codes))
    assert report["confusion"]["matrix"] == [[3, 0], [1, 2]]  # confident verdicts only


def test_by_default_a_hedged_verdict_keeps_its_label_as_the_official_code_codes_it():
    """Official `collect_results`: a judge column is ±1 when the verdict parsed (hedged or not), 0 when it did not."""
    human, verdicts, rows = _verdicts()
    report = binary_report(verdicts, rows, "human_label", n_resamples=50)
    assert report["conventions"]["low_confidence"] == "fold" and report["no_verdict"] == 2
    code = {"correct": 1, "incorrect": -1}
    judge_codes = [code[v.value] if v.parsed else 0 for v in verdicts]
    assert report["agreement"]["cohen_kappa"]["value"] == pytest.approx(cohen_kappa_score([code[h] for h in human], judge_codes))
    assert report["confusion"]["matrix"] == [[4, 0], [2, 2]]  # the hedged "maybe correct"s are "correct" verdicts


def test_a_hedged_human_label_is_coded_zero_as_the_official_code_does():
    """Official `collect_results`: a human column is 0 when the human was not confident; κ as sklearn's on the codes."""
    human, verdicts, rows = _verdicts()
    hedged = {0: "maybe correct", 3: "Maybe Incorrect", 8: "maybe incorrect"}
    for i, label in hedged.items():
        rows[i]["human_label"] = label
    report = binary_report(verdicts, rows, "human_label", n_resamples=50)
    assert report["human_low_confidence"] == 3
    code = {"correct": 1, "incorrect": -1}
    human_codes = [0 if i in hedged else code[h] for i, h in enumerate(human)]
    judge_codes = [code[v.value] if v.parsed else 0 for v in verdicts]
    assert report["agreement"]["cohen_kappa"]["value"] == pytest.approx(cohen_kappa_score(human_codes, judge_codes))
    assert report["agreement"]["percent_agreement"]["value"] == pytest.approx(np.mean(np.equal(human_codes, judge_codes)))
    # human accuracy counts a hedged label by its label (the official score adds the human's verdict)
    assert report["per_model"]["a"]["human_accuracy"] == pytest.approx(3 / 5)
    # the confusion matrix needs correct/incorrect on both sides: items 0, 3, 8 (hedged human) and 8, 9 (unparsed) are out
    assert sum(map(sum, report["confusion"]["matrix"])) == 6
    folded = binary_report(verdicts, rows, "human_label", n_resamples=50, human_low_confidence="fold")
    folded_labels = [hedged[i].lower().removeprefix("maybe ") if i in hedged else h for i, h in enumerate(human)]
    assert folded["agreement"]["cohen_kappa"]["value"] == pytest.approx(
        cohen_kappa_score([code[h] for h in folded_labels], judge_codes))


def test_unparsed_counted_as_incorrect_or_excluded_both_reported():
    human, verdicts, rows = _verdicts()
    for unparsed in ("incorrect", "exclude"):
        r = binary_report(verdicts, rows, "human_label", n_resamples=50, unparsed=unparsed, low_confidence="separate")
        a, b = r["per_model"]["a"], r["per_model"]["b"]
        # hedged verdicts as no verdict: model a: 5 confident verdicts, 4 say correct; model b: 1 confident "incorrect", 4 no verdict.
        assert a["judge_accuracy_conventions"] == {"unparsed_incorrect": 0.8, "parsed_only": 0.8}
        assert b["judge_accuracy_conventions"] == {"unparsed_incorrect": 0.0, "parsed_only": 0.0}
        assert r["accuracy"]["unparsed_incorrect"]["value"] == pytest.approx(0.7)  # 5 right + the 2 no-verdicts on "incorrect" items
        assert r["accuracy"]["parsed_only"]["value"] == pytest.approx(5 / 6) and r["accuracy"]["parsed_only"]["n"] == 6
        assert r["accuracy"]["unparsed_incorrect"]["ci"] and r["accuracy"]["parsed_only"]["ci"]
        assert r["accuracy"]["headline"] == ("unparsed_incorrect" if unparsed == "incorrect" else "parsed_only")
    folded = binary_report(verdicts, rows, "human_label", n_resamples=50, low_confidence="fold", unparsed="exclude")
    assert folded["per_model"]["b"]["judge_accuracy"] == pytest.approx(2 / 3)  # two hedged "correct" + one "incorrect"
    assert binary_report(verdicts, rows, "human_label", n_resamples=50, low_confidence="fold")["per_model"]["b"]["judge_accuracy"] == 0.4


def test_conventions_reach_the_markdown_and_the_cli(tmp_path, capsys):
    rows = [json.loads(line) for line in open("data/gym/heldout_judge.jsonl")][:30]
    for i, r in enumerate(rows):
        r["said"] = ["nonsense", r["human_label"], "correct"][i % 3]  # a third of the verdicts do not parse
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["judge", "--data", str(data), "--judge", "field", "--field", "said", "--unparsed", "exclude",
                 "--low-confidence", "fold", "--bootstrap", "50", "--out", str(tmp_path / "o")]) == 0
    md = capsys.readouterr().out
    assert "low-confidence verdicts keep their label; judge accuracy excludes no verdict" in md
    assert "| accuracy (parsed only) (headline), n = 20 |" in md and "| accuracy (no verdict = incorrect), n = 30 |" in md
    assert "| gwet_ac1 |" in md and "parse rate: 0.667" in md
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["conventions"] == {"low_confidence": "fold", "unparsed": "exclude", "human_low_confidence": "separate"}
    assert main(["judge", "--data", str(data), "--judge", "field", "--field", "said", "--bootstrap", "50",
                 "--out", str(tmp_path / "d")]) == 0
    default = json.loads((tmp_path / "d" / "report.json").read_text())["conventions"]
    assert default == {"low_confidence": "fold", "unparsed": "incorrect", "human_low_confidence": "separate"}
    with pytest.raises(SystemExit):  # argparse rejects an unknown convention (exit 2) before anything runs
        main(["judge", "--data", str(data), "--judge", "exact", "--unparsed", "drop", "--out", str(tmp_path / "o")])


# -- 5. LC win rate independent of scikit-learn's metadata routing -------------------------------------------------


def test_length_controlled_win_rate_with_metadata_routing_on():
    import sklearn

    rng = np.random.default_rng(1)
    base = rng.integers(50, 300, 200)
    model = base + rng.normal(100, 100, 200).astype(int)
    pref = np.where(rng.random(200) < 0.2, 1.5, np.where(rng.random(200) < 0.6 + 0.2 * (model > base), 2.0, 1.0))
    expected = length_controlled_win_rate(pref, model, base)
    before = sklearn.get_config()["enable_metadata_routing"]
    sklearn.set_config(enable_metadata_routing=True)  # what alpaca_eval does process-wide
    try:
        got = length_controlled_win_rate(pref, model, base)
        assert sklearn.get_config()["enable_metadata_routing"] is True  # the global setting is left as it was
    finally:
        sklearn.set_config(enable_metadata_routing=before)
    assert 55 < got["length_controlled_win_rate"] == pytest.approx(expected["length_controlled_win_rate"])
    assert got["weights"] == pytest.approx(expected["weights"])


# -- 6. Gwet's AC1 and ranking stability ------------------------------------------------------------------------------


def test_gwet_ac1_by_hand():
    # 10 items: both "yes" 6, both "no" 1, yes/no 2, no/yes 1. p_a = 0.7; pooled yes = (8 + 7) / 20 = 0.75;
    # p_e = 2 * 0.75 * 0.25 / (2 - 1) = 0.375; AC1 = (0.7 - 0.375) / 0.625 = 0.52.
    a = ["yes"] * 6 + ["no"] + ["yes"] * 2 + ["no"]
    b = ["yes"] * 6 + ["no"] + ["no"] * 2 + ["yes"]
    assert gwet_ac1(a, b) == pytest.approx(0.52)
    # A third, unused category changes q: p_e = (0.75*0.25 + 0.25*0.75 + 0) / 2 = 0.1875.
    assert gwet_ac1(a, b, categories=["yes", "no", "maybe"]) == pytest.approx((0.7 - 0.1875) / (1 - 0.1875))
    # The "kappa paradox": one dominant category drives κ to 0 while AC1 stays near the raw agreement.
    a, b = ["c"] * 18 + ["i", "c"], ["c"] * 18 + ["c", "i"]
    # p_o = 0.9; κ's p_e = 0.95² + 0.05² = 0.905; AC1's p_e = 2 · 0.95 · 0.05 = 0.095.
    assert cohen_kappa_score(a, b) == pytest.approx(-1 / 19) and gwet_ac1(a, b) == pytest.approx(0.805 / 0.905)
    assert gwet_ac1(["c"] * 5, ["c"] * 5, categories=["c", "i"]) == 1.0
    with pytest.raises(ValueError, match="fewer than 2 categories"):
        gwet_ac1(["c"] * 5, ["c"] * 5)
    with pytest.raises(ValueError, match="not in the given label list"):
        gwet_ac1(["c", "x"], ["c", "c"], categories=["c", "i"])


# irrCAC 0.4.4 (`CAC(pd.DataFrame({"a": a, "b": b})).gwet()["est"]["coefficient_value"]`, which rounds to 5 decimals)
# on these seeded inputs; irrCAC pins scipy==1.12 and pandas<3, which conflict with constraints.txt, so it is not a
# dev dependency: the Makefile installs it with --no-deps, and the live comparison below runs.
IRRCAC_AC1 = {(0, 2, 0.3): 0.74681, (1, 3, 0.5): 0.47528, (2, 2, 0.1): 0.90659, (3, 4, 0.6): 0.38235}


def _seeded_pair(seed, k, noise, n=300):
    rng = np.random.default_rng(seed)
    a = rng.choice(["c", "i", "m", "x"][:k], n, p=None if k != 2 else [0.8, 0.2])
    b = np.where(rng.random(n) < noise, rng.choice(["c", "i", "m", "x"][:k], n), a)
    return a.tolist(), b.tolist()


@pytest.mark.parametrize("key", sorted(IRRCAC_AC1))
def test_gwet_ac1_matches_recorded_irrcac_values(key):
    assert gwet_ac1(*_seeded_pair(*key)) == pytest.approx(IRRCAC_AC1[key], abs=1e-5)


@pytest.mark.parametrize("key", sorted(IRRCAC_AC1))
def test_gwet_ac1_matches_irrcac_live(key):
    pd = pytest.importorskip("pandas")
    raw = pytest.importorskip("irrCAC.raw", reason="irrCAC not installed (pip install --no-deps irrCAC==0.4.4)")
    a, b = _seeded_pair(*key)
    assert gwet_ac1(a, b) == pytest.approx(raw.CAC(pd.DataFrame({"a": a, "b": b})).gwet()["est"]["coefficient_value"], abs=1e-5)


def test_ranking_stability_enumerates_every_subset():
    judge, human = [0.9, 0.8, 0.55, 0.6, 0.3, 0.2, 0.45, 0.7, 0.1], [0.92, 0.75, 0.6, 0.5, 0.35, 0.25, 0.4, 0.72, 0.15]
    st = ranking_stability(judge, human)
    assert (st["subset_size"], st["n_models"], st["n_subsets"], st["n_undefined"]) == (6, 9, 84, 0)
    from itertools import combinations

    rhos = [ranking_correlation([judge[i] for i in s], [human[i] for i in s])["spearman"] for s in combinations(range(9), 6)]
    assert st["spearman"]["mean"] == pytest.approx(np.mean(rhos)) and st["spearman"]["min"] == pytest.approx(min(rhos))
    assert st["spearman"]["share_above"] == pytest.approx(np.mean(np.array(rhos) >= 0.9))
    assert ranking_stability(judge, judge, 6)["spearman"] == {"mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0, "share_above": 1.0}
    tied = ranking_stability([1, 1, 1, 3], [1, 2, 3, 4], 3)  # models 0, 1, 2 tie: that subset has no rank correlation
    assert (tied["n_subsets"], tied["n_undefined"]) == (3, 1)
    with pytest.raises(ValueError, match="subset_size must be between 3"):
        ranking_stability(judge, human, 10)


def _model_rows(n_models, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(n_models):
        for i in range(30):
            truth = "correct" if rng.random() < 0.2 + 0.07 * m else "incorrect"
            said = truth if rng.random() < 0.85 else ("incorrect" if truth == "correct" else "correct")
            rows.append({"question": f"q{i}", "answer": "a", "reference": "r", "model": f"m{m}", "human_label": truth, "label": said})
    return rows


@pytest.mark.parametrize("n_models, subset, note", [(9, 6, None), (5, 4, "subsets of 4, not 6"), (3, None, "at least 4 models")])
def test_report_has_ranking_stability_with_subsets_of_6_or_fewer(tmp_path, n_models, subset, note):
    from alignkit.judge import FieldJudge

    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _model_rows(n_models)))
    report = run_judge(data, FieldJudge("label"), tmp_path / "o", n_resamples=50)
    st = report["ranking"]["stability"]
    if subset:
        assert st["subset_size"] == subset and 0 <= st["spearman"]["share_above"] <= 1
    if note:
        assert note in st["note"] and note in (tmp_path / "o" / "report.md").read_text()
    assert "gwet_ac1" in report["agreement"] and report["agreement"]["gwet_ac1"]["ci"]
