"""`alignkit paligner synthesize --config FILE`: MCTS data synthesis from a YAML config, resumable.

```yaml
seeds: data/gym/train_noisy_prompts.jsonl   # rows with `prompt` (and a domain column); seeds_format: ultraprompt reads
                                              # the released seed rows (`context`, `category`) as the official loader does
domain_field: family                          # which column names the item's category
domains: {arithmetic: Math, counting: Math, facts: Honesty, unsafe: Harmlessness}   # category -> principle domain
principles: null                              # a YAML/JSON principle table (default: the built-in one)
rewriter: {kind: gym}                         # gym (the rule-based stand-in) | model (a chat model folder) | endpoint
downstream: {model: data/gym/base-s, backend: auto, template: chat, temperature: 1.0, max_tokens: 48}
scorer: {kind: reward-model, path: data/gym/rm-s}   # reward-model | gold | judge (a pointwise judge model or URL)
iterations: 20
exploration: 0.1
samples_per_node: 3
seed: 0
output_dir: runs/paligner_gym
```

Writes `trees.jsonl` (every tree, after every iteration), then `preference.jsonl` (best vs worst node, for
DPO), `sft_best.jsonl` (seed → best node) and `sft_steps.jsonl` (improving edges, SinglePO) in the
rewriter's chat format, and `summary.json` (nodes, seconds, nodes/s, mean reward gain of the best node).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from alignkit.paligner.mcts import SearchSettings, evaluator, load_trees, new_trees, search
from alignkit.paligner.principles import PrincipleTable


class RewriterSettings(BaseModel):
    """The expansion operator."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["gym", "model", "endpoint"]
    model: str | None = Field(None, description="a chat model folder (kind model) or the served model name (endpoint)")
    url: str | None = None
    style: Literal["operator", "singlepo"] = "operator"
    backend: str = "auto"
    api_key: str | None = None
    temperature: float | None = Field(None, ge=0, description="operator decoding temperature (default: the official code's, "
                                      "1.0 for operator, the OpenAI API default its GPT-4 call leaves unset; 0.0 for singlepo)")
    max_tokens: int | None = Field(None, ge=1, description="operator decoding length (default 4096)")
    seed: int = Field(0, description="operator sampling seed")


class DownstreamSettings(BaseModel):
    """The model whose responses evaluate each node."""

    model_config = ConfigDict(extra="forbid")
    model: str
    backend: str = "auto"
    template: str = "chat"
    temperature: float = 1.0
    max_tokens: int = Field(1024, ge=1)
    stop: list[str] = Field(default_factory=list)


class ScorerSettings(BaseModel):
    """The reward of a response to the original instruction."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["reward-model", "gold", "judge"]
    path: str | None = None
    template: str = "chat"
    options: dict[str, Any] = Field(default_factory=dict, description="reward model options: trust_remote_code, output "
                                    "(e.g. score for ArmoRM), device, dtype, max_batch_tokens (alignkit.scoring.reward_model)")


class SynthesisConfig(BaseModel):
    """A synthesis run (defaults: the paper's)."""

    model_config = ConfigDict(extra="forbid")
    seeds: str
    seeds_format: Literal["rows", "ultraprompt"] = Field("rows", description="rows: one JSON row per seed with "
                                                           "prompt_field (and domain_field); ultraprompt: the released "
                                                           "seed rows, the instruction in context[0].content and the "
                                                           "domain in category (the official load_data/training_data.py)")
    prompt_field: str = "prompt"
    domain_field: str | None = None
    domains: dict[str, str] = Field(default_factory=dict)
    principles: str | None = None
    rewriter: RewriterSettings
    downstream: DownstreamSettings
    scorer: ScorerSettings
    iterations: int = Field(20, ge=1)
    exploration: float = Field(0.1, ge=0)
    samples_per_node: int = Field(3, ge=1)
    seed: int = 0
    limit: int | None = Field(None, ge=1, description="use only the first N seeds")
    output_dir: str


def load_config(path: str | Path, overrides: list[str] | None = None) -> SynthesisConfig:
    """Validate a synthesis config (`KEY=VALUE` overrides as for recipes)."""
    from alignkit.config import RecipeError, apply_override, read_mapping

    raw = read_mapping(path, "a synthesis config must be a mapping (see docs/paligner.md)")
    for item in overrides or []:
        apply_override(raw, item, path)
    try:
        config = SynthesisConfig.model_validate(raw)
    except Exception as err:  # noqa: BLE001 - pydantic's message names the field
        raise RecipeError(f"{path}: {err}") from None
    if not Path(config.seeds).is_file():
        raise RecipeError(f"{path}: seeds: file not found: {config.seeds}")
    if config.scorer.kind != "gold" and not config.scorer.path:
        raise RecipeError(f"{path}: scorer.path is required for a {config.scorer.kind} scorer")
    return config


def make_rewriter(settings: RewriterSettings) -> Any:
    """The MCTS expansion operator a synthesis config names: the gym's rule rewriter, a chat model, or an endpoint."""
    from alignkit.config import RecipeError

    if settings.kind == "gym":
        from alignkit.gym.rewriter import GymRuleRewriter

        return GymRuleRewriter()
    from alignkit.generation.backends import load_generator
    from alignkit.paligner.rewrite import ModelRewriter

    if settings.kind == "endpoint":
        if not settings.url:
            raise RecipeError("rewriter.url is required for an endpoint rewriter")
        generator = load_generator(settings.url, "openai", api_key=settings.api_key,
                                   **({"model_name": settings.model} if settings.model else {}))
    else:
        from alignkit.config import TINY_MODEL_PREFIX, model_source_problem

        problem = model_source_problem(settings.model) if settings.model and not settings.model.startswith(
            ("http://", "https://", TINY_MODEL_PREFIX)) else None
        if problem:
            raise RecipeError(f"rewriter.model: {problem}")
        generator = load_generator(settings.model, settings.backend)
    return ModelRewriter(generator, settings.style, settings.max_tokens, settings.temperature, settings.seed)


def read_seeds(config: SynthesisConfig) -> tuple[list[str], list[str | None]]:
    """Seed instructions and their principle domains."""
    rows = [json.loads(line) for line in Path(config.seeds).read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if config.limit:
        rows = rows[: config.limit]
    prompts, domains = [], []
    for i, row in enumerate(rows, start=1):
        if config.seeds_format == "ultraprompt":
            context = row.get("context")
            if not isinstance(context, list) or not context or not isinstance(context[0], dict) \
                    or not isinstance(context[0].get("content"), str) or not context[0]["content"].strip():
                raise ValueError(f"{config.seeds}:{i}: field 'context': expected a list of messages whose first has the "
                                 "instruction as its content (UltraPrompt seed rows)")
            prompts.append(context[0]["content"])
            category = row.get(config.domain_field or "category")
        else:
            if not isinstance(row.get(config.prompt_field), str) or not row[config.prompt_field].strip():
                raise ValueError(f"{config.seeds}:{i}: field {config.prompt_field!r}: expected a non-empty instruction")
            prompts.append(row[config.prompt_field])
            category = row.get(config.domain_field) if config.domain_field else None
        domains.append(config.domains.get(category, category))  # a category may already be a domain name
    return prompts, domains


def synthesize(config: SynthesisConfig, rewriter: Any, generator: Any = None, scorer: Any = None,
               stop_after: int | None = None) -> dict[str, Any]:
    """Run (or resume) the search and export its data; returns the summary."""
    from alignkit.cache import write_text_atomic
    from alignkit.generation.base import SamplingParams
    from alignkit.generation.rollouts import write_jsonl
    from alignkit.paligner.export import best_rows, preference_rows, step_rows

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = PrincipleTable.load(config.principles) if config.principles else PrincipleTable()
    store = out / "trees.jsonl"
    prompts, domains = read_seeds(config)
    trees = load_trees(store) if store.is_file() else new_trees(prompts, domains)
    if [t.root.instruction for t in trees] != prompts:
        raise ValueError(f"{store} holds trees of other seeds; remove it or change output_dir")
    if generator is None:
        from alignkit.generation.backends import load_generator

        d = config.downstream
        generator = load_generator(d.model, d.backend, d.template)
    if scorer is None:
        from alignkit.judge.scorer import make_scorer

        scorer = make_scorer(config.scorer.kind, config.scorer.path, config.scorer.template, **config.scorer.options)
    d = config.downstream
    params = SamplingParams(n=config.samples_per_node, temperature=d.temperature, max_tokens=d.max_tokens,
                            stop=tuple(d.stop), seed=config.seed)
    settings = SearchSettings(config.iterations, config.exploration, config.samples_per_node, config.seed)
    before = sum(len(t.nodes) for t in trees)
    start = time.perf_counter()
    search(trees, table, rewriter, evaluator(generator, scorer, params), settings, store, stop_after=stop_after)
    seconds = time.perf_counter() - start
    nodes = sum(len(t.nodes) for t in trees) - before
    complete = all(t.next_iter >= config.iterations and t.root.reward is not None for t in trees)
    summary: dict[str, Any] = {"trees": len(trees), "nodes_evaluated": nodes, "seconds": seconds,
                               "nodes_per_s": nodes / max(seconds, 1e-9), "complete": complete,
                               "failures": sum(t.failures for t in trees)}
    if complete:
        files = {"preference.jsonl": preference_rows(trees), "sft_best.jsonl": best_rows(trees),
                 "sft_steps.jsonl": step_rows(trees, table)}
        for name, rows in files.items():
            write_jsonl(out / name, rows)
        gains = [max(n.reward for n in t.nodes if n.reward is not None) - t.root.reward for t in trees]
        summary.update({name: len(rows) for name, rows in files.items()},
                       mean_root_reward=sum(t.root.reward for t in trees) / len(trees),
                       mean_best_gain=sum(gains) / len(gains))
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return summary
