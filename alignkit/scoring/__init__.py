"""Scorers (one float per completion): reward models, the gym's gold reward; best-of-N selection by any scorer.

Pointwise LLM judges are scorers too (`alignkit.judge.scorer.JudgeScorer`); `alignkit.judge.scorer.make_scorer`
builds any of them by name.
"""

from alignkit.scoring.base import Scorer, score_groups
from alignkit.scoring.best_of_n import best_of_n, select
from alignkit.scoring.gold import GoldScorer
from alignkit.scoring.reward_model import RewardModelScorer

__all__ = ["GoldScorer", "RewardModelScorer", "Scorer", "best_of_n", "score_groups", "select"]
