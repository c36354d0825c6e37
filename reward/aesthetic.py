"""Aesthetic embeddings (Gallego 2022, "aesthetic gradients"): a taste as one CLIP image-space vector.

- `build_from_reward` / `build_from_dir` make one: the reward-weighted mean of the CLIP image embeddings of
  the best-rated pool images (weights exp(r), i.e. Bradley-Terry strengths), or the plain mean of a folder.
- `save_embedding` writes it as the aesthetic-gradients method and AUTOMATIC1111's extension read it: a torch
  tensor of shape (1, D), float32, on CPU, plus a sidecar JSON of provenance (`taste.pt` -> `taste.json`).
- `load_embedding` reads ours and every published one ((1, 768) or (768,), float16 or float32, saved from
  CUDA), returning a normalised (1, D) float32 tensor.
- `AestheticConditioner` personalises a pipeline's CLIP text encoder per prompt: a few Adam steps that
  maximise the cosine similarity between the prompt's projected text features and the embedding, then the
  prompt's hidden states are the blend (1 - w) * original + w * personalised. The pipeline's own encoder is
  never modified (the steps run on a float32 copy), so it is "restored" after every prompt by construction.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from prefs.errors import UserError

SD1_CLIP = "ViT-L-14/openai"  # the CLIP whose text tower SD 1.x conditions on: 768-d published embeddings


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def save_embedding(path: str | os.PathLike, embedding, provenance: dict) -> Path:
    """Write `embedding` as a (1, D) float32 CPU tensor (atomically) and its provenance JSON beside it."""
    from prefs.atomic import atomic_path, write_json

    emb = torch.as_tensor(np.asarray(embedding), dtype=torch.float32).reshape(1, -1).cpu().contiguous()
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(emb, tmp)
    meta = {**provenance, "shape": list(emb.shape), "dtype": "float32",
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    write_json(sidecar_path(path), meta)
    return path


def load_embedding(path: str | os.PathLike) -> torch.Tensor:
    """A normalised (1, D) float32 CPU tensor from any aesthetic embedding file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no aesthetic embedding at {path}")
    try:
        t = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"could not read {path} as a torch tensor: {e}") from e
    if isinstance(t, dict) and len(t) == 1:  # some tools wrap the tensor in a one-entry dict
        t = next(iter(t.values()))
    if not isinstance(t, torch.Tensor) or t.ndim not in (1, 2) or (t.ndim == 2 and t.shape[0] != 1):
        raise UserError(f"{path} is not an aesthetic embedding: expected a tensor of shape (D,) or (1, D)")
    t = t.float().reshape(1, -1)
    if not torch.isfinite(t).all() or t.norm() == 0:
        raise UserError(f"{path} holds a zero or non-finite embedding")
    return F.normalize(t, dim=-1)


def read_provenance(path: str | os.PathLike) -> dict:
    side = sidecar_path(path)
    return json.loads(side.read_text()) if side.is_file() else {}


def build_from_reward(model, store, top_k: int | None = 50, min_score: float | None = None,
                      progress: bool = True, notice=None) -> tuple[np.ndarray, dict]:
    """The exp(reward)-weighted mean CLIP embedding of the best pool images: top-k, or all >= min_score.

    Images whose pool files are missing or unreadable are skipped, each with a `notice(message)` (default:
    a logged warning)."""
    from reward.embeddings import EmbeddingCache

    images = [im for im in store.images() if im.broken_at is None]
    if not images:
        raise UserError("the pool has no images; generate or import some first")
    cache = EmbeddingCache(model.clip_spec)
    images, emb = cache.embed_pool(store, images, progress=progress, notice=notice)
    if not images:
        raise UserError("no pool image could be read: every pool file is missing or unreadable")
    text = cache.embed_texts([im.prompt or "" for im in images]) if model.prompt_conditioned else None
    if model.tower is None and model.prior is None:
        scores, _ = model.score_embeddings(emb, text)
    else:  # the heads read the version's own tower or its prior's scores: score through the scorer
        from reward.scorer import RewardScorer

        scores = np.asarray(RewardScorer(model, store, cache)(images)[0])
    order = np.argsort(-scores, kind="stable")
    if min_score is not None:
        chosen = order[scores[order] >= min_score]
    else:
        chosen = order[: max(1, int(top_k or 50))]
    if not len(chosen):
        raise UserError(f"no image scores >= {min_score} (best: {scores.max():.3f}); lower --min-score")
    w = np.exp(scores[chosen] - scores[chosen].max())
    mean = (w[:, None] * emb[chosen]).sum(0) / w.sum()
    prov = {
        "method": "reward-weighted mean (weights exp(r)) of CLIP image embeddings",
        "clip_spec": model.clip_spec, "reward_version": model.version,
        "selection": {"top_k": None if min_score is not None else int(top_k or 50), "min_score": min_score},
        "images": [{"sha256": images[i].sha256, "score": float(scores[i]), "weight": float(wi / w.sum())}
                   for i, wi in zip(chosen, w, strict=False)],
    }
    return mean, prov


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def build_from_dir(folder: str | os.PathLike, clip_spec: str = "toy", progress: bool = True) -> tuple[np.ndarray, dict]:
    """The mean CLIP embedding of the images in a folder (cached by file content)."""
    import hashlib

    from reward.embeddings import EmbeddingCache

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise UserError(f"no images (.png, .jpg, .webp) in {folder}")
    shas = [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    emb = EmbeddingCache(clip_spec).embed_files(list(zip(shas, files, strict=False)), progress=progress)
    prov = {"method": "mean of CLIP image embeddings", "clip_spec": clip_spec, "from_dir": str(folder.resolve()),
            "images": [{"path": str(p), "sha256": s} for p, s in zip(files, shas, strict=False)]}
    return emb.mean(0), prov


# -- conditioning ---------------------------------------------------------------------------------------------


def text_space_dim(text_encoder) -> int:
    """The dimension of the pipeline text encoder's projected (joint CLIP) space."""
    return int(getattr(text_encoder.config, "projection_dim", 0) or 0)


def text_projection(text_encoder, clip_spec: str | None, emb_dim: int) -> torch.Tensor:
    """The hidden -> joint-space projection matrix (hidden x D) for a pipeline's text encoder.

    A `CLIPTextModelWithProjection` carries its own; SD's plain `CLIPTextModel` does not, so it comes from the
    matching open_clip model (`clip_spec`: the embedding's CLIP, e.g. `toy`, or ViT-L-14/openai for SD 1.x).
    """
    hidden = int(text_encoder.config.hidden_size)
    own = getattr(text_encoder, "text_projection", None)
    if own is not None:
        return own.weight.detach().float().T.cpu()
    if clip_spec is None:
        raise UserError("the pipeline's text encoder has no projection; say which CLIP the embedding is from "
                        "with --aesthetic-clip (e.g. toy, or ViT-L-14/openai for SD 1.x)")
    from reward.clip import load_clip

    model = load_clip(clip_spec, "cpu").model
    proj = model.text_projection
    proj = (proj if isinstance(proj, torch.Tensor) else proj.weight.T).detach().float()
    if tuple(proj.shape) != (hidden, emb_dim):
        raise UserError(f"the CLIP {clip_spec!r} projects {proj.shape[0]}-d text features to {proj.shape[1]}-d, but the "
                        f"pipeline's text encoder is {hidden}-d and the embedding {emb_dim}-d: they are not one CLIP")
    return proj


class AestheticConditioner:
    """`conditioner(prompts) -> prompt_embeds` (B x 77 x hidden): per-prompt aesthetic-gradient personalisation."""

    def __init__(self, pipe, embedding: torch.Tensor, steps: int = 5, lr: float = 1e-4, weight: float = 0.9,
                 clip_spec: str | None = None, name: str | None = None):
        if steps < 0 or lr < 0 or not 0 <= weight <= 1:
            raise UserError(f"need --aesthetic-steps >= 0, --aesthetic-lr >= 0 and 0 <= --aesthetic-weight <= 1; "
                            f"got {steps}, {lr}, {weight}")
        self.pipe, self.steps, self.lr, self.weight = pipe, int(steps), float(lr), float(weight)
        enc = pipe.text_encoder
        d = embedding.shape[-1]
        space = text_space_dim(enc)
        if space and space != d:
            raise UserError(f"the aesthetic embedding is {d}-d but this pipeline's text encoder projects to {space}-d: "
                            "it was made with another CLIP (published SD 1.x embeddings are 768-d ViT-L/14; "
                            "for the toy pipeline build one from a folder of images you like with "
                            "`rlft embed --from-dir DIR --clip toy -o taste.pt`, or from a reward trained on "
                            "--clip toy with `rlft embed --reward latest -o taste.pt`)")
        self.embedding = F.normalize(embedding.float().reshape(1, -1), dim=-1)
        self.proj = text_projection(enc, clip_spec, d)
        self.name = name
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def parameters(self) -> dict:
        """Settings to record with each image (A1111's names)."""
        return {"Aesthetic embedding": self.name, "Aesthetic steps": self.steps, "Aesthetic LR": self.lr,
                "Aesthetic weight": self.weight}

    def _tokens(self, prompt: str) -> torch.Tensor:
        tok = self.pipe.tokenizer
        return tok([prompt], padding="max_length", max_length=tok.model_max_length, truncation=True,
                   return_tensors="pt").input_ids

    def personalise(self, prompt: str) -> torch.Tensor:
        """The blended hidden states (1 x 77 x hidden) for one prompt."""
        if prompt in self._cache:
            return self._cache[prompt]
        enc = self.pipe.text_encoder
        device, dtype = enc.device, enc.dtype
        ids = self._tokens(prompt).to(device)
        with torch.no_grad():
            z0 = enc(ids)[0].float()
        if self.steps == 0 or self.lr == 0 or self.weight == 0:
            z = z0
        else:
            work = copy.deepcopy(enc).float().train(False).requires_grad_(True)
            proj, target = self.proj.to(device), self.embedding.to(device)
            opt = torch.optim.Adam(work.parameters(), lr=self.lr)
            with torch.enable_grad():
                for _ in range(self.steps):
                    opt.zero_grad(set_to_none=True)
                    feats = F.normalize(work(ids).pooler_output.float() @ proj, dim=-1)
                    loss = -(feats * target).sum()
                    loss.backward()
                    opt.step()
            with torch.no_grad():
                z1 = work(ids)[0].float()
            del work, opt
            z = (1 - self.weight) * z0 + self.weight * z1
        z = z.to(dtype)
        self._cache[prompt] = z
        return z

    def __call__(self, prompts) -> torch.Tensor:
        return torch.cat([self.personalise(p) for p in prompts])


def conditioner_from_file(pipe, path: str | os.PathLike, steps: int = 5, lr: float = 1e-4, weight: float = 0.9,
                          clip_spec: str | None = None) -> AestheticConditioner:
    """An `AestheticConditioner` for `pipe` from an embedding file; the CLIP comes from `clip_spec`, else the
    file's sidecar JSON, else ViT-L-14/openai for 768-d (published SD 1.x) embeddings."""
    emb = load_embedding(path)
    spec = clip_spec or read_provenance(path).get("clip_spec") or (SD1_CLIP if emb.shape[-1] == 768 else None)
    return AestheticConditioner(pipe, emb, steps=steps, lr=lr, weight=weight, clip_spec=spec, name=Path(path).stem)
