"""Evaluation by sampling during training, for any method (the recipe's `eval:` section).

Before training, the reference policy (by default the policy's initial weights) samples `reference_samples`
completions of each eval prompt and the scorer scores them: a `Samples` and a `Rewards` signal, computed once
and cached like every signal. Every `generate_every` optimizer steps (and before the first), the current policy
samples `num_samples` completions of the same prompts through a `PolicySampler` (HF `generate` on the policy, or
vLLM with weight sync), the scorer scores them, and the callback logs, as TRL's win-rate and completion callbacks
do:

- `eval_gen/win_rate` and `eval_gen/win_rate_se`: the tie-aware U-statistic win rate of the policy against the
  reference samples (`alignkit.rewards.inference_win_rate(estimator="ustat")`, standard error over prompts),
  and `eval_gen/reward` / `eval_gen/reference_reward`, the mean scores;
- a table of samples: `<output_dir>/generations/step-<N>.jsonl` (every prompt), and the first `table_rows`
  rows as TensorBoard text when TensorBoard is a tracker (the tags there are `eval/gen/win_rate`, ...,
  `eval/gen/samples`).

The method never knows: the engine adds the callback when the recipe has the section. Every process samples
every prompt with the same seed (ZeRO-3 gathers need all ranks), so every process logs the same figures.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback

from alignkit.data.records import PromptOnly, prompt_json, prompt_key, to_prompt
from alignkit.engine.signals import Rewards, Samples, ScorerSpec, SignalReport
from alignkit.generation.base import SamplingParams

log = logging.getLogger("alignkit")
PREFIX = "eval_gen/"


@dataclass
class ReferenceSamples:
    """The eval prompts with the reference policy's sampled texts and scores (prompt keys in order)."""

    prompts: list[Any]
    keys: list[str]
    texts: list[list[str]]
    scores: np.ndarray  # [P, m]


def eval_prompts(records: list[Any], limit: int) -> list[Any]:
    """The first `limit` distinct prompts of the records."""
    seen: dict[str, Any] = {}
    for record in records:
        prompt = to_prompt(record).prompt
        seen.setdefault(prompt_key(prompt), prompt)
        if len(seen) >= limit:
            break
    return list(seen.values())


def reference_samples(prep: Any) -> ReferenceSamples:
    """Sample and score the reference policy on the eval prompts (cached signals), before training starts."""
    from alignkit.engine.signals import compute_rewards, compute_samples
    from alignkit.modeling.loading import frozen_settings

    recipe, settings = prep.recipe, prep.recipe.eval
    prompts = eval_prompts(prep.eval_records or prep.records, settings.prompts)
    if not prompts:
        raise ValueError("eval.generate_every: no prompts to evaluate on (data.eval and data.train gave no records)")
    params = SamplingParams(n=settings.reference_samples, temperature=settings.temperature, top_p=settings.top_p,
                            max_tokens=settings.max_tokens, seed=settings.seed + 1)
    samples = Samples("generation_eval_reference", frozen_settings(recipe.model, settings.reference_model), params,
                      settings.backend, tuple(sorted(settings.engine_args.items())), role="reference")
    report = SignalReport()
    values = compute_samples(samples, [PromptOnly(prompt=p) for p in prompts], recipe, report)
    rewards = Rewards("generation_eval_reference_rewards", samples.name, scorer_spec(recipe))
    scores = compute_rewards(rewards, values, samples, report)
    prep.notes.extend(f"generation eval: {line}" for line in report.lines)
    keys = [prompt_key(p) for p in prompts]
    return ReferenceSamples(prompts, keys, [[c["text"] for c in values[k]] for k in keys],
                            np.asarray([scores[k] for k in keys], dtype=np.float64))


def scorer_spec(recipe: Any) -> ScorerSpec:
    """The eval section's scorer as a `ScorerSpec` (the same identity caches the reference scores)."""
    settings = recipe.eval
    return ScorerSpec(settings.scorer, settings.scorer_model, settings.scorer_template or recipe.data.template,
                      tuple(sorted(settings.scorer_options.items())))


class GenerationEvalCallback(TrainerCallback):
    """Sample, score and log the win rate against the reference every `generate_every` steps (module docstring)."""

    def __init__(self, trainer: Any, recipe: Any, reference: ReferenceSamples) -> None:
        from alignkit.engine.sampling import PolicySampler
        from alignkit.generation.backends import choose_backend
        from alignkit.judge.scorer import make_scorer

        self.trainer, self.settings, self.reference = trainer, recipe.eval, reference
        spec = scorer_spec(recipe)
        self.scorer = make_scorer(spec.kind, spec.path, spec.template, **dict(spec.options))
        backend = self.settings.backend if self.settings.backend != "auto" else choose_backend(recipe.model.path)
        self.sampler = PolicySampler(recipe.model, trainer.processing_class, recipe.data.template, backend,
                                     recipe.data.max_prompt_length, self.settings.engine_args)
        self.out_dir = Path(recipe.training.output_dir) / "generations"
        self.last: dict[str, float] = {}
        self._done_step: int | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """The evaluation before the first step (or at the resumed step)."""
        self.evaluate(state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """An evaluation every `generate_every` optimizer steps."""
        if state.global_step % self.settings.generate_every == 0:
            self.evaluate(state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """A last evaluation of the final weights, unless the last step just had one."""
        self.evaluate(state.global_step)

    def evaluate(self, step: int) -> dict[str, float]:
        """Sample the current policy, score, log the win rate and the samples table."""
        from alignkit.rewards import inference_win_rate
        from alignkit.scoring.base import score_groups

        if self._done_step == step:
            return self.last
        s, ref = self.settings, self.reference
        t0 = time.perf_counter()
        params = SamplingParams(n=s.num_samples, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, seed=s.seed)
        trainer = self.trainer
        results = self.sampler.generate(trainer.model_wrapped, ref.prompts, params, step, trainer.accelerator)
        texts = [[c.text for c in r.completions] for r in results]
        scores = np.asarray(score_groups(self.scorer, ref.prompts, texts), dtype=np.float64)
        ok = np.isfinite(scores).all(1) & np.isfinite(ref.scores).all(1)  # an unparsed judge rating scores NaN
        if not ok.any():
            log.warning("generation eval at step %d: no prompt has finite scores on both sides; nothing logged", step)
            return {}
        win = inference_win_rate(scores[ok], ref.scores[ok], s.procedure, s.n, estimator="ustat")
        metrics = {f"{PREFIX}win_rate": win.estimate, f"{PREFIX}win_rate_se": win.standard_error,
                   f"{PREFIX}reward": float(scores[ok].mean()), f"{PREFIX}reference_reward": float(ref.scores[ok].mean()),
                   f"{PREFIX}prompts": float(ok.sum()), f"{PREFIX}seconds": time.perf_counter() - t0}
        self.last, self._done_step = metrics, step
        log.info("generation eval at step %d: %s win rate vs reference %.3f ± %.3f (%d prompts)", step, s.procedure,
                 win.estimate, win.standard_error, int(ok.sum()))
        per_prompt = np.full(len(ref.prompts), np.nan)
        per_prompt[ok] = win.per_prompt
        rows = [{"step": step, "prompt": prompt_json(p), "completion": t[0], "score": float(sc[0]), "samples": t,
                 "scores": [float(x) for x in sc], "reference": rt[0], "reference_score": float(rs[0]),
                 "reference_scores": [float(x) for x in rs],
                 "win_rate": None if np.isnan(w) else float(w)}
                for p, t, sc, rt, rs, w in zip(ref.prompts, texts, scores, ref.texts, ref.scores, per_prompt)]
        if trainer.is_world_process_zero():
            self._write_table(step, rows)
        trainer.log(dict(metrics))
        return metrics

    def _write_table(self, step: int, rows: list[dict[str, Any]]) -> None:
        from alignkit.cache import write_text_atomic

        write_text_atomic(self.out_dir / f"step-{step:06d}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        writer = next((getattr(cb, "tb_writer", None) for cb in self.trainer.callback_handler.callbacks
                       if type(cb).__name__ == "TensorBoardCallback"), None)
        if writer is not None and self.settings.table_rows:
            # under the scalars' TensorBoard tags (transformers writes eval_x as eval/x)
            writer.add_text("eval/gen/samples", samples_markdown(rows[: self.settings.table_rows]), step)
            writer.flush()


def samples_markdown(rows: list[dict[str, Any]]) -> str:
    """Rows of samples as a Markdown table (prompt, policy completion and score, reference completion and score)."""

    def cell(text: Any) -> str:
        text = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
        return text.replace("|", "\\|").replace("\n", " ")[:300]

    lines = ["| prompt | policy | score | reference | score |", "|---|---|---:|---|---:|"]
    lines += [f"| {cell(r['prompt'])} | {cell(r['completion'])} | {r['score']:.3f} | {cell(r['reference'])} | "
              f"{r['reference_score']:.3f} |" for r in rows]
    return "\n".join(lines)
