"""Frozen CLIP for the reward model: resolve a CLIP spec, load it through open_clip, preprocess differentiably.

`reward` must not import `rlft` (imports flow prefs <- reward <- rlft), so it resolves the same CLIP specs as
`rlft.models.clip` on its own:
  - `toy`: the open_clip folder shipped in the rlft distribution (`rlft/assets/toy/clip`), found on disk with
    `importlib.util.find_spec`, which locates the package without importing it;
  - a folder in open_clip's hub layout (`open_clip_config.json` + weights);
  - `ARCH/TAG` (`ViT-L-14/openai`), from open_clip's local cache when offline;
  - `hf-hub:org/repo`.

Preprocessing is done on tensors (`ClipPreprocess`), not PIL, so `RewardModel.score` is differentiable with
respect to the pixels: resize the shorter side to the model's input size (antialiased), centre-crop,
normalise. The embedding cache runs the very same function on decoded images, so cached embeddings and
`score()` on a pixel tensor agree.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from prefs.errors import NotFoundError, UserError

CONFIG_NAME = "open_clip_config.json"
DEFAULT_CLIP = "toy"  # the toy world's CLIP; use ViT-L-14/openai for SD 1.x (it shares the text encoder's space)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


_DIGESTS: dict[tuple, str] = {}
WHOLE_FILE_BYTES = 64 << 20
EDGE_BYTES = 8 << 20


def _file_digest(path: Path) -> str:
    """sha256 of a file's content (of its size and both ends when large), memoised per (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256(str(st.st_size).encode())
        with open(path, "rb") as f:
            if st.st_size <= WHOLE_FILE_BYTES:
                h.update(f.read())
            else:
                h.update(f.read(EDGE_BYTES))
                f.seek(st.st_size - EDGE_BYTES)
                h.update(f.read(EDGE_BYTES))
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def builtin_clips() -> dict[str, Path]:
    """Built-in CLIP names -> their open_clip folders inside the rlft distribution (not imported)."""
    spec = importlib.util.find_spec("rlft")
    roots = list(spec.submodule_search_locations or []) if spec else []
    return {"toy": Path(roots[0]) / "assets" / "toy" / "clip"} if roots else {}


def valid_forms() -> str:
    return (f"a built-in name ({', '.join(sorted(builtin_clips())) or 'none installed'}), a folder with {CONFIG_NAME} "
            "and weights, ARCH/TAG (e.g. ViT-L-14/openai), or hf-hub:org/repo")


@dataclass(frozen=True)
class ClipSource:
    """What a CLIP spec names. `name`/`pretrained` are open_clip's arguments; `folder` is set for local ones."""

    spec: str
    name: str
    pretrained: str | None
    folder: Path | None = None

    def fingerprint(self) -> str:
        """A short stable key for caches and reward versions: changes when a local folder's weights change.

        Content-based (not mtimes), so a fresh clone or copy of the same weights keeps its key: files up to
        64 MB are hashed whole, larger ones by size plus their first and last 8 MB.
        """
        h = hashlib.sha256(self.name.encode())
        if self.folder is not None:
            for f in sorted(self.folder.iterdir()):
                if f.is_file():
                    h.update(f"{f.name}:{_file_digest(f)}".encode())
        h.update(str(self.pretrained).encode())
        return h.hexdigest()[:12]

    def cache_key(self) -> str:
        """Folder name for this CLIP's caches: a readable slug plus the fingerprint."""
        base = self.spec if self.folder is None or self.spec in builtin_clips() else self.folder.name
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in base)[:40]
        return f"{slug}-{self.fingerprint()}"


def resolve_clip(spec: str | os.PathLike) -> ClipSource:
    """Say what a CLIP spec names, without loading weights; raises NotFoundError listing the valid forms."""
    text = os.fspath(spec)
    builtins = builtin_clips()
    if text in builtins:
        folder = builtins[text]
        if not (folder / CONFIG_NAME).is_file():
            raise NotFoundError(f"the built-in CLIP {text!r} has no weights ({folder} is missing); build them with `rlft toy pretrain`")
        return ClipSource(text, f"local-dir:{folder}", None, folder)
    if text.startswith("hf-hub:"):
        return ClipSource(text, text, None)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise NotFoundError(f"{text} is a folder without {CONFIG_NAME}; a CLIP model is {valid_forms()}")
        return ClipSource(text, f"local-dir:{path.resolve()}", None, path.resolve())
    import open_clip

    arch, _, tag = text.partition("/")
    if arch not in open_clip.list_models():
        raise NotFoundError(f"unknown CLIP model {text!r}; a CLIP model is {valid_forms()} "
                            f"(architectures: {', '.join(open_clip.list_models()[:12])}, ...)")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag not in tags:
        raise NotFoundError(f"{arch} needs a pretrained tag as {arch}/TAG" + (f", not {tag!r}" if tag else "")
                            + f"; tags: {', '.join(tags) or 'none'}")
    return ClipSource(text, arch, tag)


class ClipPreprocess(torch.nn.Module):
    """Differentiable CLIP preprocessing of float images N x 3 x H x W in [0, 1]."""

    def __init__(self, size: int, mean, std, interpolation: str = "bicubic"):
        super().__init__()
        self.size = int(size)
        self.interpolation = interpolation if interpolation in ("bicubic", "bilinear") else "bilinear"
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise UserError(f"images must be a float tensor N x 3 x H x W in [0, 1], got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if min(h, w) != self.size:
            scale = self.size / min(h, w)
            nh, nw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
            x = F.interpolate(x, size=(nh, nw), mode=self.interpolation, align_corners=False, antialias=True)
            h, w = nh, nw
        if h != self.size or w != self.size:  # centre crop
            top, left = (h - self.size) // 2, (w - self.size) // 2
            x = x[..., top:top + self.size, left:left + self.size]
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


@dataclass
class Clip:
    """A loaded frozen CLIP: the open_clip model, tensor preprocessing, tokenizer, and where it came from."""

    model: torch.nn.Module
    preprocess: ClipPreprocess
    tokenizer: object
    source: ClipSource

    @property
    def dim(self) -> int:
        """The joint embedding dimension."""
        proj = getattr(self.model.visual, "proj", None)
        if isinstance(proj, torch.Tensor):
            return int(proj.shape[1])
        return int(self.model.visual.output_dim)

    def encode_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings of float images N x 3 x H x W in [0, 1] (differentiable)."""
        x = self.preprocess(images.to(self.preprocess.mean.device, torch.float32))
        return F.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings."""
        tokens = self.tokenizer(list(texts)).to(self.preprocess.mean.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)


def _preprocess_cfg(model, source: ClipSource) -> dict:
    cfg: dict = {}
    if source.folder is not None:
        cfg = json.loads((source.folder / CONFIG_NAME).read_text()).get("preprocess_cfg", {})
    size = cfg.get("image_size") or getattr(model.visual, "image_size", 224)
    if isinstance(size, (tuple, list)):
        size = size[0]
    mean = cfg.get("mean") or getattr(model.visual, "image_mean", None) or OPENAI_MEAN
    std = cfg.get("std") or getattr(model.visual, "image_std", None) or OPENAI_STD
    return {"size": int(size), "mean": tuple(mean), "std": tuple(std), "interpolation": cfg.get("interpolation", "bicubic")}


_LOADED: dict[tuple[str, str], Clip] = {}


def load_clip(spec: str | os.PathLike = DEFAULT_CLIP, device: str | torch.device | None = None) -> Clip:
    """Load (once per process, spec and device) a frozen CLIP in eval mode; parameters need no grad."""
    import open_clip

    source = resolve_clip(spec)
    device = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    key = (source.name + str(source.pretrained), device)
    if key in _LOADED:
        return _LOADED[key]
    try:
        logging.disable(logging.ERROR)  # open_clip logs failed downloads as errors; our exception says it once
        model = open_clip.create_model(source.name, pretrained=source.pretrained, device=device)
        tokenizer = open_clip.get_tokenizer(source.name)
    except (RuntimeError, OSError) as e:
        if source.folder is not None:
            raise UserError(f"could not load the CLIP folder {source.folder}: {e}") from e
        raise NotFoundError(f"the CLIP model {source.spec!r} could not be loaded (not in the local cache while "
                            f"offline, or unreachable); download it once with network access or pass a folder: {e}") from e
    finally:
        logging.disable(logging.NOTSET)
    model.eval().requires_grad_(False)
    clip = Clip(model, ClipPreprocess(**_preprocess_cfg(model, source)).to(device), tokenizer, source)
    _LOADED[key] = clip
    return clip
