"""The training reward and the held-out reward from a reward version, and the model/CLIP compatibility check."""

from __future__ import annotations

import json
from pathlib import Path

from prefs.errors import UserError

TOY_IMAGE_SIZE = 64  # the toy world's pixels; its CLIP knows nothing else, and a real CLIP nothing of it


def model_image_size(pipe) -> int:
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def is_toy_clip(clip_spec: str) -> bool:
    return str(clip_spec).split("/")[0] == "toy" or str(clip_spec).rstrip("/").endswith("assets/toy/clip")


def check_compatible(clip_spec: str, image_size: int, model: str) -> None:
    """UserError when the reward's CLIP cannot judge the model's images (toy CLIP vs real model, or the reverse)."""
    toy_model = image_size == TOY_IMAGE_SIZE
    if is_toy_clip(clip_spec) and not toy_model:
        raise UserError(
            f"the reward was trained on the toy CLIP ({clip_spec}), which only understands the toy world's "
            f"{TOY_IMAGE_SIZE}px shapes, but {model} makes {image_size}px images; train a reward with a real CLIP "
            "(`rlft reward train --clip ViT-B-32/openai`) or train the toy model (`--model toy`)")
    if toy_model and not is_toy_clip(clip_spec):
        raise UserError(
            f"the reward uses the CLIP {clip_spec}, which was never shown the toy world, but {model} is a toy-world "
            "model; train the reward with `--clip toy` for it")


def load_rewards(spec: str, image_size: int, model: str, heldout: bool = True, device=None):
    """(train_fn, heldout_fn or None, info) from reward version `spec`; the last ensemble member is held out."""
    import reward

    rm = reward.load(spec, device=device)
    check_compatible(rm.clip_spec, image_size, model)
    k = rm.members
    if heldout and k >= 2:
        train, held = rm.subset(list(range(k - 1))), rm.subset([k - 1])
    else:
        train, held = rm, None
    info = {"reward": rm.version, "reward_path": str(rm.path), "reward_created_at": rm.metadata.get("created_at"),
            "clip_spec": rm.clip_spec, "members": k,
            "heldout_member": k - 1 if held is not None else None}
    return reward.as_reward_fn(train), (reward.as_reward_fn(held) if held is not None else None), info


def reward_clip_spec(spec: str) -> tuple[str, str]:
    """(version id, clip spec) of a reward version, read from its metadata without loading weights."""
    from reward import versions

    folder = Path(versions.resolve(spec))
    meta = json.loads((folder / versions.META_NAME).read_text(encoding="utf-8"))
    return folder.name, meta.get("clip_spec", "")
