"""CUT on the gym: wrong facts named by the judgment become unlikely; the rest does not collapse.

Negatives are gym responses whose judgment names one wrong value ("…, not Pilgrath."). After CUT,
the named wrong tokens that CUT flags (p_N/p_M > λ under the trained model) lose most of their
probability under the plain template, while unflagged tokens and held-out good responses keep
their log-likelihood within a bound.
"""

import json
import math
import re

import numpy as np

WRONG = re.compile(r"is wrong: .*, not (.+)\.$")


def load(path, keep):
    return [r for r in map(json.loads, open(path)) if keep(r)]


def wrong_fact_rows(path):
    """Negatives whose judgment names exactly one problem: a wrong value ('..., not X.')."""
    def keep(r):
        m = WRONG.search(r["judgment"] or "")
        return bool(m) and r["judgment"].count(".") <= 2 and m.group(1) in r["output"]
    return load(path, keep)


def score(model_dir, method, rows, judged):
    """Per-token log p of each response (plain or judgment context) and the token positions of the named wrong value."""
    from alignkit.generation import HFGenerator

    gen = HFGenerator.from_pretrained(str(model_dir))
    prompts, completions, wrong = [], [], []
    for r in rows:
        enc = gen.tokenizer(r["output"], add_special_tokens=False, return_offsets_mapping=True)
        completions.append(enc["input_ids"] + [gen.tokenizer.eos_token_id])
        prompts.append(method.tokens.encode_prompt(r["instruction"], judgment=r["judgment"] if judged else None))
        m = WRONG.search(r["judgment"] or "")
        start = r["output"].rindex(m.group(1)) if m else -1
        end = start + len(m.group(1)) if m else -1
        wrong.append({i for i, (a, b) in enumerate(enc["offset_mapping"]) if a < end and b > start})
    return gen.score(prompts, completions), wrong


def test_cut_pushes_down_named_wrong_tokens_without_collapse(tmp_path):
    from alignkit.config import load_recipe
    from alignkit.engine.run import build, train

    negatives = wrong_fact_rows("data/gym/train_judgment.jsonl")[:160]
    positives = load("data/gym/train_judgment.jsonl", lambda r: r["judgment"] is None)[:40]
    heldout_positives = load("data/gym/heldout_judgment.jsonl", lambda r: r["judgment"] is None)[:60]
    data = tmp_path / "judgments.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in negatives + positives))
    recipe = load_recipe("recipes/cut_tiny.yaml", [f"data.train={data}", "data.eval=[]", f"training.output_dir={tmp_path / 'run'}",
                                                   "training.num_train_epochs=8", "method_args.positive_ratio=null"])
    method = build(recipe).method
    plain_before, wrong = score(recipe.model.path, method, negatives, judged=False)
    positives_before, _ = score(recipe.model.path, method, heldout_positives, judged=False)

    checkpoint = train(recipe).checkpoint
    plain_after, _ = score(checkpoint, method, negatives, judged=False)
    judged_after, _ = score(checkpoint, method, negatives, judged=True)
    positives_after, _ = score(checkpoint, method, heldout_positives, judged=False)

    log_lambda = math.log(recipe.method_args["threshold"])
    flagged = [[n - m > log_lambda for n, m in zip(ns, ms)] for ns, ms in zip(judged_after, plain_after)]

    def tokens(values, keep):
        return np.array([v for vs, fl, w in zip(values, flagged, wrong) for i, v in enumerate(vs) if keep(i in w, fl[i])])

    wrong_flagged = lambda is_wrong, is_flagged: is_wrong and is_flagged  # noqa: E731
    unflagged = lambda is_wrong, is_flagged: not is_flagged  # noqa: E731
    assert len(tokens(plain_before, wrong_flagged)) >= 20  # CUT found named wrong values to push down
    ratio = np.exp(tokens(plain_after, wrong_flagged)).mean() / np.exp(tokens(plain_before, wrong_flagged)).mean()
    assert ratio < 0.5, ratio  # measured: 0.35
    assert tokens(plain_after, unflagged).mean() > tokens(plain_before, unflagged).mean() - 0.3
    per_response = lambda values: np.mean([np.mean(v) for v in values])  # noqa: E731
    assert per_response(positives_after) > per_response(positives_before) - 0.5
