"""Experiment tracking: alignkit's per-method metrics reach TensorBoard (read back from the event file) and W&B
(offline mode, read back from the run's transaction log) under their names; evaluation by sampling during
training (`eval.generate_every`) logs the win rate against the reference policy's samples for any method."""

import glob
import json
import struct

import numpy as np
import pytest

from alignkit.config import load_recipe

TINY = ["training.max_steps=3", "training.logging_steps=1", "training.save_strategy='no'", "training.warmup_steps=0",
        "data.eval=data/samples/preference.jsonl", "data.max_length=96"]


def tensorboard_scalars(folder) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every TensorBoard event file under `folder`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    for run in {p.rsplit("/", 1)[0] for p in glob.glob(f"{folder}/**/events.out.tfevents.*", recursive=True)}:
        acc = EventAccumulator(run, size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return out


def tensorboard_texts(folder, tag: str) -> dict[int, str]:
    """step -> text of a TensorBoard text summary (stored as a string tensor)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for run in {p.rsplit("/", 1)[0] for p in glob.glob(f"{folder}/**/events.out.tfevents.*", recursive=True)}:
        acc = EventAccumulator(run, size_guidance={"tensors": 0})
        acc.Reload()
        if tag in acc.Tags()["tensors"]:
            out.update({e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors(tag)})
    return out


def wandb_history(run_file, timeout: float = 60.0) -> list[dict[str, float]]:
    """The history rows of an offline W&B run, read from its `.wandb` transaction log (a 7-byte W&B header, then
    the LevelDB log format: 32 KiB blocks of chunks with a CRC32, a length and a type; each record a protobuf).
    The wandb service writes the log asynchronously: read it once its exit record is there."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        rows, done = _wandb_records(run_file)
        if done or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def _wandb_records(run_file) -> tuple[list[dict[str, float]], bool]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(run_file, "rb").read()
    assert data[:4] == b":W&B"
    rows, pos, pending, done = [], 7, b"", False
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(pending + chunk)
            pending = b""
            kind_of = record.WhichOneof("record_type")
            if kind_of == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
            done = done or kind_of == "exit"
        elif kind in (2, 3):
            pending += chunk
    return rows, done


def test_trackers_record_method_metrics_under_their_names(tmp_path, monkeypatch):
    from alignkit.engine.run import train

    reporters = ["tensorboard"]
    try:
        import wandb

        reporters.append("wandb")
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("WANDB_DIR", str(tmp_path))
        monkeypatch.setenv("WANDB_SILENT", "true")
    except ImportError:
        pass  # the [tracking] extra is not installed: TensorBoard only
    out = tmp_path / "run"
    recipe = load_recipe("recipes/dpo_tiny.yaml", ["model.path=tiny:xs", f"training.output_dir={out}",
                                                   f"training.report_to={json.dumps(reporters)}", *TINY,
                                                   "data.train={path: data/gym/train_preference.jsonl, max_records: 48}"])
    train(recipe)
    history = json.loads((out / "run_summary.json").read_text())["log_history"]
    method_metrics = ("rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected")  # DPO's own names
    scalars = tensorboard_scalars(out)
    for name in method_metrics:
        logged = {h["step"]: h[name] for h in history if name in h}
        assert logged and scalars[f"train/{name}"] == pytest.approx(logged, rel=1e-5), name
        evaluated = {h["step"]: h[f"eval_{name}"] for h in history if f"eval_{name}" in h}
        assert scalars[f"eval/{name}"] == pytest.approx(evaluated, rel=1e-5), name
    if "wandb" in reporters:
        import wandb

        wandb.finish()  # the run stays open for logging after train() (as transformers leaves it); close it to read it back
        (run_file,) = glob.glob(f"{tmp_path}/wandb/offline-run-*/run-*.wandb")
        rows = wandb_history(run_file)
        for name in method_metrics:
            logged = [h[name] for h in history if name in h]
            assert [r[f"train/{name}"] for r in rows if f"train/{name}" in r] == pytest.approx(logged, rel=1e-5), name


@pytest.mark.parametrize("method", ["dpo", "sft"])
def test_generation_eval_logs_win_rate_against_the_reference(method, tmp_path):
    """Any method, without it knowing: the engine's callback samples the policy every N steps."""
    from alignkit.engine.run import train
    from alignkit.rewards import inference_win_rate

    out = tmp_path / "run"
    data = {"dpo": "data/gym/heldout_preference.jsonl", "sft": "data/gym/heldout_sft.jsonl"}[method]
    data = json.dumps({"path": data, "max_records": 48})
    recipe = load_recipe(f"recipes/{'dpo_tiny' if method == 'dpo' else 'gym_base_tiny'}.yaml", [
        "model.path=data/gym/base-s", f"training.output_dir={out}", "training.report_to=tensorboard", f"data.train={data}",
        f"data.format={method if method == 'sft' else 'preference'}", "data.template=chat", "data.max_length=128",
        "data.max_prompt_length=64", "training.learning_rate=3e-3", "training.per_device_train_batch_size=8", *TINY[:4],
        "data.eval=[]", "training.max_steps=4",
        "eval={generate_every: 2, scorer: gold, prompts: 6, num_samples: 2, reference_samples: 4, max_tokens: 24}"])
    summary = train(recipe)
    history = json.loads((out / "run_summary.json").read_text())["log_history"]
    logged = {h["step"]: h for h in history if "eval_gen/win_rate" in h}
    assert sorted(logged) == [0, 2, 4]  # before the first step, then every 2 steps
    tables = {int(p.stem.split("-")[1]): [json.loads(x) for x in p.read_text().splitlines()]
              for p in (out / "generations").glob("step-*.jsonl")}
    assert sorted(tables) == [0, 2, 4]
    for step, rows in tables.items():
        assert len(rows) == 6 and all(len(r["samples"]) == 2 and len(r["reference_scores"]) == 4 for r in rows)
        # the logged win rate is the tie-aware U-statistic of the table's scores against the cached reference scores
        win = inference_win_rate(np.array([r["scores"] for r in rows]), np.array([r["reference_scores"] for r in rows]),
                                 "standard", 1, estimator="ustat")
        assert logged[step]["eval_gen/win_rate"] == pytest.approx(win.estimate)
        assert logged[step]["eval_gen/win_rate_se"] == pytest.approx(win.standard_error)
    # the reference samples are drawn once (identical in every table); the policy's change as it trains
    assert len({json.dumps([r["reference_scores"] for r in rows]) for rows in tables.values()}) == 1
    assert [r["samples"] for r in tables[0]] != [r["samples"] for r in tables[4]]
    # before training the policy is the reference: a win rate near one half
    assert abs(logged[0]["eval_gen/win_rate"] - 0.5) < 3 * logged[0]["eval_gen/win_rate_se"] + 0.05
    scalars = tensorboard_scalars(out)
    assert scalars["eval/gen/win_rate"] == pytest.approx({s: h["eval_gen/win_rate"] for s, h in logged.items()})
    texts = tensorboard_texts(out, "eval/gen/samples/text_summary")
    assert sorted(texts) == [0, 2, 4] and "| prompt | policy | score | reference | score |" in texts[4]
    assert any(n.startswith("generation eval: standard win rate vs reference") for n in summary.notes)
