"""The routes a GPU user takes with real models, on stand-ins of the real kind (issue 29, rows 1-4):

- one placement rule for every frozen model (HF generator, LLM judge and critic, reward models, teacher,
  reference), proven under a stand-in accelerator: the placement function patched to the meta device;
- a remote-code reward model with its own output attribute (`.score`, as ArmoRM), loaded with
  `trust_remote_code` and an output selector, scoring through `alignkit bon --scorer rm` and P-Aligner synthesis;
- online CUT judged by an LLM critic (the gym's `judge-s`) through the generic critic route, in-process and
  through an OpenAI-compatible endpoint, with the critic's output parsed into (positive, judgment).
"""

import json
import sys
import threading
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from remote_code_rm import build_remote_code_rm, expected_scores  # noqa: E402

JUDGE = "data/gym/judge-s"


@pytest.fixture(scope="module")
def remote_rm(tmp_path_factory) -> Path:
    return build_remote_code_rm(tmp_path_factory.mktemp("armo") / "tiny-armo")


# -- row 1 and 4: one placement rule ----------------------------------------------------------------


def _params(model):
    return list(model.parameters())


def test_every_frozen_model_lands_on_the_accelerator_in_the_recipe_dtype(monkeypatch, remote_rm):
    """With the process's accelerator stood in by the meta device, every frozen-model loader puts every parameter
    there, in bf16 by default (dtype auto) and in the settings' dtype when one is given."""
    import alignkit.modeling.loading as loading
    from alignkit.config import ModelSettings
    from alignkit.engine.signals import _load_frozen
    from alignkit.generation.backends import load_generator
    from alignkit.judge.critic import make_critic
    from alignkit.judge.run import make_judge
    from alignkit.judge.scorer import make_scorer
    from alignkit.modeling.loading import frozen_settings

    stand_in = torch.device("meta")
    monkeypatch.setattr(loading, "accelerator_device", lambda: stand_in)
    recipe_model = ModelSettings(path="data/gym/base-s", dtype="float16")
    routes = {
        "hf generator": load_generator("data/gym/base-s", "hf").model,
        "llm judge": make_judge("llm", model=JUDGE, backend="hf", cache=False).generator.model,
        "critic": make_critic(JUDGE, backend="hf", cache=False).generator.model,
        "reward model (bon, CTRL, P-Aligner)": make_scorer("reward-model", "data/gym/rm-s").model,
        "reward model judge": make_judge("reward", model="data/gym/rm-s").scorer.model,
        "remote-code reward model": make_scorer("rm", str(remote_rm), trust_remote_code=True, output="score").model,
        "reference (precomputed)": _load_frozen(frozen_settings(ModelSettings(path="data/gym/base-s"))),
        "teacher": _load_frozen(frozen_settings(ModelSettings(path="data/gym/base-s"), "data/gym/teacher-m")),
    }
    for route, model in routes.items():
        params = _params(model)
        assert params and all(p.device == stand_in for p in params), route
        assert {p.dtype for p in params} == {torch.bfloat16}, route
        assert not any(p.requires_grad for p in params), route
    # the recipe's dtype wins over the default, and `device:` over the accelerator
    reference = _load_frozen(frozen_settings(recipe_model))
    assert {p.dtype for p in _params(reference)} == {torch.float16} and _params(reference)[0].device == stand_in
    on_cpu = _load_frozen(frozen_settings(recipe_model.model_copy(update={"device": "cpu", "dtype": "auto"})))
    assert {(p.device.type, p.dtype) for p in _params(on_cpu)} == {("cpu", torch.float32)}


def test_without_an_accelerator_frozen_models_run_on_the_cpu_in_fp32():
    from alignkit.config import ModelSettings
    from alignkit.modeling.loading import frozen_placement, load_frozen

    assert frozen_placement(ModelSettings(path="x")) == (torch.device("cpu"), "float32")
    assert frozen_placement(ModelSettings(path="x", dtype="bfloat16", device="cuda:3")) == (torch.device("cuda", 3), "bfloat16")
    model = load_frozen(ModelSettings(path="data/gym/base-s"))  # stored in bf16; scored in fp32 on the CPU
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("cpu", torch.float32)}


def test_live_reference_takes_the_dtype_rule(monkeypatch):
    """A live reference (route model) is placed by accelerate with the policy; its dtype follows the rule."""
    import alignkit.modeling.loading as loading
    from alignkit.config import load_recipe
    from alignkit.engine.run import build, live_references

    monkeypatch.setattr(loading, "accelerator_device", lambda: torch.device("meta"))
    recipe = load_recipe("recipes/dpo_tiny.yaml", ["method_args.reference=model", "model.dtype=auto"])
    (live,) = live_references(build(recipe, compute_signals=False))
    assert {p.dtype for p in live.model.parameters()} == {torch.bfloat16}


def test_reward_scoring_batches_by_tokens_in_input_order():
    from alignkit.modeling.batching import token_batches
    from alignkit.scoring.reward_model import RewardModelScorer

    assert token_batches([3, 40, 9, 41, 8], max_tokens=96) == [[3, 1], [2, 4, 0]]
    assert token_batches([100, 2], max_tokens=16) == [[0], [1]]  # too long for the budget: alone
    prompts = ["What is 2 plus 3?", "Name a color.", "What is 9 minus 4?"]
    completions = ["5", "Blue is a colour that many people like a lot, honestly.", "It is 5."]
    small = RewardModelScorer("data/gym/rm-s", max_batch_tokens=8)
    one_by_one = [small.score(p, [c])[0] for p, c in zip(prompts, completions)]
    assert RewardModelScorer("data/gym/rm-s", max_batch_tokens=4096).score_batch(prompts, completions) == pytest.approx(one_by_one, abs=1e-5)


# -- row 2: a remote-code reward model with its own output ------------------------------------------


def test_remote_code_reward_model_needs_trust_and_its_output_selector(remote_rm):
    from alignkit.judge.scorer import make_scorer

    with pytest.raises(ValueError):  # custom code is not run without trust_remote_code
        make_scorer("rm", str(remote_rm))
    with pytest.raises(ValueError, match="3 labels"):
        make_scorer("rm", str(remote_rm), trust_remote_code=True)
    with pytest.raises(ValueError, match="unknown reward model option"):
        make_scorer("rm", str(remote_rm), trust_remote_codes=True)
    scorer = make_scorer("rm", str(remote_rm), trust_remote_code=True, output="score")
    prompts, completions = ["What is 2 plus 3?"] * 2 + ["Name a color."], ["5", "It is 5.", "Blue."]
    assert scorer.score_batch(prompts, completions) == pytest.approx(expected_scores(remote_rm, prompts, completions), abs=1e-5)
    rewards = make_scorer("rm", str(remote_rm), trust_remote_code=True, output="rewards:2")
    assert rewards.identity != scorer.identity


def test_remote_code_reward_model_scores_best_of_n(remote_rm, tmp_path, capsys):
    from alignkit.cli import main

    out = tmp_path / "bon.jsonl"
    assert main(["bon", "--model", "data/gym/base-s", "--prompts", "data/gym/heldout_prompts.jsonl", "--limit", "3",
                 "--n", "4", "--max-tokens", "12", "--backend", "hf", "--scorer", "rm", "--reward-model", str(remote_rm),
                 "--trust-remote-code", "--reward-output", "score", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        texts = row["completions"]
        expected = expected_scores(remote_rm, [row["prompt"]] * len(texts), texts)
        assert row["scores"] == pytest.approx(expected, abs=1e-5)
        assert row["score"] == pytest.approx(max(expected), abs=1e-5)


def test_remote_code_reward_model_scores_paligner_synthesis(remote_rm, tmp_path):
    from alignkit.cli import main
    from alignkit.paligner.mcts import load_trees

    out = tmp_path / "syn"
    scorer = json.dumps({"kind": "reward-model", "path": str(remote_rm), "options": {"trust_remote_code": True, "output": "score"}})
    assert main(["paligner", "synthesize", "--config", "configs/paligner_gym.yaml", "--set", "limit=2", "--set", "iterations=2",
                 "--set", f"output_dir={out}", "--set", f"scorer={scorer}", "--set", "downstream.max_tokens=10"]) == 0
    trees = load_trees(out / "trees.jsonl")
    nodes = [n for t in trees for n in t.nodes if n.responses]
    assert len(nodes) >= 4
    for tree in trees:
        for node in tree.nodes:
            if node.responses:  # every response is scored against the ORIGINAL instruction, by `.score`
                expected = expected_scores(remote_rm, [tree.root.instruction] * len(node.responses), node.responses)
                assert node.rewards == pytest.approx(expected, abs=1e-5)


def test_remote_code_reward_model_through_the_judge_cli_ctrl_and_the_eval_section(remote_rm, tmp_path):
    """The other documented reward-model routes take the same options: `alignkit judge --judge reward`, CTRL's
    `reward_options` (calibration rewards computed by `prepare`) and the `eval:` section's `scorer_options`."""
    from alignkit.cli import main
    from alignkit.config import load_recipe
    from alignkit.engine.generation_eval import scorer_spec
    from alignkit.engine.run import build

    items = [json.loads(line) for line in open("data/gym/heldout_judge.jsonl")][:3]
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in items))
    assert main(["judge", "--data", str(data), "--judge", "reward", "--model", str(remote_rm), "--trust-remote-code",
                 "--reward-output", "score", "--human-labels", "none", "--bootstrap", "10", "--out", str(tmp_path / "j")]) == 0
    verdicts = [json.loads(line) for line in (tmp_path / "j" / "verdicts.jsonl").read_text().splitlines()]
    want = expected_scores(remote_rm, [r["question"] for r in items], [r["answer"] for r in items])
    assert [v["verdict"] for v in verdicts] == pytest.approx(want, abs=1e-5)

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in ["What is 2 plus 3?", "Name a color.", "What is 9 minus 4?"]))
    options = "{trust_remote_code: true, output: score}"
    recipe = load_recipe("recipes/ctrl_tiny.yaml", [f"data.train={prompts}", "data.eval=[]", f"method_args.reward_model={remote_rm}",
                                                    f"method_args.reward_options={options}", "method_args.calibration_samples=4",
                                                    "method_args.sample_max_tokens=8", "method_args.sample_backend=hf",
                                                    "method_args.heldout_reward=null",
                                                    f"training.output_dir={tmp_path / 'ctrl'}"])
    prep = build(recipe)
    rewards = prep.method.signal_values["calibration_rewards"]
    samples = prep.method.signal_values["calibration"]
    key = next(iter(rewards))
    prompt = json.loads(key[len("messages:"):]) if key.startswith("messages:") else key
    assert rewards[key] == pytest.approx(expected_scores(remote_rm, [prompt] * 4, [c["text"] for c in samples[key]]), abs=1e-5)

    with_eval = load_recipe("recipes/dpo_tiny.yaml", [f"eval={{generate_every: 2, scorer: reward-model, scorer_model: {remote_rm}, "
                                                      f"scorer_options: {options}}}"])
    assert dict(scorer_spec(with_eval).options) == {"trust_remote_code": True, "output": "score"}


# -- row 3: online CUT with an LLM critic ---------------------------------------------------------


def test_critic_output_parses_into_positive_and_judgment():
    from alignkit.judge.critic import PERFECT_JUDGMENT, is_perfect, parse_critique

    assert parse_critique(PERFECT_JUDGMENT) == (True, None)
    assert parse_critique("  Perfect.") == (True, None)           # the CUT paper's GPT-4 rule
    assert parse_critique('"perfect"') == (True, None)
    assert parse_critique("The response is rude.") == (False, "The response is rude.")
    assert parse_critique("Perfectly wrong: 2 plus 2 is 4.") == (False, "Perfectly wrong: 2 plus 2 is 4.")
    assert parse_critique("   ") == (False, None)                  # no judgment at all
    assert not is_perfect("imperfect")


class _Generator:
    """A critic model that answers from a table (prompt text -> output)."""

    def __init__(self, answers):
        self.answers = answers

    def generate(self, prompts, params):
        from alignkit.generation.base import Completion, GenerationResult

        out = []
        for p in prompts:
            text = p[-1]["content"] if isinstance(p, list) else p
            out.append(GenerationResult(p, [Completion(next(a for k, a in self.answers.items() if k in text), [], "stop")]))
        return out


def test_critic_critique_gives_the_rounds_interface_and_the_paper_template():
    from alignkit.judge.critic import Critic

    critic = Critic(_Generator({"4": "Perfect", "5": "The answer is wrong: 2 plus 2 is 4, not 5.", "6": ""}),
                    template="critic_cut", cache=False, progress=False)
    assert "perfect" in critic.template and "{question}" in critic.template
    chat = [{"role": "user", "content": "What is 2 plus 2?"}]
    assert critic.critique([chat, "What is 2 plus 2?", "What is 2 plus 2?"], ["4", "5", "6"]) == [
        (True, None), (False, "The answer is wrong: 2 plus 2 is 4, not 5."), (False, None)]


def _online_args(out, *extra):
    return ["train", "recipes/cut_online_tiny.yaml", "--set", "online.rounds=2", "--set", "online.prompts_per_round=4",
            "--set", "online.samples_per_prompt=2", "--set", f"online.output_dir={out}", "--set", "training.num_train_epochs=1",
            "--set", "data.eval=[]", "--set", "online.judge.kind=critic", *extra]


def _check_two_rounds(out, critic_outputs):
    from alignkit.judge.critic import parse_critique

    for r in (0, 1):
        rows = [json.loads(line) for line in (out / f"round-{r}" / "judged.jsonl").read_text().splitlines()]
        stats = json.loads((out / f"round-{r}" / "judged_stats.json").read_text())
        assert len(rows) == stats["samples"] == 8 - stats["unjudged_skipped"]
        for row in rows:  # each record is exactly the critic's parsed judgment of its response
            positive, judgment = parse_critique(critic_outputs(row["instruction"], row["output"]))
            assert row["judgment"] == (None if positive else judgment)
        assert (out / f"round-{r}" / "final" / "model.safetensors").is_file()
    assert str(out / "round-0" / "final") in (out / "round-1" / "round_recipe.yaml").read_text()


def _critic_reference():
    from alignkit.generation.hf import HFGenerator
    from alignkit.judge.critic import Critic

    critic = Critic(HFGenerator.from_pretrained(JUDGE), cache=False, progress=False)
    return lambda prompt, response: critic.critiques([prompt], [response])[0]


def test_online_cut_two_rounds_with_the_gym_critic_in_process(tmp_path, capsys):
    from alignkit.cli import main

    out = tmp_path / "online"
    assert main(_online_args(out, "--set", f"online.judge.model={JUDGE}", "--set", "online.judge.backend=hf")) == 0
    assert "round 1: 8 judged samples" in capsys.readouterr().out
    _check_two_rounds(out, _critic_reference())


def test_online_cut_two_rounds_with_a_critic_behind_an_endpoint(tmp_path, capsys):
    """The same route with the critic served over an OpenAI-compatible HTTP endpoint (the HF fallback server)."""
    from alignkit.cli import main
    from alignkit.generation.hf import HFGenerator
    from alignkit.generation.hf_server import HFServer, make_http_server

    server = make_http_server(HFServer(HFGenerator.from_pretrained(JUDGE), "judge-s"), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        out = tmp_path / "online"
        assert main(_online_args(out, "--set", f"online.judge.model={url}")) == 0
    finally:
        server.shutdown()
        server.server_close()
    _check_two_rounds(out, _critic_reference())


def test_a_critic_that_writes_nothing_is_counted_not_trained_on(tmp_path):
    from alignkit.engine.rounds import judged_round, load_online
    from alignkit.config import load_recipe
    from alignkit.engine.run import load_method
    from alignkit.modeling.loading import load_tokenizer

    class Silent:
        def critique(self, prompts, responses):
            return [(False, None) if i % 2 else (False, "The response is rude.") for i in range(len(responses))]

    settings, _ = load_online("recipes/cut_online_tiny.yaml", ["online.prompts_per_round=2", "online.samples_per_prompt=2"])
    recipe = load_recipe(settings.recipe, [], check_files=False)
    method = load_method(recipe, load_tokenizer(recipe.model))
    records, stats = judged_round(settings, "data/gym/base-s", ["What is 2 plus 3?", "Name a color."], 0, method, Silent(), recipe)
    assert stats["unjudged_skipped"] == 2 and len(records) == stats["samples"] == 2
    assert all(r["judgment"] == "The response is rude." for r in records)


def test_the_gpu_check_of_the_real_path_runs_on_the_cpu_and_is_harmless_without_cuda(tmp_path):
    """`eval/real_path_check.py` (run by eval/gpu_check.sh on a GPU) as a dry run on the CPU: every route passes with
    its parameters on the CPU in fp32; without --allow-cpu it checks nothing and exits 0."""
    import subprocess

    env_python = sys.executable
    quiet = subprocess.run([env_python, "eval/real_path_check.py", "--summary", str(tmp_path / "s.md")], capture_output=True, text=True)
    assert quiet.returncode == 0 and "no CUDA" in (tmp_path / "s.md").read_text()
    run = subprocess.run([env_python, "eval/real_path_check.py", "--allow-cpu", "--skip-online", "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "real_path.json").read_text())
    assert report["device"] == "cpu" and report["dtype"] == "float32" and len(report["routes"]) == 8
    assert all(r["ok"] for r in report["routes"])
    assert {r["device"] for r in report["routes"]} == {"cpu"} and {r["dtype"] for r in report["routes"]} == {"float32"}
