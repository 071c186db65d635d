"""InfAlign CTRL: calibrate-and-transform reinforcement learning for inference-time procedures
(Balashankar, Sun et al., "InfAlign: Inference-aware language model alignment", ICML 2025; no public code).

A policy that will be decoded with best-of-N (or attacked with worst-of-N) should be trained for that
procedure's win rate against the reference, not for the raw reward. CTRL does it in three steps:

1. **Calibrate** (before training, `alignkit prepare`): draw m temperature-1 samples per prompt from the
   frozen π_ref (the same model that anchors the KL, the same template, spec Q1), score them with the same
   reward, and keep the sorted scores. A policy sample's calibrated reward is its mid-rank among them,
   C(x, y) = P(r(z) < r(y)) + ½·P(r(z) = r(y)), in [0, 1] (ties count ½, spec Q2).
2. **Transform**: R = Φ(C): `identity` (optimal for standard win rate), `bon` exp(t·C) and `won` −exp(−t·C)
   in their normalised forms (e^{tu} − 1)/(e^t − 1) by default (spec Q5, Q7: increasing for both signs),
   `log` (clipped at 1/(2m), Q4), or `raw` (no calibration: the reward itself). `t: auto` picks the t of
   `alignkit.rewards.choose_t(N, kl_target)`; a warning fires when m is small for t (Q3).
3. **KL-regularised RL with a fixed β**: each step samples k completions per prompt from the current policy
   (`alignkit.engine.sampling.PolicySampler`: vLLM with weight sync where `auto` picks it, HF otherwise),
   scores and transforms them, and takes a policy-gradient step on
   E[R − β·KL(π‖π_ref)] with the RLOO leave-one-out baseline (or REINFORCE with the mean baseline); no
   per-group standard-deviation normalisation, which would change the KL trade-off the transform is chosen
   for (Q6). The paper optimises this objective with PPO (a learned value function, clipped ratios, several
   epochs per batch); alignkit uses the critic-free RLOO estimator of the same objective's gradient, one
   step per batch, which has the same optimum and no value model to train (a deviation, documented).

β: `beta: auto` (the default) is the β at which the optimal policy for the transform sits exactly at
`kl_target` (`alignkit.rewards.beta_for_kl` on the transform as applied: for the normalised bon/won transform
with `t: auto` it equals `choose_t(...).beta_normalized`), so t and β are chosen for the same KL budget. A
fixed β is taken as given; with t chosen for KL 0.5, β = 0.05 would put the optimum at KL ≈ 4.4 nats.

The KL term: by default (`kl_penalty: reward`, `kl_estimator: k1`) the per-sequence estimate
log π(y) − log π_ref(y) is subtracted from the reward before the baseline, as in InstructGPT, TRL's RLOO
and OpenRLHF. With that, the score-function gradient of the penalised reward is an unbiased gradient of the
exact objective E[R] − β·KL, whose optimum π ∝ π_ref·exp(R/β) is the one InfAlign's analysis and
`choose_t` assume. **Biased for that objective** (available for comparison, and warned about when chosen):
`kl_penalty: loss` adds β·k3 (Schulman's low-variance, always-positive estimator) as a differentiable loss
term, as GRPO does, whose gradient is not the reverse-KL gradient; `kl_estimator: k3` in the reward
penalises k3 instead of the log-ratio, whose expectation is KL but whose score-function gradient is not.

Cost: calibration draws m samples for every distinct train and eval prompt (and scores each); `prepare`
prints the count before sampling. `calibration_prompts` bounds the train prompts CTRL trains on and
calibrates (a seeded sample), so m × prompts stays affordable (HH helpful-base has ~46k prompts: m = 256
for all of them is ~11.8M generations).

Metrics: reward, calibrated and transformed reward, KL to π_ref (per sequence) and entropy; on the eval
prompts also the inference-time win rate against π_ref for standard sampling and for best-/worst-of-N at the
recipe's N (plug-in estimator, ties ½), under the training reward and, with `heldout_reward` (e.g. the
gym's gold reward), under a scorer the policy never optimised (Q9).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from alignkit.data.records import PromptOnly, prompt_key
from alignkit.engine.contract import ReportSection
from alignkit.engine.method import CompletionMethod, MethodArgs, SamplerArgs
from alignkit.engine.signals import Rewards, ScorerSpec, SequenceLogps
from alignkit.generation.base import SamplingParams
from alignkit.modeling.logprobs import batch_hidden_states, chunked_head, per_sequence_mean, per_sequence_sum

log = logging.getLogger("alignkit")
ScorerKind = Literal["reward-model", "gold", "judge"]


class Args(MethodArgs, SamplerArgs):
    """`method_args` for CTRL (the paper gives no code; [unverified] values are alignkit's documented choices)."""

    reward: ScorerKind = Field("reward-model", description="the reward optimised: a reward model, the gym's gold reward, or a pointwise judge")
    reward_model: str | None = Field(None, description="reward model folder, or the judge model / endpoint URL for reward: judge")
    heldout_reward: ScorerKind | None = Field(None, description="a second scorer for evaluation only (spec Q9), e.g. gold on the gym")
    heldout_reward_model: str | None = Field(None, description="its model, when it needs one")
    reward_options: dict[str, Any] = Field(default_factory=dict, description="reward model options, e.g. {trust_remote_code: "
                                           "true, output: score} for a remote-code RM such as ArmoRM, device, max_batch_tokens "
                                           "(alignkit.scoring.reward_model.OPTIONS)")
    heldout_reward_options: dict[str, Any] = Field(default_factory=dict, description="the same for heldout_reward_model")
    transform: Literal["raw", "identity", "log", "bon", "won"] = Field("bon", description="Φ applied to the calibrated "
                                                                       "reward; raw = the reward itself, uncalibrated")
    t: float | Literal["auto"] = Field("auto", description="exponent of bon/won; auto = choose_t(n, kl_target) [paper's t unknown]")
    normalized: bool = Field(True, description="normalised exponential transforms (e^{tu} − 1)/(e^t − 1) (spec Q5)")
    n: int = Field(4, ge=1, description="N of the inference-time procedure the policy is trained for (and evaluated at)")
    kl_target: float = Field(0.5, gt=0, description="KL budget (nats) that t: auto and beta: auto are chosen for")
    beta: float | Literal["auto"] = Field("auto", description="fixed KL coefficient β, or auto: the β whose optimal policy "
                                          "for the transform sits at kl_target (beta_for_kl; [the paper's β unknown])")
    kl_penalty: Literal["reward", "loss"] = Field("reward", description="KL as a reward penalty (default: unbiased for "
                                                  "E[R] − β·KL, see the module docstring) or as a k3 loss term (GRPO's; "
                                                  "biased for the reverse-KL objective)")
    kl_estimator: Literal["k1", "k3"] = Field("k1", description="per-sequence KL estimate in the reward penalty (k3 is "
                                              "biased for the objective's gradient)")
    baseline: Literal["rloo", "mean"] = Field("rloo", description="RLOO leave-one-out, or REINFORCE with the group mean")
    num_samples: int = Field(4, ge=2, description="k completions per prompt per step (RLOO needs k ≥ 2)")
    calibration_samples: int = Field(64, ge=2, description="m reference samples per prompt for calibration [paper's m unknown]")
    calibration_prompts: int | None = Field(None, ge=1, description="train on (and calibrate) at most this many distinct "
                                            "train prompts, a seeded sample: calibration costs m x (these + the eval "
                                            "prompts) generations and scores; None: every train prompt")
    sample_temperature: float = Field(1.0, gt=0, description="policy sampling temperature (1: the policy's own distribution)")
    sample_top_p: float = Field(1.0, gt=0, le=1, description="policy sampling top_p")
    sample_max_tokens: int = Field(128, ge=1, description="length limit of policy and reference samples")
    reward_template: str | None = Field(None, description="template of the reward model / judge (default: the recipe's)")
    reference: Literal["model", "adapter"] = Field("model", description="π_ref for the KL: a frozen copy, or the LoRA "
                                                   "policy with its adapter off (the calibration samples come from the same weights)")

    @model_validator(mode="after")
    def _needs_models(self) -> "Args":
        for kind, path, name in ((self.reward, self.reward_model, "reward_model"),
                                 (self.heldout_reward, self.heldout_reward_model, "heldout_reward_model")):
            if kind in ("reward-model", "judge") and not path:
                raise ValueError(f"{name} is required for a {kind} scorer")
        if self.beta == "auto" and self.transform == "raw":
            raise ValueError("beta: auto is derived from the calibrated reward's KL trade-off; transform raw has none: set beta")
        return self


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """RLOO advantages [P, k]: each reward minus the mean of the other k − 1 rewards of its prompt."""
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    return rewards - (rewards.sum(-1, keepdim=True) - rewards) / (k - 1)


def mean_baseline_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE advantages [P, k] with the prompt's mean reward (own sample included) as the baseline."""
    return rewards - rewards.mean(-1, keepdim=True)


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-sequence KL(π‖π_ref) estimates from log π(y) and log π_ref(y), y ~ π: k1 = log-ratio, k3 = e^{−r} − 1 + r."""
    ratio = logp - ref_logp
    if estimator == "k1":
        return ratio
    if estimator == "k3":
        return torch.expm1(-ratio) + ratio
    raise ValueError(f"unknown KL estimator {estimator!r}")


def ctrl_loss(logp: torch.Tensor, ref_logp: torch.Tensor, rewards: torch.Tensor, beta: float, kl_penalty: str = "reward",
              kl_estimator: str = "k1", baseline: str = "rloo") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence policy-gradient losses [P·k] and advantages [P, k].

    `logp`, `ref_logp`: summed sequence log-probs [P·k] (prompt-major); `rewards`: transformed rewards [P, k].
    """
    p, k = rewards.shape
    penalty = kl_estimate(logp.detach(), ref_logp, kl_estimator).view(p, k)
    shaped = rewards - beta * penalty if kl_penalty == "reward" else rewards
    advantages = (rloo_advantages if baseline == "rloo" else mean_baseline_advantages)(shaped)
    losses = -advantages.reshape(-1).detach() * logp
    if kl_penalty == "loss":
        losses = losses + beta * kl_estimate(logp, ref_logp, "k3")
    return losses, advantages


def resolve_beta(args: Args, transform: Any) -> float:
    """β for the loss: the fixed value, or for `auto` the β whose optimal policy for `transform` (as applied to the
    calibrated reward) sits at `kl_target`."""
    from alignkit.rewards import beta_for_kl

    if args.beta != "auto":
        return float(args.beta)
    beta = beta_for_kl(transform, args.kl_target)
    log.info("CTRL: beta = %.4g puts the optimal policy for %s at KL %.2f (beta: auto)", beta, transform, args.kl_target)
    return beta


def make_transform(args: Args, m: int) -> Any:
    """The reward transform Φ of the settings (None for raw rewards)."""
    from alignkit.rewards import choose_t, exponential, identity, log as log_transform

    if args.transform == "raw":
        return None
    if args.transform == "identity":
        return identity()
    if args.transform == "log":
        return log_transform(1 / (2 * m))
    t = args.t
    if t == "auto":
        t = choose_t(args.n, args.kl_target, args.transform).t
        log.info("CTRL: t = %.2f chosen for %s-of-%d at KL %.2f", t, "best" if args.transform == "bon" else "worst", args.n, args.kl_target)
    if m < 8 * t:
        log.warning("CTRL: t = %.1f concentrates the reward in the top ~1/t of the reference samples, but calibration has "
                    "only m = %d per prompt (resolution 1/m); use m of at least ~%d (spec Q3)", t, m, int(8 * t))
    from alignkit.rewards import best_of_n, worst_of_n

    family = best_of_n if args.transform == "bon" else worst_of_n
    return exponential(t if args.transform == "bon" else -t) if args.normalized else family(t)


# -- `alignkit report`: the KL–win-rate trade-off ----------------------------------------------------------------


def tradeoff_plot(data: dict[str, Any]) -> str:
    """Analytic KL–win-rate curves with the measured policies on top (an `eval/ctrl_tradeoff.py` result)."""
    from alignkit.engine.report import figure, png

    fig, ax = figure(6.0, 3.8)
    measured = data.get("measured") or {}
    max_kl = max([v["kl"][0] for v in measured.values()] or [1.0])
    for name, curve in (data.get("curves") or {}).items():
        pts = [(k, w) for k, w in zip(curve["kl"], curve["winrate"]) if k <= max(3.0, 1.5 * max_kl)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"analytic: {name}")
    n = data.get("n", "N")
    for label, v in measured.items():
        (kl, kl_se), (win, win_se) = v["kl"], v.get("rm_bon", v.get("rm_standard"))
        ax.errorbar(kl, win, xerr=kl_se, yerr=win_se, fmt="o", capsize=3, label=f"measured: {label}")
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set_xlabel("KL(π ‖ π_ref), nats", fontsize=8)
    ax.set_ylabel(f"best-of-{n} win rate vs π_ref", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return png(fig)


def tradeoff_section(path: Path) -> str:
    """A CTRL KL–win-rate result (`eval/ctrl_tradeoff.py`'s tradeoff.json): the plot and the measured table."""
    import json

    from alignkit.engine.report import esc, img, mean_se, table

    data = json.loads(path.read_text())
    measured = data.get("measured") or {}
    keys = list(dict.fromkeys(k for v in measured.values() for k in v))
    rows = [[esc(label)] + [mean_se(v.get(k)) for k in keys] for label, v in measured.items()]
    meta = ", ".join(f"{k}: {esc(data[k])}" for k in ("base", "reward_model", "samples", "n", "t") if data.get(k) is not None)
    return (f"<h3>{esc(path)}</h3><p class=meta>{meta}</p>" + img(tradeoff_plot(data), f"KL–win-rate trade-off ({path.name})")
            + table(["policy", *keys], rows))


class Method(CompletionMethod):
    """CTRL as an on-policy engine method: batches are prompts; `rollout` samples, scores and calibrates."""

    record_type = PromptOnly
    report_sections = (ReportSection("tradeoff", "CTRL: KL–win-rate trade-off", ("tradeoff.json", "*/tradeoff.json"),
                                     tradeoff_section),)

    def __init__(self, args: Any, tokenizer: Any, data: Any) -> None:
        super().__init__(args, tokenizer, data)
        self.prompts: dict[str, Any] = {}
        self.sampler: Any = None
        self.scorer: Any = None
        self.heldout: Any = None
        self.calibrators: dict[str, Any] = {}
        self.seconds = {"sample": 0.0, "score": 0.0}
        self.transform = make_transform(args, args.calibration_samples)
        self.beta: float = resolve_beta(args, self.transform)
        if args.kl_penalty == "loss" or args.kl_estimator == "k3":
            log.warning("CTRL: kl_penalty=%s, kl_estimator=%s: the k3 term's gradient is not the gradient of E[R] - beta*KL "
                        "(biased for the reverse-KL objective the transform and beta are chosen for); the defaults "
                        "(reward, k1) are unbiased", args.kl_penalty, args.kl_estimator)

    # -- declared signals: reference samples and their rewards ---------------------------------------

    def _scorer_spec(self, kind: str, path: str | None, recipe: Any, options: dict[str, Any]) -> ScorerSpec:
        return ScorerSpec(kind, path, self.args.reward_template or recipe.data.template, tuple(sorted(options.items())))

    def signals(self, recipe: Any) -> list[Any]:
        """m temperature-1 samples per prompt from π_ref, scored by the reward (and the held-out scorer);
        π_ref's log-probs of the policy's samples, live."""
        from alignkit.modeling.loading import frozen_settings

        a = self.args
        ref = frozen_settings(recipe.model)
        params = SamplingParams(n=a.calibration_samples, temperature=1.0, top_p=1.0, max_tokens=a.sample_max_tokens,
                                seed=a.sample_seed + 1)
        signals: list[Any] = [a.samples_signal("calibration", ref, params, role="reference"),
                              Rewards("calibration_rewards", "calibration",
                                      self._scorer_spec(a.reward, a.reward_model, recipe, a.reward_options))]
        if a.heldout_reward:
            signals.append(Rewards("calibration_heldout", "calibration",
                                   self._scorer_spec(a.heldout_reward, a.heldout_reward_model, recipe, a.heldout_reward_options),
                                   role="heldout reward"))
        signals.append(SequenceLogps(("sample_logps",), ref, a.reference))
        return signals

    def setup(self, recipe: Any) -> None:
        """The policy sampler and the scorers the training loop uses (loaded once, before the trainer is built)."""
        from alignkit.judge.scorer import make_scorer

        a = self.args
        self.sampler = a.policy_sampler(recipe, self.tokens.tokenizer)
        template = a.reward_template or recipe.data.template
        self.scorer = make_scorer(a.reward, a.reward_model, template, **a.reward_options)
        if a.heldout_reward:
            self.heldout = make_scorer(a.heldout_reward, a.heldout_reward_model, template, **a.heldout_reward_options)

    def select_records(self, records: list[PromptOnly]) -> list[PromptOnly]:
        """At most `calibration_prompts` distinct train prompts (a seeded sample, in file order), every record of
        each kept; all of them without the setting."""
        import random

        limit = self.args.calibration_prompts
        keys = list(dict.fromkeys(prompt_key(r.prompt) for r in records))
        if limit is None or len(keys) <= limit:
            return records
        kept = set(random.Random(self.args.sample_seed).sample(keys, limit))
        return [r for r in records if prompt_key(r.prompt) in kept]

    def _calibrator(self, name: str) -> Any:
        from alignkit.rewards import Calibrator

        if name not in self.calibrators:
            values = self.signal_values[name]
            self.calibrators[name] = Calibrator("half").fit(list(values), list(values.values()))
        return self.calibrators[name]

    # -- examples ----------------------------------------------------------------------------------

    def build_example(self, record: PromptOnly) -> dict[str, Any]:
        """The prompt's ids (as the sampler encodes them) and its key."""
        key = prompt_key(record.prompt)
        self.prompts[key] = record.prompt
        ids = self.tokens.encode_prompt(record.prompt)
        return {"prompt_ids": ids, "prompt_key": key, "length": len(ids) + self.args.sample_max_tokens}

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        """Prompts only: completions are drawn in `rollout`."""
        return {"prompt_keys": [e["prompt_key"] for e in examples]}

    # -- on-policy step ----------------------------------------------------------------------------

    def rollout(self, model: Any, batch: dict[str, Any], context: Any) -> dict[str, Any]:
        """Sample k completions per prompt from the current policy, score, calibrate and transform them."""
        a = self.args
        keys = list(batch["prompt_keys"])
        rank = context.accelerator.process_index if context.accelerator is not None else 0
        seed = a.sample_seed + 1000 * (context.step + 1) + 17 * rank if context.training else a.sample_seed + 7
        params = SamplingParams(n=a.num_samples, temperature=a.sample_temperature, top_p=a.sample_top_p,
                                max_tokens=a.sample_max_tokens, seed=seed)
        t0 = time.perf_counter()
        results = self.sampler.generate(model, [self.prompts[k] for k in keys], params, context.step, context.accelerator)
        t1 = time.perf_counter()
        texts = [[c.text for c in r.completions] for r in results]
        raw = self._score(self.scorer, keys, texts)
        t2 = time.perf_counter()
        self.seconds["sample"] += t1 - t0
        self.seconds["score"] += t2 - t1
        calibrated = self._calibrate("calibration_rewards", keys, raw)
        transformed = raw if self.transform is None else self.transform(calibrated)
        rows = []
        for key, result in zip(keys, results):
            prompt_ids = self.tokens.encode_prompt(self.prompts[key])
            budget = self.tokens.max_length - len(prompt_ids)
            rows += [(prompt_ids, self.tokens.truncate_completion(c.token_ids, budget)) for c in result.completions]
        out = {**self.batch(rows), "raw": raw.reshape(-1), "calibrated": calibrated.reshape(-1),
               "transformed": transformed.reshape(-1).float(), "group": torch.tensor([len(keys), a.num_samples])}
        if not context.training:
            out.update(self._win_rates(keys, raw, texts))
        device = context.accelerator.device if context.accelerator is not None else torch.device("cpu")
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in out.items()}

    def _score(self, scorer: Any, keys: list[str], texts: list[list[str]]) -> torch.Tensor:
        from alignkit.scoring.base import score_groups

        scores = score_groups(scorer, [self.prompts[k] for k in keys], texts)
        return torch.tensor(scores, dtype=torch.float64)

    def _calibrate(self, name: str, keys: list[str], raw: torch.Tensor) -> torch.Tensor:
        """Calibrated rewards [P, k]. Every prompt must have reference samples (`signals` declares them for every train
        and eval prompt, spec Q8); a prompt without them is a KeyError, never silently sampled or skipped."""
        missing = [k for k in dict.fromkeys(keys) if k not in self.signal_values[name]]
        if missing:
            raise KeyError(f"{len(missing)} prompts have no reference samples; `alignkit prepare` covers every train "
                           "and eval prompt of the recipe (spec Q8)")
        ids = [k for k in keys for _ in range(raw.shape[1])]
        return self._calibrator(name)(ids, raw.reshape(-1)).reshape(raw.shape)

    def _win_rates(self, keys: list[str], raw: torch.Tensor, texts: list[list[str]]) -> dict[str, torch.Tensor]:
        """Per-prompt inference-time win rates against π_ref (first row of each prompt; NaN elsewhere).

        The tie-aware U-statistic of `alignkit.rewards.inference_win_rate(estimator="ustat")`: N-subsets of the
        k policy samples against the m reference samples. The plug-in estimator would shrink best-of-N from
        k = 4 samples against m ≫ k; with k < N the plug-in is the only choice."""
        from alignkit.rewards import inference_win_rate

        a = self.args
        scorers = [("", raw, "calibration_rewards")]
        if self.heldout is not None:
            scorers.append(("heldout_", self._score(self.heldout, keys, texts), "calibration_heldout"))
        out = {}
        for prefix, rewards, name in scorers:
            reference = torch.tensor([self.signal_values[name][key] for key in keys], dtype=torch.float64)
            for procedure, n in (("standard", 1), ("bon", a.n), ("won", a.n)):
                values = torch.full((len(keys), a.num_samples), float("nan"))
                estimator = "ustat" if a.num_samples >= n else "plugin"
                per_prompt = inference_win_rate(rewards, reference, procedure, n, estimator=estimator).per_prompt
                values[:, 0] = torch.as_tensor(per_prompt, dtype=torch.float32)
                out[f"win/{prefix}{procedure if procedure == 'standard' else procedure + str(n)}"] = values.reshape(-1)
        if self.heldout is not None:
            out["heldout_reward"] = scorers[1][1].reshape(-1).float()
        return out

    # -- loss --------------------------------------------------------------------------------------

    def sequence_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Summed sequence log-probs, token counts and mean token entropy of the sampled completions."""
        hidden, head, mask = batch_hidden_states(model, batch)

        def per_chunk(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logps = logits.log_softmax(-1)
            return logps.gather(-1, labels[..., None])[..., 0], -(logps.exp() * logps).sum(-1)

        token_logps, entropy = chunked_head(hidden, head, per_chunk, batch["input_ids"][:, 1:],
                                            chunk_size=self.args.logprob_chunk_size or hidden.shape[1])
        out = {"sample_logps": per_sequence_sum(token_logps, mask, batch), "tokens": per_sequence_sum(mask.float(), mask, batch),
               "entropy": per_sequence_mean(entropy.detach(), mask, batch)}
        out.update({k: v for k, v in batch.items() if k in ("raw", "calibrated", "transformed", "group")
                    or k.startswith(("win/", "heldout_"))})
        return out

    def loss(self, out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean policy-gradient loss over the sampled sequences, and per-sequence metrics."""
        a = self.args
        p, k = (int(x) for x in out["group"])
        losses, advantages = ctrl_loss(out["sample_logps"], ref["sample_logps"], out["transformed"].view(p, k), self.beta,
                                       a.kl_penalty, a.kl_estimator, a.baseline)
        kl = (out["sample_logps"] - ref["sample_logps"]).detach()
        metrics = {"loss": losses.detach(), "reward": out["raw"].float(), "reward/calibrated": out["calibrated"].float(),
                   "reward/transformed": out["transformed"].float(), "kl": kl, "entropy": out["entropy"],
                   "length": out["tokens"].float(), "advantage_abs": advantages.abs().reshape(-1)}
        metrics.update({k: v.float() for k, v in out.items() if k.startswith(("win/", "heldout_"))})
        return losses.mean(), metrics

    def log_scalars(self) -> dict[str, float]:
        """Seconds spent sampling (and syncing weights) and scoring since the start, for the step-cost breakdown."""
        scalars = {f"time/{k}": v for k, v in self.seconds.items()}
        if self.sampler is not None:
            scalars["time/weight_sync"] = self.sampler.seconds["sync"]
        return scalars
