"""The real path on a GPU (issue 29, rows 1-4): every frozen-model route a GPU user takes, run on the process's
accelerator, with where each model's parameters are and in which dtype asserted. Run by `eval/gpu_check.sh`.

    python eval/real_path_check.py --out runs/real_path          # on a CUDA box: every route on cuda, bf16
    python eval/real_path_check.py --allow-cpu --out /tmp/rp      # the same checks on the CPU (fp32), as a dry run
    python eval/real_path_check.py --summary runs/gpu_check/summary.md   # what eval/gpu_check.sh runs: the table appended

Routes (each loads its model through alignkit's own loader, runs it once, and checks the device and dtype of every
parameter against the placement rule: the accelerator, bf16 by default on a GPU, fp32 on the CPU):
- row 4: the HF generator, the LLM judge, the critic, the teacher and the precomputed reference;
- row 1: the reward model scorer (bon, CTRL, P-Aligner) and the reward-model judge;
- row 2: a tiny remote-code reward model with `.score` (as ArmoRM), through `alignkit bon --scorer rm` and P-Aligner
  synthesis, its scores checked against the same model run by hand on the CPU in fp32;
- row 3: `alignkit train recipes/cut_online_tiny.yaml` with the gym's `judge-s` as the critic, two rounds end to end.

Prints the table; `--out DIR` also writes `real_path.md` and `real_path.json` there, `--summary FILE` appends the table
to FILE. Exit status 1 when a check failed, 0 otherwise (also when there is no CUDA and `--allow-cpu` is not given:
nothing to check, said so).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the remote-code reward model stand-in lives with the tests


def placement(model) -> tuple[str, str]:
    """(devices, dtypes) of every parameter, as short strings."""
    params = list(model.parameters())
    return (",".join(sorted({str(p.device) for p in params})), ",".join(sorted({str(p.dtype).removeprefix("torch.") for p in params})))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write real_path.md and real_path.json here")
    parser.add_argument("--summary", help="append the table to this Markdown file")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no CUDA (a dry run)")
    parser.add_argument("--skip-online", action="store_true", help="leave out row 3's two training rounds")
    args = parser.parse_args()
    import torch

    def report(text: str, routes: list | None = None) -> None:
        print(text)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "real_path.md").write_text(text + "\n")
            if routes is not None:
                (Path(args.out) / "real_path.json").write_text(json.dumps(routes, indent=1))
        if args.summary:
            with open(args.summary, "a", encoding="utf-8") as fh:
                fh.write(text + "\n")

    if not torch.cuda.is_available() and not args.allow_cpu:
        report("- real path check: no CUDA on this machine, nothing checked (--allow-cpu runs it on the CPU)")
        return 0

    from alignkit.config import ModelSettings
    from alignkit.modeling.loading import accelerator_device, frozen_placement

    device = accelerator_device()
    want_device = str(device if device.type == "cpu" else torch.device("cuda", device.index or 0))
    want_dtype = frozen_placement(ModelSettings(path="x"))[1]
    rows: list[dict] = []

    def check(row: str, route: str, run) -> None:
        t0 = time.perf_counter()
        try:
            model, detail = run()
            got_device, got_dtype = placement(model) if model is not None else ("-", "-")
            ok = model is None or (got_device == want_device and got_dtype == want_dtype)
            rows.append({"row": row, "route": route, "device": got_device, "dtype": got_dtype, "ok": ok, "detail": detail,
                         "seconds": round(time.perf_counter() - t0, 1)})
        except Exception as exc:  # noqa: BLE001 - one failing route must not hide the others
            rows.append({"row": row, "route": route, "device": "-", "dtype": "-", "ok": False,
                         "detail": f"{type(exc).__name__}: {str(exc)[:300]}", "seconds": round(time.perf_counter() - t0, 1)})
            traceback.print_exc()

    prompts = ["What is 2 plus 3?", "Name a color."]

    def hf_generator():
        from alignkit.generation.backends import load_generator
        from alignkit.generation.base import SamplingParams

        gen = load_generator("data/gym/base-s", "hf")
        result = gen.generate(prompts, SamplingParams(n=2, temperature=1.0, max_tokens=16, seed=0, logprobs=True))
        return gen.model, f"{sum(len(r.completions) for r in result)} samples with log-probs"

    def llm_judge():
        from alignkit.data.records import JudgeItem
        from alignkit.judge.run import make_judge

        judge = make_judge("llm", model="data/gym/judge-s", backend="hf", cache=False)
        verdicts = judge.judge([JudgeItem(question="What is 2 plus 3?", answer="2 plus 3 is 5.", reference="5")])
        return judge.generator.model, f"verdict {verdicts[0].value!r} ({verdicts[0].status})"

    def critic():
        from alignkit.judge.critic import make_critic

        c = make_critic("data/gym/judge-s", backend="hf", cache=False)
        (positive, judgment), = c.critique(["What is 2 plus 3?"], ["2 plus 3 is 7, idiot."])
        return c.generator.model, f"positive={positive}, judgment={judgment!r}"

    def reward_model():
        from alignkit.judge.scorer import make_scorer

        scorer = make_scorer("rm", "data/gym/rm-s")
        scores = scorer.score_batch(prompts, ["5", "Blue."])
        return scorer.model, f"scores {[round(s, 3) for s in scores]}"

    def reward_judge():
        from alignkit.data.records import JudgeItem
        from alignkit.judge.run import make_judge

        judge = make_judge("reward", model="data/gym/rm-s")
        verdict = judge.judge([JudgeItem(question="What is 2 plus 3?", answer="5")])[0]
        return judge.scorer.model, f"reward {verdict.value:.3f}"

    def frozen(path: str, role: str):
        from alignkit.engine.signals import _load_frozen
        from alignkit.modeling.loading import frozen_settings

        model = _load_frozen(frozen_settings(ModelSettings(path="data/gym/base-s"), path))
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([[1, 2, 3, 4]], device=next(model.parameters()).device)).logits
        return model, f"{role}: a forward pass, logits {tuple(logits.shape)}"

    check("4", "HF generator (generate, --backend hf, samplers)", hf_generator)
    check("4", "LLM judge (alignkit judge --judge llm)", llm_judge)
    check("3/4", "critic (online CUT judge)", critic)
    check("1", "reward model scorer (bon, CTRL, P-Aligner)", reward_model)
    check("1", "reward model judge (alignkit judge --judge reward)", reward_judge)
    check("4", "teacher (precomputed top-k)", lambda: frozen("data/gym/teacher-m", "teacher"))
    check("4", "reference (precomputed log-probs)", lambda: frozen("data/gym/base-s", "reference"))

    work = Path(tempfile.mkdtemp(prefix="real-path-"))

    def remote_code_rm():
        from remote_code_rm import build_remote_code_rm, expected_scores

        from alignkit.cli import main as cli
        from alignkit.judge.scorer import make_scorer

        folder = build_remote_code_rm(work / "tiny-armo")
        scorer = make_scorer("rm", str(folder), trust_remote_code=True, output="score")
        bon = work / "bon.jsonl"
        code = cli(["bon", "--model", "data/gym/base-s", "--prompts", "data/gym/heldout_prompts.jsonl", "--limit", "4", "--n", "4",
                    "--max-tokens", "16", "--backend", "hf", "--scorer", "rm", "--reward-model", str(folder), "--trust-remote-code",
                    "--reward-output", "score", "--out", str(bon)])
        assert code == 0, f"alignkit bon exited {code}"
        worst = 0.0
        for line in bon.read_text().splitlines():
            row = json.loads(line)
            want = expected_scores(folder, [row["prompt"]] * len(row["completions"]), row["completions"])
            worst = max(worst, max(abs(a - b) for a, b in zip(row["scores"], want)))
        tol = 1e-4 if want_dtype == "float32" else 5e-2
        assert worst <= tol, f"bon scores differ from the model's .score by {worst:.3g} (> {tol})"
        code = cli(["paligner", "synthesize", "--config", "configs/paligner_gym.yaml", "--set", "limit=2", "--set", "iterations=2",
                    "--set", f"output_dir={work / 'syn'}", "--set", "downstream.max_tokens=12", "--set", "downstream.backend=hf",
                    "--set", "scorer=" + json.dumps({"kind": "reward-model", "path": str(folder),
                                                     "options": {"trust_remote_code": True, "output": "score"}})])
        assert code == 0, f"alignkit paligner synthesize exited {code}"
        return scorer.model, f"bon: .score within {worst:.2g} of the hand-run model; P-Aligner synthesis ran"

    check("2", "remote-code RM (.score): bon --scorer rm, P-Aligner synthesis", remote_code_rm)

    if not args.skip_online:
        def online_cut():
            from alignkit.cli import main as cli

            run = work / "online"
            code = cli(["train", "recipes/cut_online_tiny.yaml", "--set", "online.rounds=2", "--set", "online.prompts_per_round=8",
                        "--set", "online.samples_per_prompt=2", "--set", f"online.output_dir={run}",
                        "--set", "training.num_train_epochs=1", "--set", "data.eval=[]", "--set", "online.judge.kind=critic",
                        "--set", "online.judge.model=data/gym/judge-s", "--set", "online.judge.backend=hf"])
            assert code == 0, f"alignkit train exited {code}"
            stats = [json.loads((run / f"round-{r}" / "judged_stats.json").read_text()) for r in (0, 1)]
            assert all((run / f"round-{r}" / "final" / "model.safetensors").is_file() for r in (0, 1))
            return None, "two rounds: " + "; ".join(f"{s['samples']} judged, {100 * s['positive']:.0f}% fine" for s in stats)

        check("3", "online CUT, judge-s as the critic (alignkit train cut_online_tiny)", online_cut)

    lines = [f"## Real path (issue 29 rows 1-4): expected {want_device}, {want_dtype}", "",
             "| row | route | device | dtype | ok | s | detail |", "|---|---|---|---|---|---:|---|"]
    lines += [f"| {r['row']} | {r['route']} | {r['device']} | {r['dtype']} | {'yes' if r['ok'] else '**NO**'} | {r['seconds']} | "
              f"{r['detail'].replace('|', '/')} |" for r in rows]
    failed = sum(not r["ok"] for r in rows)
    lines += ["", f"{len(rows) - failed} of {len(rows)} routes passed"]
    report("\n".join(lines), {"device": want_device, "dtype": want_dtype, "routes": rows})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
