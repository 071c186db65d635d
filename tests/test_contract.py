"""One way through the code (issue 30): the method contract and its worked example, declarations without side
effects, the one orchestrator for every recipe shape, one error base, and flags derived from the recipe's fields."""

import json
import re

import pytest
import torch

from alignkit.config import load_recipe
from alignkit.engine.method import MethodArgs

REPO_DOC = "docs/architecture.md"
SMALL = ["data.train={path: data/gym/train_preference.jsonl, max_records: 8}", "data.eval=[]", "data.max_length=64",
         "data.max_prompt_length=32", "training.max_steps=2", "training.per_device_train_batch_size=4",
         "training.logging_steps=1", "training.save_strategy=no"]


# -- the contract's worked example -------------------------------------------------------------------------------


def test_the_worked_example_in_the_docs_is_the_file():
    doc = open(REPO_DOC, encoding="utf-8").read().split("### A worked example", 1)[1]
    block = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    assert block == open("tests/hinge_method.py", encoding="utf-8").read()


def test_hinge_loss_is_its_formula():
    from hinge_method import hinge_loss

    chosen, rejected = torch.tensor([-3.0, -1.0]), torch.tensor([-4.0, -1.0])
    ref_chosen, ref_rejected = torch.tensor([-3.5, -2.0]), torch.tensor([-3.0, -1.5])
    margins = (chosen - ref_chosen) - (rejected - ref_rejected)  # 1.5, 0.5
    assert torch.allclose(hinge_loss(chosen, rejected, ref_chosen, ref_rejected, 2.0), torch.clamp(2.0 - margins, min=0))
    assert torch.equal(hinge_loss(chosen, rejected, ref_chosen, ref_rejected, 0.5), torch.zeros(2))


@pytest.mark.parametrize("route", ["precompute", "model"])
def test_the_worked_example_trains_through_the_engine(tmp_path, route):
    from alignkit.engine.run import train

    recipe = load_recipe("recipes/dpo_tiny.yaml", ["method=hinge_method", f"method_args={{margin: 1.0, reference: {route}}}",
                                                   "model.path=tiny:xs", f"training.output_dir={tmp_path}", *SMALL])
    summary = train(recipe)
    assert summary.steps == 2 and summary.method == "hinge_method"
    assert ("computed for" in summary.reference) == (route == "precompute") and ("live (model)" in summary.reference) == (route == "model")
    history = json.loads((tmp_path / "run_summary.json").read_text())["log_history"]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history if "loss" in h and "margin" in h)


# a Method outside the contract (duck-typed, not an AlignMethod): refused with a message naming the contract
class Args(MethodArgs):
    pass


class Method:
    def __init__(self, *args):
        pass


def test_a_method_outside_the_contract_is_refused(monkeypatch):
    from alignkit.config import METHODS, RecipeError
    from alignkit.engine.run import load_method
    from alignkit.modeling.loading import load_tokenizer

    monkeypatch.setitem(METHODS, "duck", __name__)
    recipe = load_recipe("recipes/dpo_tiny.yaml", ["method=duck", "method_args={}", "model.path=tiny:xs"])
    with pytest.raises(RecipeError, match="AlignMethod"):
        load_method(recipe, load_tokenizer(recipe.model))


# -- declarations have no side effects ---------------------------------------------------------------------------


def test_ctrl_signals_declare_and_load_nothing_setup_loads(monkeypatch):
    from alignkit.engine import sampling
    from alignkit.engine.run import load_method
    from alignkit.judge import scorer
    from alignkit.modeling.loading import load_tokenizer

    recipe = load_recipe("recipes/ctrl_tiny.yaml", ["method_args.sample_backend=hf"])
    method = load_method(recipe, load_tokenizer(recipe.model))
    loaded = []
    monkeypatch.setattr(scorer, "make_scorer", lambda kind, *a, **k: loaded.append(kind) or object())
    monkeypatch.setattr(sampling.PolicySampler, "__init__", lambda self, *a, **k: loaded.append("sampler"))
    signals = method.signals(recipe)
    assert [type(s).__name__ for s in signals] == ["Samples", "Rewards", "Rewards", "SequenceLogps"] and loaded == []
    assert method.beta == 0.05 and method.transform is not None  # pure settings, resolved without a model
    method.setup(recipe)
    assert loaded == ["sampler", "reward-model", "gold"]


def test_a_cached_reward_signal_loads_no_reward_model(monkeypatch):
    from alignkit.engine.signals import Rewards, Samples, ScorerSpec, SignalReport, compute_rewards
    from alignkit.judge.scorer import make_scorer, scorer_identity
    from alignkit.scoring import reward_model

    for kind, path, options in (("rm", "data/gym/rm-s", {}), ("reward-model", "data/gym/rm-s", {"max_length": 64}), ("gold", None, {})):
        assert scorer_identity(kind, path, "chat", **options) == make_scorer(kind, path, "chat", **options).identity
    samples = {"Say hi.": [{"text": "hi"}, {"text": "hello there"}], "Name a color.": [{"text": "blue"}]}
    signal = Rewards("r", "s", ScorerSpec("reward-model", "data/gym/rm-s", "chat"))
    first = compute_rewards(signal, samples, Samples("s", None, None), SignalReport())
    monkeypatch.setattr(reward_model.RewardModelScorer, "__init__", lambda *a, **k: pytest.fail("loaded the reward model on a cache hit"))
    report = SignalReport()
    assert compute_rewards(signal, samples, Samples("s", None, None), report) == first
    assert "reused" in report.lines[0]


# -- the orchestrator, errors, flags ------------------------------------------------------------------------------


def test_prepare_works_on_an_online_recipe(tmp_path, capsys):
    from alignkit.cli import main

    out = tmp_path / "online"
    assert main(["prepare", "recipes/cut_online_tiny.yaml", "--set", "online.rounds=2", "--set", "online.prompts_per_round=3",
                 "--set", "online.samples_per_prompt=1", "--set", f"online.output_dir={out}",
                 "--set", "online.sampling={temperature: 1.0, max_tokens: 8}"]) == 0
    printed = capsys.readouterr().out
    assert f"round 0: judged samples in {out / 'round-0' / 'judged.jsonl'}" in printed
    assert f"round 1: waits for {out / 'round-0' / 'final'}" in printed
    assert len((out / "round-0" / "judged.jsonl").read_text().splitlines()) >= 1 and not (out / "round-0" / "final").exists()


def test_every_alignkit_error_is_one_line_with_its_exit_code(monkeypatch, capsys):
    from alignkit.cli import main, train
    from alignkit.config import RecipeError
    from alignkit.data.loaders import DataError
    from alignkit.engine.checkpoints import CheckpointError
    from alignkit.engine.export import ExportError
    from alignkit.errors import AlignkitError
    from alignkit.generation.base import GenerationError
    from alignkit.modeling.loading import ModelLoadError

    assert all(issubclass(e, AlignkitError) for e in (RecipeError, DataError, CheckpointError, ExportError, GenerationError, ModelLoadError))
    assert issubclass(RecipeError, ValueError) and issubclass(ModelLoadError, OSError) and issubclass(GenerationError, RuntimeError)

    class Busy(AlignkitError):
        exit_code = 3

    def boom(args):
        raise Busy("the queue is full (try again later)")

    monkeypatch.setattr(train, "cmd_prepare", boom)
    assert main(["prepare", "recipes/dpo_tiny.yaml"]) == 3
    assert capsys.readouterr().err == "alignkit: the queue is full (try again later)\n"


def test_recipe_key_flags_come_from_the_recipe_fields():
    import argparse

    from alignkit.cli import build_parser
    from alignkit.cli.flags import recipe_flag

    generate = build_parser()._subparsers._group_actions[0].choices["generate"]
    flags = {a.option_strings[0]: a for a in generate._actions if a.option_strings}
    assert "(recipe key data.template)" in flags["--template"].help and "(recipe key model.path)" in flags["--model"].help
    assert flags["--max-prompt-length"].type is int and flags["--template"].default == "chat"
    parser = argparse.ArgumentParser()
    recipe_flag(parser, "--dtype", "model.dtype")
    assert parser._actions[-1].choices == ["auto", "float32", "bfloat16", "float16"] and parser.parse_args([]).dtype == "auto"


def test_report_sections_are_declared_by_methods():
    from alignkit.engine.report import method_sections
    from alignkit.trainers import ctrl

    sections = method_sections()
    assert sections["tradeoff"].render is ctrl.tradeoff_section and "tradeoff.json" in sections["tradeoff"].patterns
