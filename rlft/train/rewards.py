"""The reward a run trains on: its version resolved once (fresh or resumed), the model/CLIP compatibility check,
and the training and held-out reward functions loaded from that version."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from prefs.errors import NotFoundError, UserError

TOY_IMAGE_SIZE = 64  # the toy world's pixels; its CLIP knows nothing else, and a real CLIP nothing of it


def model_image_size(pipe) -> int:
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def is_toy_clip(clip_spec: str) -> bool:
    return str(clip_spec).split("/")[0] == "toy" or str(clip_spec).rstrip("/").endswith("assets/toy/clip")


def check_compatible(clip_spec: str, image_size: int, model: str, family: str | None = None) -> None:
    """UserError when the reward's CLIP cannot judge the model's images (toy CLIP vs real model, or the reverse).

    A real CLIP takes images of any size and shape (its preprocessing resizes and centre-crops them: SDXL's 1024 px
    buckets too); the toy CLIP knows only the toy world, an SD 1.x model of its size (`family` None or `sd1`)."""
    toy_model = image_size == TOY_IMAGE_SIZE and family in (None, "sd1")
    if is_toy_clip(clip_spec) and not toy_model:
        if image_size == TOY_IMAGE_SIZE:
            from rlft.models.families import get_family

            what = f"is an {get_family(family).title} model, not the toy world's"
        else:
            what = f"makes {image_size}px images"
        raise UserError(
            f"the reward was trained on the toy CLIP ({clip_spec}), which only understands the toy world's "
            f"{TOY_IMAGE_SIZE}px shapes, but {model} {what}; train a reward with a real CLIP "
            "(`rlft reward train --clip ViT-B-32/openai`) or train the toy model (`--model toy`)")
    if toy_model and not is_toy_clip(clip_spec):
        raise UserError(
            f"the reward uses the CLIP {clip_spec}, which was never shown the toy world, but {model} is a toy-world "
            "model; train the reward with `--clip toy` for it")


def resolve_reward(spec, image_size: int, model: str, family: str | None = None):
    """Reward version `spec` (`latest`, an id, a folder, or a `RewardRef` already resolved) as a `RewardRef`, looked
    up once and checked once against the model's images (`family`: the model's); the run loads and records exactly
    this version."""
    from reward import versions

    ref = spec if isinstance(spec, versions.RewardRef) else versions.ref(spec)
    check_compatible(ref.clip_spec, image_size, model, family)
    return ref


def resumed_reward(provenance: dict, asked: str | None = None, notice: Callable[[str], None] | None = None):
    """The `RewardRef` of the reward version a resumed run trained on (not what `latest` means now): its recorded
    folder, else a `--reward` typed on resume (a moved folder named again), else this home's version of the
    recorded id (a moved home); each only when its creation time is the recorded one, and looked up only when
    the ones before it do not fit. UserError when none is, or when `asked` names another version."""
    from reward import versions

    recorded = provenance.get("reward") or provenance.get("reward_spec", "latest")
    path, created = provenance.get("reward_path"), provenance.get("reward_created_at")

    def lookup(spec):
        try:
            hit = versions.ref(spec)
        except NotFoundError:
            return None
        return dataclasses.replace(hit, folder=hit.folder.resolve())

    typed = lookup(asked) if asked is not None else None
    # (the candidate, looked up when reached; trusted when the run recorded no time: its own folder or id, never a
    # typed one)
    candidates = ((lambda: lookup(path) if path and Path(path).is_dir() else None, True), (lambda: typed, False),
                  (lambda: lookup(recorded), True))
    found = None
    for get, own in candidates:
        ref = get()
        if ref is not None and (ref.created_at == created if created else own):
            found = ref
            break
    if found is None:
        raise UserError(f"cannot resume: the reward version {recorded} this run trains on ({path or 'this home'}, "
                        f"created {created or 'at an unrecorded time'}) is not here; start a new run")
    if not created and path and found.folder != Path(path).resolve() and notice is not None:
        notice(f"this run did not record its reward's creation time; it resumes on this home's {recorded}")
    if asked is not None and (typed is None or typed.folder != found.folder):
        raise UserError(f"cannot resume with a different --reward ({asked}; the run trains on {recorded}); "
                        "resume without --reward, or start a new run")
    return found


def load_rewards(ref, heldout: bool = True, device=None):
    """(train_fn, heldout_fn or None, info) from the resolved reward version `ref` (a `RewardRef`, checked by
    `resolve_reward`); the last ensemble member is held out."""
    import reward

    rm = reward.load(ref, device=device)
    k = rm.members
    if heldout and k >= 2:
        train, held = rm.subset(list(range(k - 1))), rm.subset([k - 1])
    else:
        train, held = rm, None
    info = {"reward": rm.version, "reward_path": str(rm.path), "reward_created_at": rm.metadata.get("created_at"),
            "clip_spec": rm.clip_spec, "members": k,
            "heldout_member": k - 1 if held is not None else None}
    return reward.as_reward_fn(train), (reward.as_reward_fn(held) if held is not None else None), info
