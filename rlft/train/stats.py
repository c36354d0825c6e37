"""Reward normalisation: within each prompt's group of this epoch's samples (GRPO), or per prompt over a running
buffer, as ddpo-pytorch's `PerPromptStatTracker`."""

from __future__ import annotations

from collections import deque

import numpy as np


def group_advantages(prompts: list[str], rewards, eps: float = 1e-6) -> np.ndarray:
    """GRPO's group-relative advantages: (r - mean_g) / (std_g + eps), with the mean and (population) std of the
    rewards of the samples that share the prompt (the group g). A group whose samples are equally good gets 0."""
    rewards = np.asarray(rewards, dtype=np.float64)
    prompts = np.asarray(prompts)
    advantages = np.empty_like(rewards)
    for prompt in np.unique(prompts):
        mask = prompts == prompt
        group = rewards[mask]
        advantages[mask] = (group - group.mean()) / (group.std() + eps)
    return advantages


class PerPromptStatTracker:
    """Advantages = (reward - mean) / std, with the mean/std of the last `buffer_size` rewards of the same prompt.

    Until a prompt has `min_count` rewards, the whole batch's mean/std stand in for its own.
    """

    def __init__(self, buffer_size: int = 32, min_count: int = 8):
        self.buffer_size, self.min_count = buffer_size, min_count
        self.stats: dict[str, deque] = {}

    def update(self, prompts: list[str], rewards) -> np.ndarray:
        rewards = np.asarray(rewards, dtype=np.float64)
        prompts = np.asarray(prompts)
        advantages = np.empty_like(rewards)
        for prompt in np.unique(prompts):
            mask = prompts == prompt
            buf = self.stats.setdefault(str(prompt), deque(maxlen=self.buffer_size))
            buf.extend(rewards[mask].tolist())
            ref = np.asarray(buf) if len(buf) >= self.min_count else rewards
            advantages[mask] = (rewards[mask] - ref.mean()) / (ref.std() + 1e-6)
        return advantages

    def state_dict(self) -> dict:
        return {"buffer_size": self.buffer_size, "min_count": self.min_count, "stats": {k: list(v) for k, v in self.stats.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.buffer_size, self.min_count = state["buffer_size"], state["min_count"]
        self.stats = {k: deque(v, maxlen=self.buffer_size) for k, v in state["stats"].items()}
