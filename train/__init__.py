"""entrodec.train: entropy-controlled RL fine-tuning (GRPO family) whose rollouts reuse entrodec's
processors, with the behaviour policy's log-probs recorded under the processed distribution.

>>> from entrodec.train import Trainer, load_preset              # doctest: +SKIP
>>> history = Trainer(load_preset("tiny"), "runs/tiny").run()     # doctest: +SKIP
"""

from .config import TrainConfig, available_presets, config_from_dict, load_config, load_preset
from .entropy_control import (
    CONTROLS, ClipCov, EntropyBonus, EntropyControl, ForkingTokens, KLCov, Steer, TargetEntropy, TokenPlan,
    TokenStats, make_control, policy_loss,
)
from .objective import aggregate, clipped_surrogate, group_advantages, k3_kl
from .tasks import Arithmetic, DigitsFormat, Example, Lowercase, PromptFile, Task, make_task
from .trainer import Trainer, resume_config

__all__ = [
    "Trainer", "TrainConfig", "load_config", "load_preset", "available_presets", "config_from_dict", "resume_config",
    "EntropyControl", "ClipCov", "KLCov", "ForkingTokens", "Steer", "EntropyBonus", "TargetEntropy", "CONTROLS",
    "make_control", "TokenStats", "TokenPlan", "policy_loss", "group_advantages", "clipped_surrogate", "k3_kl",
    "aggregate", "Arithmetic", "DigitsFormat", "Lowercase", "PromptFile", "Example", "Task", "make_task",
]
