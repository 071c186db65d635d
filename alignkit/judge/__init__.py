"""Judging: agreement statistics between judges and human labels (LLM, lexical and reward-model judges to come)."""

from alignkit.judge.agreement import (
    bootstrap_ci, cohen_kappa, confusion_matrix, fleiss_kappa, krippendorff_alpha, leniency, percent_agreement,
    ranking_correlation, scott_pi, sensitivity_specificity,
)

__all__ = [
    "bootstrap_ci", "cohen_kappa", "confusion_matrix", "fleiss_kappa", "krippendorff_alpha", "leniency",
    "percent_agreement", "ranking_correlation", "scott_pi", "sensitivity_specificity",
]
