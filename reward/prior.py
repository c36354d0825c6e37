"""Reward priors: a personal reward that starts from another reward and learns only the difference.

    reward(x) = w * prior(x) + personal(x)

`rlft reward train --prior SPEC` fits each ensemble member as the prior's score times a weight `w` (learnt, or set
with `--prior-weight`) plus its own personal head, whose weights the L2 term pulls toward 0 (its output layer
starts at 0): with few judgements the reward is the prior, and it moves where the judgements speak. SPEC is
  - a reward version (`r0003`, `latest`, a version folder): another person's or a team's taste, its ensemble mean.
    The version is copied into the new version's `prior/` folder, so the new one loads wherever it goes;
  - a built-in public reward (`pickscore`, `hpsv2`, `laion-aesthetic`), loaded through `reward.builtins`;
  - `laion:PATH`: a LAION improved-aesthetic-predictor file, whose head itself is fine-tuned instead
    (`reward.laion`, `reward.heads.LaionPriorHead`; ViT-L/14 embeddings only).
A prior scores pixels, so it may read another CLIP than the personal head; it must judge the same world (the toy
world's CLIP or a real one). Its scores of pool images are computed once and cached under
`<home>/cache/priors/<prior key>/`, keyed by image and prompt (`PriorScoreCache`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from prefs.errors import NotFoundError, UserError

BUILTIN_PRIORS = ("pickscore", "hpsv2", "laion-aesthetic")  # the public rewards `reward.builtins` provides
PRIOR_DIR = "prior"  # a version prior's copy inside the version folder
SCORE_BATCH = 64  # images per prior pass when filling the cache
_log = logging.getLogger(__name__)


def valid_forms() -> str:
    return (f"a reward version (latest, r0003, or a version folder), {', '.join(BUILTIN_PRIORS)}, "
            "or laion:PATH (a LAION improved-aesthetic-predictor .pth)")


@dataclasses.dataclass(frozen=True)
class PriorSpec:
    """What `--prior` names: `kind` is version, builtin or laion; `spec` the text (for laion: the file's path)."""

    kind: str
    spec: str


def _builtins_module():
    """`reward.builtins`, or None where this installation lacks it."""
    try:
        return importlib.import_module("reward.builtins")
    except ModuleNotFoundError as e:
        if e.name != "reward.builtins":
            raise
        return None


def parse_prior(spec: str | None) -> PriorSpec | None:
    """`--prior` text -> PriorSpec (None passes through); UserError for an empty one or `laion:` without a path.

    A version spec is only checked when the prior is loaded (`load_prior`), where an unknown one lists the versions."""
    if spec is None:
        return None
    text = str(spec).strip()
    if not text:
        raise UserError(f"--prior is empty; valid: {valid_forms()}")
    if text.startswith("laion:"):
        path = text[len("laion:"):]
        if not path:
            raise UserError(f"--prior laion: needs a path (laion:PATH); valid: {valid_forms()}")
        return PriorSpec("laion", path)
    builtins = _builtins_module()
    if text in BUILTIN_PRIORS or (builtins is not None and builtins.is_builtin(text)):
        return PriorSpec("builtin", text)
    return PriorSpec("version", text)


def is_toy_clip(clip_spec: str) -> bool:
    """Whether a CLIP spec names the toy world's CLIP (by name or its folder)."""
    from reward.clip import builtin_clips

    text = os.fspath(clip_spec)
    if text == "toy":
        return True
    toy = builtin_clips().get("toy")
    try:
        return toy is not None and Path(text).expanduser().resolve() == toy.resolve()
    except OSError:
        return False


def world(clip_spec: str) -> str:
    return "toy" if is_toy_clip(clip_spec) else "real"


class Prior(torch.nn.Module):
    """A loaded prior: `score(images, prompts)` -> its utilities (tensor [N]), differentiable in the pixels when
    the prior is. `kind` (version | builtin), `spec`, `key` (its identity: the score cache's folder), `world`
    (toy | real: the images it can judge), `model` (a RewardModel, or the built-in's scorer)."""

    def __init__(self, kind: str, spec: str, model, key: str, world: str, record: dict):
        super().__init__()
        self.kind, self.spec, self.key, self.world = kind, spec, key, world
        self.model = model
        self._record = dict(record)
        self.requires_grad_(False)

    def score(self, images, prompts: Sequence[str] | str | None = None) -> torch.Tensor:
        n = len(images)
        if prompts is None or isinstance(prompts, str):
            prompts = [prompts or ""] * n
        prompts = [p or "" for p in prompts]
        if len(prompts) != n:
            raise UserError(f"got {len(prompts)} prompts for {n} images")
        return self.model.score(images, prompts).reshape(-1).float()

    forward = score

    def record(self) -> dict:
        """The prior's provenance for reward.json: kind, spec, key, world and what identifies it (id, created_at,
        path and CLIP of a version; name and provenance of a built-in)."""
        return {"kind": self.kind, "spec": self.spec, "key": self.key, "world": self.world, **self._record}

    def __repr__(self) -> str:
        return f"Prior({self.kind} {self.spec})"


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:12]


def version_key(folder: Path) -> str:
    """A version prior's identity: its id and a digest of its reward.json and weight files (its own prior's too;
    large files by their size and ends, as CLIP weights are keyed)."""
    from reward.clip import _file_digest
    from reward.versions import META_NAME

    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != META_NAME)
    parts = [(Path(folder) / META_NAME).read_bytes()] + [f"{p.relative_to(folder).as_posix()}:{_file_digest(p)}".encode()
                                                        for p in files]
    meta = json.loads(parts[0])
    return f"version-{meta.get('id') or Path(folder).name}-{_digest(*parts)}"


def load_prior(spec: PriorSpec | str, home=None, device=None, folder: Path | None = None, *,
               load_model: Callable) -> Prior:
    """Load a prior (a version or a built-in; `laion:PATH` is `reward.laion`'s). `folder`: a version prior's copy
    to load instead of looking `spec` up (what a saved version does). `load_model`: `reward.model.load`, passed in
    (that module loads priors itself, so this one does not import it). UserError naming the valid forms for an
    unknown spec, and when `reward.builtins` is missing for a built-in."""
    if isinstance(spec, str):
        spec = parse_prior(spec)
    if spec.kind == "laion":
        raise UserError("a laion:PATH prior is a head fine-tuned on ViT-L/14 embeddings (reward.laion), not a scored prior")
    if spec.kind == "builtin":
        return _load_builtin(spec.spec, device)
    from reward.versions import ref

    try:
        r = ref(folder if folder is not None else spec.spec, home)
    except NotFoundError as e:
        raise NotFoundError(f"unknown prior {spec.spec!r}: {e}; a prior is {valid_forms()}") from None
    model = load_model(r, device=device)
    record = {"id": r.version, "created_at": r.created_at, "path": str(r.folder), "clip_spec": r.clip_spec}
    return Prior("version", spec.spec, model, version_key(r.folder), world(r.clip_spec), record)


def _load_builtin(name: str, device=None) -> Prior:
    builtins = _builtins_module()
    if builtins is None:
        raise UserError(f"the built-in prior {name!r} needs the reward.builtins module, which this installation "
                        "lacks; use a reward version as the prior (--prior r0003)")
    try:
        scorer = builtins.load_builtin(name, device=device)
    except UserError:
        raise
    except (OSError, RuntimeError, ValueError) as e:
        raise UserError(f"could not load the built-in prior {name!r}: {e}") from e
    provenance = scorer.provenance() if hasattr(scorer, "provenance") else {}
    key = f"builtin-{getattr(scorer, 'name', name)}-{_digest(json.dumps(provenance, sort_keys=True, default=str).encode())}"
    key = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    return Prior("builtin", name, scorer, key, "real", {"name": getattr(scorer, "name", name), "provenance": provenance})


def check_world(prior: Prior, clip_spec: str) -> None:
    """UserError when the prior judges another world than a reward on `clip_spec` (the toy world vs real images)."""
    check_world_of(prior.spec, prior.world, clip_spec)


def check_world_of(spec: str, prior_world: str, clip_spec: str) -> None:
    mine = world(clip_spec)
    if prior_world != mine:
        what = {"toy": "the toy world's shapes (the toy CLIP)", "real": "real images (a real CLIP)"}
        raise UserError(f"the prior {spec!r} judges {what[prior_world]}, but --clip {clip_spec} reads "
                        f"{what[mine]}: a prior must judge the same kind of images as the reward it starts")


def load_saved(record: dict, folder: Path, device=None, *, load_model: Callable) -> Prior:
    """The prior a saved version recorded (`record`: its reward.json "prior"): a version prior from its copy in
    the version folder (loaded with `load_model`, as `load_prior`), a built-in by name; UserError when the copy is
    missing or is another prior than recorded."""
    if record["kind"] == "version":
        copy = Path(folder) / record.get("folder", PRIOR_DIR)
        if not copy.is_dir():
            raise UserError(f"the reward's prior copy {copy} is missing: the version folder is incomplete")
        prior = load_prior(PriorSpec("version", record["spec"]), device=device, folder=copy, load_model=load_model)
        prior._record = {k: v for k, v in record.items() if k not in ("kind", "spec", "key", "world", "weight")}
    else:
        prior = _load_builtin(record["spec"], device)
    if prior.key != record.get("key", prior.key):
        raise UserError(f"the reward's prior {record['spec']!r} is now {prior.key}, not the {record['key']} it was "
                        "trained with: its scores would be meaningless; train the version again")
    return prior


class PriorScoreCache:
    """A prior's scores of pool images, computed once per (image, prompt) and kept under
    `<home>/cache/priors/<prior key>/` (a `reward.embeddings.VectorStore` of 1-d vectors)."""

    def __init__(self, prior: Prior, home=None):
        from prefs.home import home_dir
        from reward.embeddings import VectorStore

        self.prior = prior
        self.store = VectorStore(home_dir(home, create=False) / "cache" / "priors" / prior.key)

    @staticmethod
    def key(sha256: str, prompt: str | None) -> str:
        return hashlib.sha256(f"{sha256}\n{prompt or ''}".encode()).hexdigest()

    def scores(self, store, images, notice: Callable[[str], None] | None = None) -> tuple[list, np.ndarray]:
        """(the pool images, prefs Image rows, whose files could be read; their prior scores, an N array).

        A missing or unreadable file is skipped with one notice (default: a logged warning)."""
        from prefs.pool import ImageError, read_image
        from reward.embeddings import pil_to_tensor

        keys = {im.sha256: self.key(im.sha256, im.prompt) for im in images}
        todo = [im for im in images if keys[im.sha256] not in self.store]
        todo = list({im.sha256: im for im in todo}.values())
        skipped: set[str] = set()
        by_size: dict[tuple, list] = {}
        for im in todo:
            try:
                x = pil_to_tensor(read_image(store.image_path(im), im.sha256[:12]))
            except ImageError as e:
                skipped.add(im.sha256)
                (notice or _log.warning)(f"skipped image {im.sha256[:12]}: {e}")
                continue
            by_size.setdefault(tuple(x.shape), []).append((im, x))
        with torch.no_grad():
            for group in by_size.values():
                for i in range(0, len(group), SCORE_BATCH):
                    chunk = group[i:i + SCORE_BATCH]
                    s = self.prior.score(torch.stack([x for _, x in chunk]), [im.prompt or "" for im, _ in chunk])
                    self.store.put([keys[im.sha256] for im, _ in chunk], s.detach().cpu().numpy().reshape(-1, 1))
        kept = [im for im in images if im.sha256 not in skipped]
        return kept, self.store.get([keys[im.sha256] for im in kept]).reshape(-1)
