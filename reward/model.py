"""`RewardModel`: a CLIP image tower (frozen, or tuned on the judgements) plus K reward heads, loaded from a version;
differentiable in the pixels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from prefs.errors import UserError
from reward import versions
from reward.heads import build_head


class RewardModel(torch.nn.Module):
    """A learnt taste: `score(images, prompts)` -> utilities on the Bradley-Terry logit scale.

    Attributes: `version` (e.g. "r0003"), `clip_spec`, `path` (the version folder), `metadata` (its
    reward.json), `members` (K, the ensemble size), `heads` (ModuleList), `log_theta` (Rao-Kupper tie
    parameter or None), `tower` (a `reward.tower.Tower` when the heads read a tuned tower or patch tokens; None
    when they read the frozen CLIP's pooled embedding, which the on-disk embedding cache holds), `prior` (a
    `reward.prior.Prior` when each member is w * prior + a personal head, else None). All members share the tower
    and the prior: one pass per image scores them all.
    """

    def __init__(self, heads: Sequence[torch.nn.Module], clip_spec: str, metadata: dict | None = None,
                 path: str | os.PathLike | None = None, log_theta: torch.Tensor | None = None, clip=None,
                 device=None, tower=None, prior=None):
        super().__init__()
        self.heads = torch.nn.ModuleList(heads)
        self.tower = tower
        self.prior = prior
        self.clip_spec = clip_spec
        self.metadata = dict(metadata or {})
        self.version = self.metadata.get("id")
        self.path = Path(path) if path is not None else None
        self.log_theta = log_theta
        self._clip = clip
        self._device = device
        self._text_cache: dict[str, torch.Tensor] = {}
        self.requires_grad_(False)
        self.eval()

    # -- parts --------------------------------------------------------------------------------------------
    @property
    def members(self) -> int:
        return len(self.heads)

    @property
    def prompt_conditioned(self) -> bool:
        return bool(getattr(self.heads[0], "prompt", False))

    @property
    def clip(self):
        if self._clip is None:
            from reward.clip import load_clip

            self._clip = load_clip(self.clip_spec, self._device or self._head_device())
        return self._clip

    def _head_device(self):
        return next(iter(self.heads.buffers())).device

    def subset(self, indices: int | Sequence[int]) -> "RewardModel":
        """A RewardModel of only the members at `indices` (shares weights): e.g. hold one out as a test reward."""
        if isinstance(indices, int):
            indices = [indices]
        indices = list(indices)
        if not indices or any(not -self.members <= i < self.members for i in indices):
            raise UserError(f"member indices must be in 0..{self.members - 1}, got {indices}")
        meta = {**self.metadata, "members_of": self.version, "member_indices": indices}
        sub = RewardModel([self.heads[i] for i in indices], self.clip_spec, meta, self.path, self.log_theta,
                          self._clip, self._device, self.tower, self.prior)
        sub.version = self.version
        return sub

    # -- inputs -------------------------------------------------------------------------------------------
    def _pixels(self, images) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            if images.ndim == 3:
                images = images[None]
            if not images.is_floating_point():
                raise UserError("images must be a float tensor in [0, 1] (N x 3 x H x W) or a list of PIL images")
            return images
        from reward.embeddings import pil_to_tensor

        images = list(images)
        if not images:
            raise UserError("no images to score")
        return [pil_to_tensor(im) for im in images]

    def embed(self, images) -> torch.Tensor:
        """What the heads read, differentiable for a pixel tensor: L2-normalised CLIP image embeddings (N x D), or,
        with a tower (`self.tower`), its features: the tuned tower's embeddings, or N x (1 + L) x D with patch
        tokens for the `patch` head."""
        x = self._pixels(images)
        if self.tower is not None:
            if isinstance(x, list):
                return torch.cat([self.tower(t[None]) for t in x])
            return self.tower(x)
        clip = self.clip
        if isinstance(x, list):  # PIL images of any sizes: preprocess one by one
            return torch.cat([clip.encode_pixels(t[None]) for t in x])
        return clip.encode_pixels(x)

    def text_embed(self, prompts: Sequence[str] | str | None, n: int) -> torch.Tensor | None:
        """Prompt embeddings for prompt-conditioned heads (None otherwise), one per image."""
        if not self.prompt_conditioned or prompts is None:
            return None
        if isinstance(prompts, str):
            prompts = [prompts] * n
        prompts = list(prompts)
        if len(prompts) != n:
            raise UserError(f"got {len(prompts)} prompts for {n} images")
        todo = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if todo:
            for p, v in zip(todo, self.clip.encode_text(todo), strict=False):
                self._text_cache[p] = v
        return torch.stack([self._text_cache[p] for p in prompts])

    # -- scores -------------------------------------------------------------------------------------------
    def prior_scores(self, images, prompts: Sequence[str] | str | None = None) -> torch.Tensor | None:
        """The prior's scores of the images (tensor [N], differentiable in the pixels when the prior is); None
        without a prior."""
        if self.prior is None:
            return None
        if isinstance(images, torch.Tensor) and images.ndim == 3:
            images = images[None]
        return self.prior.score(images, prompts)

    def member_scores(self, emb: torch.Tensor, text: torch.Tensor | None = None,
                      prior: torch.Tensor | None = None) -> torch.Tensor:
        """K x N utilities of precomputed image features (`embed`'s output; the cached CLIP embeddings when the
        version has no tower) and, with a prior, the prior's scores of the images (`prior_scores`; cached by
        `reward.prior.PriorScoreCache`)."""
        dev = self._head_device()
        emb = emb.to(dev)
        text = text.to(dev) if text is not None else None
        if self.prior is None:
            return torch.stack([h(emb, text) for h in self.heads])
        if prior is None:
            raise UserError(f"reward {self.version or ''} starts from the prior {self.prior.spec!r}: pass the prior's "
                            "scores of the images")
        prior = torch.as_tensor(prior).to(dev).reshape(-1)
        return torch.stack([h(emb, text, prior) for h in self.heads])

    def members_of(self, images, prompts: Sequence[str] | str | None = None) -> torch.Tensor:
        """K x N member utilities of images (as `score` takes them); differentiable w.r.t. a pixel tensor."""
        emb = self.embed(images)
        return self.member_scores(emb, self.text_embed(prompts, len(emb)), self.prior_scores(images, prompts))

    def score(self, images, prompts: Sequence[str] | str | None = None) -> torch.Tensor:
        """Mean utility over the ensemble, one per image (tensor [N]); differentiable w.r.t. a pixel tensor.

        `images`: float tensor N x 3 x H x W in [0, 1] (any size: resized and normalised inside) or a list of
        PIL images. `prompts`: one per image (or one for all); used by prompt-conditioned heads and the prior.
        """
        return self.members_of(images, prompts).mean(0)

    forward = score

    def member_scores_np(self, emb, prompts_emb=None, prior=None) -> np.ndarray:
        """K x N member utilities of precomputed embeddings (and prior scores), as numpy (no gradients)."""
        with torch.no_grad():
            s = self.member_scores(torch.as_tensor(np.asarray(emb), dtype=torch.float32),
                                   None if prompts_emb is None else torch.as_tensor(np.asarray(prompts_emb), dtype=torch.float32),
                                   None if prior is None else torch.as_tensor(np.asarray(prior), dtype=torch.float32))
        return s.cpu().numpy()

    def score_embeddings(self, emb, prompts_emb=None, prior=None) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std over members) per embedding, as numpy."""
        return member_mean_std(self.member_scores_np(emb, prompts_emb, prior))

    def predict_pair(self, a, b, prompt: str | None = None) -> tuple[float, float]:
        """(P(a beats b), std of that probability over members) for two images (PIL or 3 x H x W tensors)."""
        imgs = [a, b]
        with torch.no_grad():
            if all(isinstance(i, torch.Tensor) for i in imgs):
                s = torch.cat([self.members_of(i if i.ndim == 4 else i[None], prompt) for i in imgs], dim=1)
            else:
                s = self.members_of(imgs, prompt)
            p = torch.sigmoid(s[:, 0] - s[:, 1])
        return float(p.mean()), float(p.std(unbiased=False)) if len(p) > 1 else 0.0

    def __repr__(self) -> str:
        tower = f", tower={self.tower.mode}" if self.tower is not None and self.tower.mode != "none" else ""
        prior = f", prior={self.prior.spec}" if self.prior is not None else ""
        return f"RewardModel({self.version or 'unsaved'}, clip={self.clip_spec}, heads={self.members}x{self.metadata.get('config', {}).get('head', '?')}{tower}{prior})"


# -- persistence --------------------------------------------------------------------------------------------


def member_mean_std(members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) over the members (axis 0) of K x N utilities; a single member has std 0."""
    return members.mean(0), (members.std(0) if len(members) > 1 else np.zeros(members.shape[1], dtype=members.dtype))


def save_weights(path: str | os.PathLike, heads, log_theta=None) -> None:
    from safetensors.torch import save_file

    tensors = {f"members.{k}.{name}": t.detach().cpu().contiguous()
               for k, h in enumerate(heads) for name, t in h.state_dict().items()}
    if log_theta is not None:
        tensors["log_theta"] = log_theta.detach().cpu().reshape(())
    save_file(tensors, os.fspath(path))


def check_clip(meta: dict, folder: Path) -> None:
    """Refuse a version whose CLIP weights changed since it was trained: its heads would score noise."""
    from reward.clip import resolve_clip

    trained = meta.get("clip_key")
    if not trained:
        return
    now = resolve_clip(meta["clip_spec"]).cache_key()
    if now != trained:
        name = meta.get("id") or folder.name
        raise UserError(f"reward {name} was trained on CLIP {meta['clip_spec']!r} weights {trained}, but those weights are now "
                        f"{now} (updated or replaced); its scores would be meaningless: train a new version with "
                        f"`rlft reward train --clip {meta['clip_spec']}`")


def load(spec: str | os.PathLike | versions.RewardRef = "latest", device=None, home=None) -> RewardModel:
    """Load a reward version: `latest`, an id like `r0003`, a version folder, or a `versions.RewardRef` (resolved
    already: loaded from its folder with its metadata, nothing looked up again).

    A version with a tuned tower gets it back from `tower.safetensors` on a copy of its CLIP's frozen tower; one
    with a prior gets it back from its `prior/` copy (a version prior) or `reward.builtins` (a built-in).
    Raises NotFoundError listing the versions for an unknown name, and one telling the user to run
    `rlft reward train` when there are none; UserError when the CLIP weights it was trained on have changed.
    """
    from safetensors.torch import load_file

    ref = spec if isinstance(spec, versions.RewardRef) else versions.ref(spec, home)
    folder, meta = ref.folder, dict(ref.metadata)
    check_clip(meta, folder)
    tensors = load_file(str(folder / versions.WEIGHTS_NAME))
    heads = []
    for k, cfg in enumerate(meta["heads"]):
        prefix = f"members.{k}."
        state = {n[len(prefix):]: t for n, t in tensors.items() if n.startswith(prefix)}
        cfg = dict(cfg)
        kind = cfg.pop("kind")
        if kind == "laion":
            cfg["_state"] = {n: t for n, t in state.items() if n.startswith("layers.")}
        head = build_head(kind, **cfg)
        head.load_state_dict(state)
        heads.append(head.eval())
    tower, clip = None, None
    tower_spec = meta.get("tower") or {}  # versions from before towers have none: the frozen pooled embedding
    if tower_spec.get("mode", "none") != "none" or tower_spec.get("output", "pooled") != "pooled":
        from reward.clip import load_clip
        from reward.tower import load_tower

        clip = load_clip(meta["clip_spec"], device or "cpu")
        tower = load_tower(clip, tower_spec, folder / tower_spec["file"] if tower_spec.get("file") else None)
    prior = None
    if meta.get("prior"):
        from reward.prior import load_saved

        prior = load_saved(meta["prior"], folder, device, load_model=load)
    model = RewardModel(heads, meta["clip_spec"], meta, folder, tensors.get("log_theta"), clip=clip, device=device,
                        tower=tower, prior=prior)
    if device is not None:
        model.to(device)
    return model
