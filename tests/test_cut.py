"""CUT: the loss by hand and against the official algorithm, stability, examples, downsampling."""

import math

import pytest
import torch

from alignkit.modeling.logprobs import token_logprobs_from_logits
from alignkit.trainers.cut import cut_loss, downsample_positives

PN, PM = [0.5, 0.2, 0.9], [0.4, 0.3, 0.5]  # p_N/p_M = 1.25, 0.67, 1.8: tokens 0 and 2 flagged at λ = 1.1
L = math.log


def one_negative(pn=PN, pm=PM):
    return torch.log(torch.tensor([pn])), torch.log(torch.tensor([pm])), torch.ones(1, 3, dtype=torch.bool), torch.tensor([True])


@pytest.mark.parametrize("gamma", [0.0, 1.0])
@pytest.mark.parametrize("combine", ["official_half", "sum"])
def test_negative_by_hand(gamma, combine):
    loss, metrics = cut_loss(*one_negative(), threshold=1.1, alpha=0.5, gamma=gamma, combine=combine)
    w0, w2 = (0.5 * PN[0] ** gamma, 0.5 * PN[2] ** gamma)
    ul = -(w0 * L(1 - PM[0]) + L(PM[1]) + w2 * L(1 - PM[2])) / 3
    mle = -(L(PN[0]) + L(PN[1]) + L(PN[2])) / 3
    expected = 0.5 * (mle + ul) if combine == "official_half" else mle + ul
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert metrics["flagged_fraction"].tolist() == pytest.approx([2 / 3])
    assert metrics["unlikelihood"].item() == pytest.approx(ul, rel=1e-6)


def test_positive_is_plain_mle_and_batch_is_mean_over_examples():
    la, lm, _, _ = one_negative()
    aligned = torch.cat([la, torch.log(torch.tensor([[0.25, 0.5, 0.0001]]))])
    misaligned = torch.cat([lm, torch.zeros(1, 3)])  # ignored for the positive
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)  # the positive has 2 response tokens
    loss, metrics = cut_loss(aligned, misaligned, mask, torch.tensor([True, False]), threshold=1.1, alpha=1.0)
    neg, _ = cut_loss(la, lm, mask[:1], torch.tensor([True]), threshold=1.1, alpha=1.0)
    pos = -(L(0.25) + L(0.5)) / 2
    assert metrics["loss"].tolist() == pytest.approx([neg.item(), pos], rel=1e-6)
    assert loss.item() == pytest.approx((neg.item() + pos) / 2, rel=1e-6)
    assert metrics["negative_fraction"].tolist() == [1.0, 0.0]
    assert torch.isnan(metrics["flagged_fraction"][1])  # not defined for a positive: skipped in averages


def test_threshold_limits():
    la, lm, mask, neg = one_negative()
    no_flags, m = cut_loss(la, lm, mask, neg, threshold=1e9)
    assert m["flagged_fraction"].item() == 0
    assert no_flags.item() == pytest.approx(0.5 * (-la.mean() - lm.mean()).item(), rel=1e-6)  # 0.5·(MLE_N + MLE_M)
    _, m = cut_loss(la, lm, mask, neg, threshold=1e-9)
    assert m["flagged_fraction"].item() == 1


def official_reference(logits_first, logits_second, labels, threshold, weight_unlike):
    """A from-scratch transcription of the official code at micro-batch 1 (spec §1.5)."""
    probs_first = torch.softmax(logits_first.float(), -1)
    probs_second = torch.softmax(logits_second.float(), -1)
    nll = -torch.log(probs_first.gather(-1, labels[:, None]).squeeze(-1)).mean()
    p_n = probs_first.gather(-1, labels[:, None]).squeeze(-1)
    p_m = probs_second.gather(-1, labels[:, None]).squeeze(-1)
    flagged = (p_n / p_m).detach() > threshold
    p = torch.where(flagged, 1 - p_m, p_m)
    p = torch.where(p == 0, p + 1e-5, p)
    logs = torch.log(p) * torch.where(flagged, torch.tensor(weight_unlike), torch.tensor(1.0))
    ul = -logs.sum() / labels.numel()
    return (nll + ul) / 2


def test_matches_the_official_algorithm_at_micro_batch_one():
    torch.manual_seed(0)
    labels = torch.randint(0, 50, (12,))
    first, second = torch.randn(12, 50) * 2, torch.randn(12, 50) * 2
    first[torch.arange(6), labels[:6]] += 2.0  # the judgment context makes some tokens likelier
    expected = official_reference(first, second, labels, 1.2, 0.5)
    lp_first = token_logprobs_from_logits(first[None], labels[None], log1m=True)
    lp_second = token_logprobs_from_logits(second[None], labels[None], log1m=True)
    loss, metrics = cut_loss(lp_first[..., 0], lp_second[..., 0], torch.ones(1, 12, dtype=torch.bool), torch.tensor([True]),
                             threshold=1.2, alpha=0.5, log1m_misaligned=lp_second[..., 1])
    assert 0 < metrics["flagged_fraction"].item() < 1
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("gold_logit", [50.0, -50.0])
def test_finite_loss_and_gradients_when_p_goes_to_one_or_zero(gold_logit):
    labels = torch.tensor([[3, 3, 3]])
    logits_m = torch.zeros(1, 3, 8)
    logits_m[0, :, 3] = gold_logit  # p_M(gold) -> 1 (or 0) on every position
    logits_m.requires_grad_()
    logits_n = torch.zeros(1, 3, 8)
    logits_n[0, :, 3] = gold_logit + 60.0
    # p_N/p_M cannot exceed λ > 1 once p_M -> 1, so flag with λ < 1 (λ -> 0 flags every token).
    logits_n.requires_grad_()
    n = token_logprobs_from_logits(logits_n, labels, log1m=True)
    m = token_logprobs_from_logits(logits_m, labels, log1m=True)
    naive = torch.log(-torch.expm1(m[..., 0]))
    if gold_logit > 0:
        assert torch.isinf(naive).all()  # the naive log(1 − p) breaks here; the logits form does not
    loss, metrics = cut_loss(n[..., 0], m[..., 0], torch.ones(1, 3, dtype=torch.bool), torch.tensor([True]),
                             threshold=0.5, log1m_misaligned=m[..., 1])
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits_m.grad).all() and torch.isfinite(logits_n.grad).all()
    if gold_logit > 0:
        assert metrics["flagged_fraction"].item() == 1 and loss.item() > 10  # a strong push down, not −inf


def test_where_branches_do_not_leak_nan_gradients():
    lpn = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    lpm = torch.tensor([[0.0, -3.0]], requires_grad=True)  # p_M = 1 at an unflagged position (ratio < λ)
    loss, _ = cut_loss(lpn, lpm, torch.ones(1, 2, dtype=torch.bool), torch.tensor([True]), threshold=1.1)
    loss.backward()
    assert torch.isfinite(lpm.grad).all() and torch.isfinite(lpn.grad).all()


def test_downsampling_keeps_a_quarter_of_the_negatives():
    from alignkit.data.records import JudgmentTriple

    records = [JudgmentTriple(instruction=f"q{i}", output="a", judgment=None) for i in range(713)]
    records += [JudgmentTriple(instruction=f"n{i}", output="a", judgment="bad") for i in range(287)]
    kept = downsample_positives(records, 0.25, seed=42)
    assert sum(r.is_positive for r in kept) == 71 and sum(not r.is_positive for r in kept) == 287
    assert kept == downsample_positives(records, 0.25, seed=42)  # seeded, deterministic
    assert downsample_positives(records, None) == records


def test_examples_share_the_response_and_skip_dummy_rows(tiny_model_dir):
    from alignkit.config import validate_recipe
    from alignkit.modeling.logprobs import completion_matrix
    from alignkit.engine.run import build

    recipe = validate_recipe({"method": "cut", "model": {"path": str(tiny_model_dir)},
                              "data": {"train": "data/samples/cut.jsonl", "format": "cut", "template": "alpaca", "max_length": 256, "max_prompt_length": 200},
                              "method_args": {"positive_ratio": None}})
    prep = build(recipe)
    examples = prep.train_examples
    assert [e["negative"] for e in examples] == [True, False, True, False]
    batch = prep.method.collate(examples)
    assert batch["input_ids"].shape[0] == 4 + 2  # aligned rows + Misalign rows of the two negatives only
    ids, valid = completion_matrix(batch["input_ids"][:, 1:], batch["loss_mask"][:, 1:].bool(), batch)
    assert torch.equal(ids[0][valid[0]], ids[4][valid[4]]) and torch.equal(ids[2][valid[2]], ids[5][valid[5]])
    text = prep.tokenizer.decode(examples[0]["aligned_prompt_ids"])
    assert "### Judgment:\nThe answer is wrong: 7 plus 5 is 12, not 13." in text
    assert "### Judgment" not in prep.tokenizer.decode(examples[0]["misaligned_prompt_ids"])
