"""Reward transforms for inference-aware alignment (InfAlign): calibration, transforms, win-rate math.

    from alignkit.rewards import calibrate, best_of_n, inference_win_rate, choose_t
    u = calibrate(policy_rewards, reference_rewards)          # [P, M] against [P, K]
    R = best_of_n(choose_t(n=4, kl_budget=1.0).t)(u)          # the reward the RL trainer maximises
    inference_win_rate(policy_rewards, reference_rewards, "bon", n=4)

Pure numpy/torch; inputs may be numpy arrays or torch tensors and come back as the same kind.
"""

from alignkit.rewards.calibration import Calibrator, calibrate
from alignkit.rewards.kl_tradeoff import TChoice, beta_for_kl, choose_t, kl_winrate_curve, winrate_at_kl
from alignkit.rewards.transforms import RewardTransform, best_of_n, exponential, identity, log, worst_of_n
from alignkit.rewards.winrate import WinRate, inference_win_rate, unbiased_win_rate

__all__ = [
    "Calibrator", "RewardTransform", "TChoice", "WinRate", "best_of_n", "beta_for_kl", "calibrate", "choose_t",
    "exponential", "identity", "inference_win_rate", "kl_winrate_curve", "log", "unbiased_win_rate", "winrate_at_kl",
    "worst_of_n",
]
