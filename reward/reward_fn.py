"""A reward function in ddpo-pytorch's shape, for trainers: `fn(images, prompts, metadata) -> (scores, info)`."""

from __future__ import annotations

from typing import Callable


def as_reward_fn(model, grad: bool = False) -> Callable:
    """Wrap a RewardModel as ddpo-pytorch's reward function.

    `images`: float tensor N x 3 x H x W in [0, 1] (or uint8 N x H x W x 3 / N x 3 x H x W, or PIL images);
    `prompts`: a list of N strings; `metadata`: ignored (kept for the signature). Returns `(scores, info)`,
    scores a float tensor [N] (detached unless `grad`), info `{"reward_version", "members", "std"}`, where `std`
    is the spread of the members' utilities per image.
    """
    import torch

    def fn(images, prompts, metadata=None):
        if isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
            if images.shape[-1] == 3 and images.shape[1] != 3:
                images = images.permute(0, 3, 1, 2)
            images = images.float() / 255
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx:
            member = model.members_of(images, list(prompts) if prompts is not None else None)
        scores = member.mean(0)
        std = member.std(0, unbiased=False) if len(member) > 1 else torch.zeros_like(scores)
        return scores, {"reward_version": model.version, "members": model.members, "std": std.detach()}

    return fn
