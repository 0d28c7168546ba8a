"""Offline evaluation of policies from logged feedback: estimators, evaluators, replay."""

from allocator.replay.columns import ForeignLogConfig
from allocator.replay.dataset import LoggedData
from allocator.replay.estimators import (
    DM,
    DR,
    IPS,
    SNDR,
    SNIPS,
    BanditFeedback,
    Diagnostics,
    Estimate,
    Estimator,
    SwitchDR,
    diagnostics,
)
from allocator.replay.evaluate import Evaluation, evaluate, target_distribution
from allocator.replay.nonstationary import (
    NonstationaryResult,
    compare_nonstationary,
    replay_nonstationary,
)
from allocator.replay.rejection import ReplayResult, replay_learning_policy
from allocator.replay.reward_model import LogisticRewardModel, RewardModel, RidgeRewardModel
from allocator.replay.sources import from_decision_log, load_foreign_log

__all__ = [
    "DM",
    "DR",
    "IPS",
    "SNDR",
    "SNIPS",
    "BanditFeedback",
    "Diagnostics",
    "Estimate",
    "Estimator",
    "Evaluation",
    "ForeignLogConfig",
    "LoggedData",
    "LogisticRewardModel",
    "NonstationaryResult",
    "ReplayResult",
    "RewardModel",
    "RidgeRewardModel",
    "SwitchDR",
    "compare_nonstationary",
    "diagnostics",
    "evaluate",
    "from_decision_log",
    "load_foreign_log",
    "replay_learning_policy",
    "replay_nonstationary",
    "target_distribution",
]
