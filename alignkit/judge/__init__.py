"""Judging: LLM, lexical and reward-model judges, win rates, and agreement statistics against human labels.

    from alignkit.judge import make_judge, run_judge
    report = run_judge("data/gym/heldout_judge.jsonl", make_judge("contains"), out_dir="runs/judge")

See docs/judge.md.
"""

from alignkit.judge.agreement import (
    bootstrap_ci, cohen_kappa, confusion_matrix, fleiss_kappa, gwet_ac1, krippendorff_alpha, leniency, percent_agreement,
    ranking_correlation, ranking_stability, scott_pi, sensitivity_specificity,
)
from alignkit.judge.critic import Critic, critique
from alignkit.judge.lexical import LexicalJudge, normalize_answer
from alignkit.judge.llm import PairwiseJudge, PointwiseJudge, ReferenceJudge, builtin_templates, load_template
from alignkit.judge.report import binary_report, pairwise_report, score_report, to_markdown
from alignkit.judge.run import FieldJudge, load_judge_rows, make_judge, run_judge
from alignkit.judge.server import JudgeServer, RemoteJudge, serve_judge
from alignkit.judge.verdict import Verdict, parse_binary, parse_bracketed_choice, parse_choice, parse_rating, parse_tagged_binary
from alignkit.judge.winrate import alpaca_win_rate, length_controlled_win_rate, pairwise_win_rate

__all__ = [
    "Critic", "FieldJudge", "JudgeServer", "LexicalJudge", "PairwiseJudge", "PointwiseJudge", "ReferenceJudge", "RemoteJudge",
    "Verdict", "alpaca_win_rate", "binary_report", "bootstrap_ci", "builtin_templates", "cohen_kappa", "confusion_matrix",
    "critique", "fleiss_kappa", "gwet_ac1", "krippendorff_alpha", "length_controlled_win_rate", "leniency", "load_judge_rows",
    "load_template", "make_judge", "normalize_answer", "pairwise_report", "pairwise_win_rate", "parse_binary",
    "parse_bracketed_choice", "parse_choice", "parse_rating", "parse_tagged_binary", "percent_agreement", "ranking_correlation",
    "ranking_stability", "run_judge", "score_report", "scott_pi", "sensitivity_specificity", "serve_judge", "to_markdown",
]
