"""The reward a run trains on: its version resolved once (fresh or resumed), the model/CLIP compatibility check,
and the training and held-out reward functions loaded from that version.

`--reward` (and `--judge`) take a reward version, a built-in (`reward.builtins`) or a weighted sum of them
(`reward.combine`). A lone version resolves to a `RewardRef`, as always; anything else to a `RewardMix` whose
version terms are resolved once the same way. A mix of two terms or more trains on the weighted sum of its
terms' scores, each normalised per prompt over the batch's samples of that prompt (`combined_scores`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prefs.errors import NotFoundError, UserError

TOY_IMAGE_SIZE = 64  # the toy world's pixels; its CLIP knows nothing else, and a real CLIP nothing of it


def model_image_size(pipe) -> int:
    """The side of the model's own (square) images: its family adapter's."""
    from rlft.models.adapters import adapter_for

    return adapter_for(pipe).image_size[0]


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


def check_builtin_compatible(spec: str, image_size: int, model: str, family: str | None = None) -> None:
    """UserError when the built-in `spec` cannot judge the model's images: a real model on the toy world, or the
    toy CLIP on a real model. JPEG sizes judge any image."""
    from reward.builtins import image_space, parse_spec_name

    space = image_space(spec)
    if space is None:
        return
    toy_model = image_size == TOY_IMAGE_SIZE and family in (None, "sd1")
    if is_toy_clip(space) and not toy_model:
        raise UserError(f"{spec} scores with the toy CLIP, which only understands the toy world's {TOY_IMAGE_SIZE}px "
                        f"shapes, but {model} is not the toy model; give it a real CLIP ({parse_spec_name(spec)}="
                        "ViT-B-32/openai)")
    if toy_model and not is_toy_clip(space):
        raise UserError(f"{parse_spec_name(spec)} judges real images with {space}, which never saw the toy world, but "
                        f"{model} is a toy-world model; there use jpeg-compressibility, jpeg-incompressibility, "
                        "clipscore=toy or a reward trained with --clip toy")


@dataclass(frozen=True)
class MixTerm:
    """One term of a `RewardMix`: its weight and either a resolved version (`ref`) or a built-in spec."""

    weight: float
    spec: str
    ref: object | None = None  # a RewardRef for a version term
    label: str = ""

    @property
    def builtin(self) -> bool:
        return self.ref is None


@dataclass(frozen=True)
class RewardMix:
    """A reward expression resolved once: its canonical text and terms (see the module docstring)."""

    text: str
    terms: tuple[MixTerm, ...]

    @property
    def version_terms(self) -> list[MixTerm]:
        return [t for t in self.terms if not t.builtin]

    @property
    def label(self) -> str:
        """A short name: a lone built-in's name, else the expression."""
        from reward.builtins import parse_spec_name

        if len(self.terms) == 1 and self.terms[0].weight == 1 and self.terms[0].builtin:
            return parse_spec_name(self.terms[0].spec)
        return self.text


def _labels(terms) -> list[str]:
    from reward.builtins import parse_spec_name

    labels = []
    for t in terms:
        base = parse_spec_name(t.spec) if t.ref is None else t.ref.version
        label, k = base, 2
        while label in labels:
            label, k = f"{base}#{k}", k + 1
        labels.append(label)
    return labels


def resolve_reward(spec, image_size: int, model: str, family: str | None = None):
    """Reward `spec` (`latest`, an id, a folder, a built-in, a weighted sum, or a `RewardRef` / `RewardMix` already
    resolved) as a `RewardRef` (a lone version) or a `RewardMix`, looked up once and checked once against the
    model's images (`family`: the model's); the run loads and records exactly this."""
    from reward import combine, versions
    from reward.builtins import is_builtin

    if isinstance(spec, (versions.RewardRef, RewardMix)):
        reward = spec
    else:
        terms = combine.parse(str(spec))
        if len(terms) == 1 and terms[0].weight == 1 and not is_builtin(terms[0].spec):
            reward = versions.ref(terms[0].spec)
        else:
            resolved = [MixTerm(t.weight, t.spec, None if is_builtin(t.spec) else versions.ref(t.spec)) for t in terms]
            resolved = [dataclasses.replace(t, label=label) for t, label in zip(resolved, _labels(resolved), strict=True)]
            reward = RewardMix(combine.text(terms), tuple(resolved))
    check_reward(reward, image_size, model, family)
    return reward


def check_reward(reward, image_size: int, model: str, family: str | None = None) -> None:
    """`check_compatible` for each version of a resolved reward, `check_builtin_compatible` for each built-in."""
    if not isinstance(reward, RewardMix):
        check_compatible(reward.clip_spec, image_size, model, family)
        return
    for t in reward.terms:
        if t.builtin:
            check_builtin_compatible(t.spec, image_size, model, family)
        else:
            check_compatible(t.ref.clip_spec, image_size, model, family)


def combined_scores(prompts, scores: list, weights: list[float]) -> np.ndarray:
    """The weighted sum of the terms' `scores` (one array of N per term), each normalised per prompt over the
    samples of that prompt (`group_advantages`: (x - mean) / (std + eps); a prompt with one sample gets 0); a lone
    term is its scores times its weight, unnormalised."""
    from rlft.train.stats import group_advantages

    if len(scores) == 1:
        return weights[0] * np.asarray(scores[0], dtype=np.float64)
    total = np.zeros(len(prompts))
    for w, s in zip(weights, scores, strict=True):
        total += w * group_advantages(list(prompts), s)
    return total


def reward_label(reward) -> str:
    """The name a resolved reward goes by in metrics: a version's id, a lone built-in's name, else the expression."""
    return reward.label if isinstance(reward, RewardMix) else reward.version


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
    """(train_fn, heldout_fn or None, info) from the resolved reward `ref` (a `RewardRef` or `RewardMix`, checked by
    `resolve_reward`); a version's last ensemble member is held out. A mix is held out on the held-out member of
    its version term when it has exactly one, else not at all."""
    import reward

    if isinstance(ref, RewardMix):
        return _load_mix(ref, heldout, device)
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


def version_info(ref) -> dict:
    """What a run records of a reward version (and looks it up by on resume)."""
    return {"reward": ref.version, "reward_path": str(ref.folder), "reward_created_at": ref.created_at,
            "clip_spec": ref.clip_spec}


def _load_mix(mix: RewardMix, heldout: bool, device):
    import reward
    from reward.builtins import load_builtin

    fns, records, held_fn, held_member = [], [], None, None
    versions = mix.version_terms
    for t in mix.terms:
        record = {"weight": t.weight, "spec": t.spec, "label": t.label}
        if t.builtin:
            b = load_builtin(t.spec, device=device)
            fns.append(b)
            record["builtin"] = b.provenance()
        else:
            rm = reward.load(t.ref, device=device)
            k = rm.members
            hold = heldout and k >= 2 and len(versions) == 1
            fns.append(reward.as_reward_fn(rm.subset(list(range(k - 1))) if hold else rm))
            if hold:
                held_fn, held_member = reward.as_reward_fn(rm.subset([k - 1])), k - 1
            record.update(version_info(t.ref), members=k)
        records.append(record)
    weights, labels = [t.weight for t in mix.terms], [t.label for t in mix.terms]

    def fn(images, prompts, metadata=None):
        import torch

        raw = [np.asarray(torch.as_tensor(f(images, prompts, metadata)[0]).detach().float().cpu()) for f in fns]
        total = combined_scores(list(prompts), raw, weights)
        info = {"reward": mix.text}
        if len(raw) > 1:  # a sum's total is normalised: its terms' raw scores say what moved
            info["terms"] = dict(zip(labels, raw, strict=True))
        return torch.as_tensor(total, dtype=torch.float32), info

    info = {"reward": mix.text, "reward_terms": records, "heldout_member": held_member}
    return fn, held_fn, info


def load_judge(ref, device=None):
    """(reward fn, info) of a judge: a resolved reward scored whole (every member of a version)."""
    fn, _, info = load_rewards(ref, heldout=False, device=device)
    return fn, info


def resumed_spec(record: dict, asked: str | None = None, notice: Callable[[str], None] | None = None):
    """The resolved reward (`RewardRef` or `RewardMix`) a run recorded in `record` (its provenance, or a judge's
    record): a version as `resumed_reward` finds it; a mix from its recorded terms, each version term found the
    same way. `asked`: the reward typed on resume, which must be the recorded one."""
    from reward import combine

    terms = record.get("reward_terms")
    if not terms:
        return resumed_reward(record, asked, notice)
    if asked is not None and combine.text(combine.parse(asked)) != record["reward"]:
        raise UserError(f"cannot resume with a different --reward ({asked}; the run trains on {record['reward']}); "
                        "resume without --reward, or start a new run")
    resolved = []
    for t in terms:
        ref = None if "builtin" in t else resumed_reward(t, None, notice)
        resolved.append(MixTerm(float(t["weight"]), t["spec"], ref, t.get("label", "")))
    return RewardMix(record["reward"], tuple(resolved))
