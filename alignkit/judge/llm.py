"""LLM judges over any generation backend: reference-based correctness, pointwise rating, pairwise comparison.

Each judge fills a prompt template (a file in `alignkit/judge/templates/`, or one you pass) and asks
the judge model greedily, as a user chat message. Identical prompts are asked once: within a call they
are de-duplicated, and across runs answers come from an on-disk cache (SQLite under
`$ALIGNKIT_CACHE/judge.sqlite`) keyed by judge model identity (`model_id`; without one nothing is cached) +
template + the filled prompt + the decoding length. Progress shows judgments/s.

Pairwise judging presents every pair in both orders (candidate as A, then as B). Agreeing orders give a
win (1), a loss (0) or, with an MT-Bench "[[C]]" tie template, a tie (0.5) for the candidate; disagreeing
orders are a tie (0.5) with status `inconsistent` (or their mean, `pair_rule="average"`), which the report
counts: a judge that always says "A" produces only ties.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

from alignkit.data.records import JudgeItem
from alignkit.generation.base import Generator, SamplingParams
from alignkit.judge.verdict import Verdict, parse_binary, parse_bracketed_choice, parse_choice, parse_rating, parse_tagged_binary

TEMPLATES = {
    "reference": "reference_guidelines_examples",
    "pointwise": "pointwise_rubric",
    "pairwise": "pairwise",
    "critic": "critic",
}
REQUIRED_FIELDS = {"reference": ("question", "references", "response"), "pointwise": ("question", "response"),
                   "pairwise": ("question", "response_a", "response_b"), "critic": ("question", "response")}


def builtin_templates() -> list[str]:
    """Names of the templates shipped in the package."""
    return sorted(p.name[:-4] for p in resources.files("alignkit.judge.templates").iterdir() if p.name.endswith(".txt"))


OPTIONAL_FIELDS = {"pointwise": ("reference",)}


def load_template(name_or_path: str, kind: str) -> str:
    """A template by built-in name (see `builtin_templates`) or file path; checks its placeholders.

    Raises ValueError naming the template and each required placeholder it lacks, or a placeholder it
    has that the judge does not fill (a literal brace in a pasted protocol text must be doubled: "{{").
    """
    import string

    path = Path(name_or_path)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
    elif name_or_path in builtin_templates():
        text = resources.files("alignkit.judge.templates").joinpath(f"{name_or_path}.txt").read_text(encoding="utf-8")
    else:
        raise ValueError(f"judge template {name_or_path!r} is neither a file nor a built-in ({', '.join(builtin_templates())})")
    known = REQUIRED_FIELDS[kind] + OPTIONAL_FIELDS.get(kind, ())
    try:
        used = [name for _, name, spec, conv in string.Formatter().parse(text) if name is not None]
    except ValueError as err:  # a lone "{" or "}"
        raise ValueError(f"judge template {name_or_path}: {err}; write a literal brace as {{{{ or }}}}") from None
    missing = [f for f in REQUIRED_FIELDS[kind] if f not in used]
    if missing:
        raise ValueError(f"judge template {name_or_path}: a {kind} judge template needs the placeholder"
                         f"{'s' if len(missing) > 1 else ''} {', '.join('{' + f + '}' for f in missing)}"
                         f" (it has {', '.join('{' + f + '}' for f in dict.fromkeys(used)) or 'none'})")
    unknown = [f for f in dict.fromkeys(used) if f not in known]
    if unknown:
        raise ValueError(f"judge template {name_or_path}: unknown placeholder {', '.join('{' + f + '}' for f in unknown)}; a {kind} "
                         f"judge fills {', '.join('{' + f + '}' for f in known)}. Rename it, or double the braces ({{{{...}}}}) "
                         f"if it is literal text")
    return text


class JudgeCache:
    """Judge outputs on disk (SQLite): key -> raw output. Safe to share between threads."""

    def __init__(self, path: str | Path | None = None) -> None:
        from alignkit.cache import cache_dir

        self.path = Path(path) if path else cache_dir() / "judge.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS judgments (key TEXT PRIMARY KEY, output TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        with self._lock, self._connect() as db:
            out = {}
            for i in range(0, len(keys), 500):
                chunk = list(keys[i : i + 500])
                rows = db.execute(f"SELECT key, output FROM judgments WHERE key IN ({','.join('?' * len(chunk))})", chunk)
                out.update(dict(rows.fetchall()))
            return out

    def put_many(self, pairs: dict[str, str]) -> None:
        with self._lock, self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO judgments VALUES (?, ?)", list(pairs.items()))


class LLMJudge:
    """Shared machinery: fill a template, ask the judge model once per distinct prompt, parse."""

    kind = "reference"

    def __init__(self, generator: Generator, template: str | None = None, model_id: str = "", max_tokens: int = 32,
                 cache: JudgeCache | bool = True, batch_size: int = 64, progress: bool = True) -> None:
        self.generator = generator
        self.template_name = template or TEMPLATES[self.kind]
        self.template = load_template(self.template_name, self.kind)
        self.model_id = model_id
        self.max_tokens = max_tokens
        # The cache is keyed by the judge model's identity; without one, two models would share answers.
        self.cache = (JudgeCache() if model_id else None) if cache is True else (cache or None)
        self.batch_size = batch_size
        self.progress = progress
        self.name = f"llm-{self.kind}"
        self.calls = 0  # prompts actually sent to the model (not cached, de-duplicated)

    def _key(self, prompt: str) -> str:
        payload = "\x1f".join([self.model_id, self.template, str(self.max_tokens), prompt])
        return hashlib.sha256(payload.encode()).hexdigest()

    def ask(self, prompts: Sequence[str]) -> list[str]:
        """The judge model's greedy answer to each prompt (cached, each distinct prompt asked once)."""
        from tqdm.auto import tqdm

        keys = [self._key(p) for p in prompts]
        known = self.cache.get_many(list(dict.fromkeys(keys))) if self.cache else {}
        todo = {k: p for k, p in zip(keys, prompts) if k not in known}
        items = list(todo.items())
        params = SamplingParams(n=1, temperature=0.0, max_tokens=self.max_tokens, seed=0)
        start = time.perf_counter()
        with tqdm(total=len(items), desc=f"judging ({self.name})", unit="judgment", disable=not self.progress or not items) as bar:
            for i in range(0, len(items), self.batch_size):
                chunk = items[i : i + self.batch_size]
                results = self.generator.generate([p for _, p in chunk], params)
                fresh = {k: r.completions[0].text for (k, _), r in zip(chunk, results)}
                self.calls += len(chunk)
                known.update(fresh)
                if self.cache:
                    self.cache.put_many(fresh)
                bar.update(len(chunk))
                bar.set_postfix(judgments_s=f"{(i + len(chunk)) / max(time.perf_counter() - start, 1e-9):.1f}")
        return [known[k] for k in keys]

    def fill(self, **fields: str) -> str:
        return self.template.format(**fields)


def _references_text(item: JudgeItem) -> str:
    refs = item.reference
    if refs is None or refs == [] or refs == "":
        raise ValueError(f"a reference judge needs reference answers; item {item.question!r} has none")
    return refs if isinstance(refs, str) else "\n".join(refs)


def reference_prompt(template: str, item: JudgeItem, truncation: str | None = None) -> str:
    """The prompt a reference judge sends for `item`: the template text filled with its question, references and
    answer; with `truncation` (a preset of `alignkit.judge.truncation`) the answer is truncated and stripped first."""
    from alignkit.judge.truncation import truncate_response

    answer = item.answer if truncation is None else truncate_response(item.answer, truncation)
    return template.format(question=item.question, references=_references_text(item), response=answer)


class ReferenceJudge(LLMJudge):
    """Correct/incorrect against reference answer(s) (Judging the Judges). The default template is the
    paper's final one, guidelines with examples; a template asking for <evaluation> tags is parsed from
    the tags and gets 256 new tokens for its reasoning. The judge reads each answer as the official pipeline
    hands it to every evaluator: cut at the first "\\nQ:" and stripped (`truncation`, a preset of
    `alignkit.judge.truncation`; "skip" only strips)."""

    kind = "reference"

    def __init__(self, generator: Generator, template: str | None = None, truncation: str = "newlinequestion",
                 **options: Any) -> None:
        from alignkit.judge.truncation import check_truncation

        super().__init__(generator, template, **options)
        self.truncation = check_truncation(truncation)
        self.tagged = "<evaluation>" in self.template
        if self.tagged and "max_tokens" not in options:
            self.max_tokens = 256

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        prompts = [reference_prompt(self.template, it, self.truncation) for it in items]
        parse = parse_tagged_binary if self.tagged else parse_binary
        return [parse(out) for out in self.ask(prompts)]


class PointwiseJudge(LLMJudge):
    """A 1-10 rating of each answer (the template's rubric); value = the rating."""

    kind = "pointwise"

    def __init__(self, generator: Generator, template: str | None = None, scale: tuple[float, float] = (1, 10),
                 **options: Any) -> None:
        super().__init__(generator, template, **options)
        self.scale = scale

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        prompts = [self.fill(question=it.question, response=it.answer,
                             reference=_references_text(it) if "{reference}" in self.template else "") for it in items]
        return [parse_rating(out, *self.scale) for out in self.ask(prompts)]


PAIR_RULES = ("both", "average")
_CANDIDATE_SCORE = ({"A": 1.0, "B": 0.0, "C": 0.5}, {"A": 0.0, "B": 1.0, "C": 0.5})  # candidate shown first, second


class PairwiseJudge(LLMJudge):
    """The item's `answer` (candidate) against its `reference` (the baseline's output), in both orders.

    A template with "[[C]]" in it asks for MT-Bench's verdicts, "[[A]]", "[[B]]" or "[[C]]" for a tie
    (`parse_bracketed_choice`; e.g. the built-in `pairwise_tie`); any other asks for "A" or "B"
    (`parse_choice`). Each order gives the candidate 1 (win), 0.5 (tie) or 0 (loss); `pair_rule` combines them:
    - "both" (default; MT-Bench's `play_a_match_pair` and show_result): a win (1) or loss (0) only when both
      orders say so, a tie (0.5) when both say tie, otherwise a tie with status `inconsistent`;
    - "average": the mean of the two orders (Arena-Hard's scoring), e.g. a win and a tie give 0.75; orders
      that differ still have status `inconsistent`.
    Unparsed if either order's answer is not a verdict.
    """

    kind = "pairwise"

    def __init__(self, generator: Generator, template: str | None = None, max_tokens: int = 8, pair_rule: str = "both",
                 **options: Any) -> None:
        if pair_rule not in PAIR_RULES:
            raise ValueError(f"pair_rule must be one of {', '.join(PAIR_RULES)}, got {pair_rule!r}")
        super().__init__(generator, template, max_tokens=max_tokens, **options)
        self.pair_rule = pair_rule
        self.ties = "[[C]]" in self.template

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        prompts = []
        for it in items:
            if not isinstance(it.reference, str) or not it.reference:
                raise ValueError(f"pairwise judging needs the baseline's output in `reference`; item {it.question!r} has none")
            prompts.append(self.fill(question=it.question, response_a=it.answer, response_b=it.reference))
            prompts.append(self.fill(question=it.question, response_a=it.reference, response_b=it.answer))
        outs = self.ask(prompts)
        parse = parse_bracketed_choice if self.ties else parse_choice
        return [pair_verdict(outs[2 * i], outs[2 * i + 1], self.pair_rule, parse) for i in range(len(items))]


def pair_verdict(candidate_first: str, candidate_second: str, rule: str = "both",
                 parse: Callable[[str], str | None] = parse_choice) -> Verdict:
    """Combine the two orders' outputs into P(candidate wins) under `rule` ("both" or "average", see `PairwiseJudge`)."""
    first, second = parse(candidate_first), parse(candidate_second)
    raw = [candidate_first, candidate_second]
    if first is None or second is None:
        return Verdict(None, "unparsed", raw)
    scores = [_CANDIDATE_SCORE[0][first], _CANDIDATE_SCORE[1][second]]
    if scores[0] == scores[1]:
        return Verdict(scores[0], "ok", raw, {"tie": True} if scores[0] == 0.5 else {})
    detail: dict[str, Any] = {"orders": scores}
    if first == second:  # the same letter in both orders: the judge preferred a position, not a response
        detail["preferred_position"] = first
    return Verdict(0.5 if rule == "both" else sum(scores) / 2, "inconsistent", raw, detail)
