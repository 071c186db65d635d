"""`alignkit report`: one static page comparing runs, from real run folders and the real outputs of
`eval/gym_eval.py --json`, `alignkit judge` and `eval/ctrl_tradeoff.py`, checked in headless Chromium."""

import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from alignkit.cli import main
from alignkit.config import load_recipe
from headless_browser import CHROMIUM, browse

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium "
                                    "package; locally: apt-get install chromium)")


@pytest.fixture(scope="module")
def evidence(tmp_path_factory):
    """Two runs (one finished, one known only by its checkpoint), a gym evaluation, a judge report, a CTRL trade-off."""
    from alignkit.engine.run import train

    root = tmp_path_factory.mktemp("report")
    run = root / "dpo_gym"
    train(load_recipe("recipes/dpo_tiny.yaml", [
        f"training.output_dir={run}", "training.max_steps=4", "training.logging_steps=1", "training.save_steps=4",
        "training.warmup_steps=0", "training.learning_rate=2e-3", "training.per_device_train_batch_size=8",
        "data.train={path: data/gym/train_preference.jsonl, max_records: 64}", "data.eval=[]", "data.max_length=128",
        "eval={generate_every: 2, scorer: gold, prompts: 4, num_samples: 2, reference_samples: 4, max_tokens: 16}"]))
    unfinished = root / "dpo_unfinished"  # a run that stopped after its checkpoint: only trainer_state.json
    shutil.copytree(run / "checkpoint-4", unfinished / "checkpoint-4")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(open("data/gym/heldout_prompts.jsonl").readlines()[:4]))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    subprocess.run([sys.executable, "eval/gym_eval.py", str(run / "final"), "--prompts", str(prompts),
                    "--samples", "2", "--max-tokens", "16", "--json", str(run / "gym_eval.json")], check=True, env=env,
                   capture_output=True)
    subprocess.run([sys.executable, "eval/ctrl_tradeoff.py", "--policy", f"dpo={run / 'final'}", "--prompts", str(prompts),
                    "--samples", "4", "--max-tokens", "16", "--out", str(root / "tradeoff")], check=True, env=env, capture_output=True)
    assert main(["judge", "--data", "data/samples/judge.jsonl", "--judge", "exact", "--out", str(root / "judge"),
                 "--bootstrap", "200"]) == 0
    return root


def test_report_compares_runs_with_every_section(evidence, capsys):
    out = evidence / "report.html"
    assert main(["report", str(evidence / "dpo_gym"), str(evidence / "dpo_unfinished"), "--out", str(out),
                 "--judge", str(evidence / "judge" / "report.json"), "--tradeoff", str(evidence / "tradeoff" / "tradeoff.json")]) == 0
    page = out.read_text()
    for heading in ("Runs", "Before and after training", "Win rate against the reference, sampled during training",
                    "Training curves", "Evaluation curves", "Gym: gold reward", "Judge agreement and win rates",
                    "CTRL: KL–win-rate trade-off"):
        assert f"<h2>{heading}" in page, heading
    # one plot per method metric, each comparing both runs (the unfinished one from its checkpoint's trainer state)
    for metric in ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen"):
        assert f'alt="train/{metric}"' in page and f'alt="eval/{metric}"' in page
    assert "checkpoint-4/trainer_state.json" in page
    assert "gold_reward" in page and "cohen_kappa" in page and "KL–win-rate trade-off (tradeoff.json)" in page
    summary = json.loads((evidence / "dpo_gym" / "run_summary.json").read_text())
    margin = summary["after"]["rewards/margins"]
    assert f"<td class=num>{margin:.4f}</td>" in page
    # self-contained: no script, no asset fetched from anywhere
    assert "<script" not in page and not re.search(r'(src|href)="(?!data:)', page)
    assert main(["report", str(evidence / "prompts.jsonl"), "--out", str(evidence / "x.html")]) == 2
    assert "no run here" in capsys.readouterr().err


@needs_chromium
def test_report_renders_in_a_browser(evidence, tmp_path):
    from PIL import Image

    out = tmp_path / "report.html"
    assert main(["report", str(evidence / "dpo_gym"), "--out", str(out), "--judge", str(evidence / "judge" / "report.json"),
                 "--tradeoff", str(evidence / "tradeoff" / "tradeoff.json")]) == 0
    png, errors = browse(out.as_uri())
    assert errors == []
    image = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    assert image.shape[0] > 2000  # the full page, not only the first screen
    assert image.std() > 20 and (image < 128).mean() > 0.01  # text and plots, not a blank page
    # the check sees errors when there are some: a broken image and a console error on an otherwise similar page
    broken = tmp_path / "broken.html"
    broken.write_text(out.read_text().replace("</body>", '<img src="missing.png"><script>console.error("boom")</script></body>'))
    _, errors = browse(broken.as_uri())
    assert any("boom" in e for e in errors) and any("ERR_FILE_NOT_FOUND" in e for e in errors)
