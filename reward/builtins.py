"""Built-in public rewards: the scores ddpo-pytorch, Flow-GRPO and their successors train toward, by name.

    from reward.builtins import is_builtin, load_builtin
    judge = load_builtin("pickscore")                  # downloads PickScore v1 through transformers, once
    judge = load_builtin("hpsv2=/data/HPS_v2.1_compressed.pt")   # or from disk
    scores = judge.score(images, prompts)              # float (B, 3, H, W) in [0, 1] or PIL list -> tensor (B,)
    judge.differentiable, judge.name, judge.provenance()
    scores, info = judge(images, prompts, {})           # ddpo-pytorch's reward-function shape

Specs: `NAME`, `NAME=ARG` or `NAME=ARG,KEY=VALUE,...` (ARG, usually a local file or folder, and the values hold no
comma). Without ARG the weights come from their publisher's hub, as the libraries fetch them (and from their
caches when offline):

  laion-aesthetic   the improved aesthetic predictor (christophschuhmann/improved-aesthetic-predictor): its MLP
                    (`sac+logos+ava1-l14-linearMSE.pth`) on L2-normalised CLIP ViT-L/14 image embeddings, 1-10.
                    ARG: a head `.pth`; `clip=SPEC`: its CLIP (default `ViT-L-14/openai`; any `reward.clip` spec).
  pickscore         PickScore v1 (yuvalkirstain/PickScore_v1, a transformers `CLIPModel`; processor
                    laion/CLIP-ViT-H-14-laion2B-s32B-b79K): logit_scale * cos(image, prompt), about 15-25.
                    ARG: a `CLIPModel` folder; `processor=FOLDER` (default: ARG when it holds a processor).
  hpsv2             HPS v2.1 (tgxs002/HPSv2, `xswu/HPSv2` file `HPS_v2.1_compressed.pt`: `{"state_dict": ...}` of
                    an open_clip ViT-H-14): cos(image, prompt), about 0.2-0.35. ARG: the `.pt`; `arch=NAME`: the
                    open_clip architecture (default `ViT-H-14`).
  clipscore         CLIPScore (Hessel et al. 2021): 2.5 * max(cos(image, prompt), 0), without the paper's
                    "A photo depicts" prefix. ARG: a CLIP spec (default `ViT-B-32/openai`; `toy` on the toy world).
  jpeg-compressibility, jpeg-incompressibility
                    ddpo-pytorch's: minus / plus the JPEG size in kB (quality 95) of the uint8 image. Not
                    differentiable.

Add one with `register_builtin(name, summary, space)` on a loader `fn(arg: str | None, options: dict, device) ->
BuiltinReward` (options: the KEY=VALUE pairs; refuse unknown ones with `check_options`; `space(arg, options)`
names its image model without loading it, for the toy-world compatibility check); `rlft train --reward`,
`--judge`, `rlft judge`, `rlft reward score`, `rlft simulate --scorer` and `rlft ui --reward` take it at once.
Errors for bad specs, missing files and an unreachable hub are one-line `prefs.errors.UserError`s.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from prefs.errors import UserError

LAION_HEAD_URL = ("https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
                  "sac+logos+ava1-l14-linearMSE.pth")
PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
HPS_REPO, HPS_FILE, HPS_ARCH = "xswu/HPSv2", "HPS_v2.1_compressed.pt", "ViT-H-14"
CLIPSCORE_CLIP, CLIPSCORE_W = "ViT-B-32/openai", 2.5
JPEG_QUALITY = 95


class BuiltinReward:
    """A loaded built-in reward. `score(images, prompts)` -> float tensor (B,) on the CPU; `images` a float tensor
    (B, 3, H, W) in [0, 1] (differentiable in it when `differentiable`) or a list of PIL images.

    `name`: the spec it was loaded from; `kind`: the registry name; `clip_spec`: what its image model has seen
    (`toy`, or a real CLIP's name; None: any image, as for JPEG sizes), for model compatibility checks."""

    kind = ""
    differentiable = True
    clip_spec: str | None = None

    def __init__(self, name: str):
        self.name = name

    def score(self, images, prompts) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def provenance(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, images, prompts, metadata=None):
        """ddpo-pytorch's reward function: `(scores (B,), info)`, detached."""
        with torch.no_grad():
            scores = self.score(images, list(prompts) if prompts is not None else None)
        return scores.detach(), {"reward": self.name}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


@dataclass(frozen=True)
class Builtin:
    name: str
    summary: str
    loader: Callable[[str | None, dict, object], BuiltinReward]
    space: Callable[[str | None, dict], str | None]  # (arg, options) -> the image model's name, without loading


BUILTINS: dict[str, Builtin] = {}
_LOADED: dict[tuple[str, str], BuiltinReward] = {}


def register_builtin(name: str, summary: str, space: Callable[[str | None, dict], str | None]):
    """Decorator: make `loader(arg, options, device) -> BuiltinReward` available as spec `name`. `space(arg,
    options)` names, without loading anything, the image model it judges with: a CLIP spec (`toy`: the toy
    world's) or another real model's name; None for any image (no model)."""

    def deco(loader):
        BUILTINS[name] = Builtin(name, summary, loader, space)
        return loader

    return deco


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """`NAME[=ARG][,KEY=VALUE...]` -> (name, ARG or None, options); UserError for a malformed one."""
    text = str(spec).strip()
    head, *parts = text.split(",")
    name, eq, arg = head.partition("=")
    if eq and not arg.strip():
        raise UserError(f"the reward {text!r} has nothing after '='; give NAME or NAME=PATH")
    options = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise UserError(f"bad option {part!r} in the reward {text!r}; options are KEY=VALUE after NAME or "
                            "NAME=ARG, separated by commas")
        options[key.strip()] = value.strip()
    return name.strip(), (arg.strip() or None), options


def is_builtin(spec) -> bool:
    """Whether `spec` names a built-in reward (`NAME`, `NAME=...`), rather than a reward version."""
    return isinstance(spec, str) and parse_spec_name(spec) in BUILTINS


def parse_spec_name(spec: str) -> str:
    """The NAME of `NAME[=ARG][,KEY=VALUE...]`."""
    return str(spec).strip().split(",", 1)[0].split("=", 1)[0].strip()


def image_space(spec: str) -> str | None:
    """What the built-in `spec` judges with, without loading it: a CLIP spec (`toy`: the toy world's), another
    real model's name, or None (any image)."""
    name, arg, options = parse_spec(spec)
    if name not in BUILTINS:
        raise UserError(f"unknown built-in reward {name!r}; built-ins: {', '.join(names())}")
    return BUILTINS[name].space(arg, options)


def names() -> list[str]:
    return sorted(BUILTINS)


def check_options(name: str, options: dict, allowed: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        valid = ", ".join(f"{k}=..." for k in allowed) or "none"
        raise UserError(f"{name} takes no option {unknown[0]!r}; valid: {valid}")


def load_builtin(spec: str, device=None) -> BuiltinReward:
    """The built-in reward `spec` names, loaded once per process and device, frozen, in eval mode."""
    name, arg, options = parse_spec(spec)
    if name not in BUILTINS:
        raise UserError(f"unknown built-in reward {name!r}; built-ins: {', '.join(names())}")
    device = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    key = (str(spec).strip(), device)
    if key not in _LOADED:
        reward = BUILTINS[name].loader(arg, options, device)
        reward.name = str(spec).strip()
        _LOADED[key] = reward
    return _LOADED[key]


# --- shared pieces -------------------------------------------------------------------------------------------
def as_pixels(images) -> torch.Tensor:
    """A float tensor (B, 3, H, W) in [0, 1] from such a tensor, a uint8 batch (NHWC or NCHW) or a PIL list."""
    if isinstance(images, torch.Tensor):
        if images.dtype == torch.uint8:
            if images.shape[-1] == 3 and images.shape[1] != 3:
                images = images.permute(0, 3, 1, 2)
            return images.float() / 255
        if images.ndim != 4 or images.shape[1] != 3:
            raise UserError(f"images must be a float tensor B x 3 x H x W in [0, 1], got shape {tuple(images.shape)}")
        return images
    from reward.embeddings import pil_to_tensor

    images = list(images)
    if not images:
        return torch.zeros(0, 3, 1, 1)
    sizes = {im.size for im in images}
    if len(sizes) > 1:
        raise UserError("images of different sizes must be scored one size at a time")
    return torch.stack([pil_to_tensor(im) for im in images])


def _prompts(prompts, n: int) -> list[str]:
    prompts = [""] * n if prompts is None else [str(p) for p in prompts]
    if len(prompts) != n:
        raise UserError(f"{n} images but {len(prompts)} prompts; give one prompt per image")
    return prompts


def _local(path: str, what: str, folder: bool = False) -> Path:
    p = Path(path).expanduser()
    if folder and not p.is_dir():
        raise UserError(f"no {what} folder at {path}")
    if not folder and not p.is_file():
        raise UserError(f"no {what} file at {path}")
    return p.resolve()


def _digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents), as `sha256:...`."""
    from reward.clip import _file_digest

    if path.is_file():
        return "sha256:" + _file_digest(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path)}:{_file_digest(f)}".encode())
    return "sha256:" + h.hexdigest()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _one_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _hub_error(name: str, source: str, e: BaseException, local_form: str) -> UserError:
    return UserError(f"{name}: could not load {source} (not in the local cache while offline, or the hub is "
                     f"unreachable: {_one_line(e)}); download it once with network access, or give {local_form}")


class _ClipLike(BuiltinReward):
    """A reward on (image, prompt) embeddings of a frozen CLIP, preprocessed differentiably on tensors."""

    preprocess = None

    def _embed_images(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def _embed_texts(self, prompts: list[str]) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def cosines(self, images, prompts) -> torch.Tensor:
        x = as_pixels(images)
        prompts = _prompts(prompts, len(x))
        if not len(x):
            return torch.zeros(0)
        img = F.normalize(self._embed_images(self.preprocess(x.to(self.preprocess.mean.device, torch.float32))).float(), dim=-1)
        with torch.no_grad():
            txt = F.normalize(self._embed_texts(prompts).float(), dim=-1)
        return (img * txt.to(img.device)).sum(-1)


class TorchvisionPreprocess(torch.nn.Module):
    """open_clip's (and HPSv2's) val transform on float tensors in [0, 1], with torchvision's own ops (so its
    centre crop rounds as theirs does): Resize(shorter side, bicubic, antialiased), CenterCrop, Normalize.
    Differentiable in the pixels."""

    def __init__(self, size: int, mean, std):
        super().__init__()
        self.size = int(size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        x = TF.resize(x, [self.size], interpolation=InterpolationMode.BICUBIC, antialias=True)
        x = TF.center_crop(x, [self.size, self.size])
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


# --- LAION aesthetic ---------------------------------------------------------------------------------------------
class LaionAesthetic(BuiltinReward):
    kind = "laion-aesthetic"

    def __init__(self, name, clip, head, head_source: str, head_digest: str | None):
        super().__init__(name)
        self.clip, self.head = clip, head.to(clip.preprocess.mean.device)
        self.clip_spec = clip.source.spec
        self.head_source, self.head_digest = head_source, head_digest

    def score(self, images, prompts=None) -> torch.Tensor:
        x = as_pixels(images)
        if not len(x):
            return torch.zeros(0)
        return self.head(self.clip.encode_pixels(x)).float().cpu()

    def provenance(self) -> dict:
        return {"name": self.name, "kind": self.kind, "source": "christophschuhmann/improved-aesthetic-predictor",
                "weights": self.head_source, "digest": self.head_digest, "clip": self.clip_spec,
                "clip_fingerprint": self.clip.source.fingerprint(), "licence": "Apache-2.0 (code and heads)"}


@register_builtin("laion-aesthetic", "LAION improved aesthetic predictor on CLIP ViT-L/14 (1-10)",
                  lambda arg, options: options.get("clip", "ViT-L-14/openai"))
def _load_laion(arg, options, device):
    from reward.laion import load_laion

    check_options("laion-aesthetic", options, ("clip",))
    if arg is None:
        head_path = _download_url(LAION_HEAD_URL, "laion-aesthetic", "laion-aesthetic=/path/head.pth")
        source = LAION_HEAD_URL
    else:
        head_path = _local(arg, "LAION aesthetic head")
        source = str(head_path)
    head = load_laion(head_path)
    clip = _load_clip(BUILTINS["laion-aesthetic"].space(arg, options), device, "laion-aesthetic")
    if head.in_dim != clip.dim:
        raise UserError(f"laion-aesthetic: the head reads {head.in_dim}-d embeddings but the CLIP "
                        f"{clip.source.spec} makes {clip.dim}-d ones (the published heads need ViT-L-14/openai)")
    return LaionAesthetic("laion-aesthetic", clip, head, source, _digest(Path(head_path)))


def _load_clip(spec: str, device, who: str):
    from prefs.errors import NotFoundError
    from reward.clip import load_clip

    try:
        return load_clip(spec, device=device)
    except NotFoundError as e:
        raise UserError(f"{who}: {_one_line(e)}") from None


def _download_url(url: str, who: str, local_form: str) -> Path:
    """A file from `url` in torch.hub's checkpoint cache (downloaded once, as `torch.hub` does)."""
    target = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if target.is_file():
        return target
    if _offline():
        raise UserError(f"{who}: {target.name} is not in the cache ({target.parent}) and the hub is offline "
                        f"(HF_HUB_OFFLINE); download it once with network access, or give {local_form}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), progress=False)
    except Exception as e:  # noqa: BLE001 - urllib, OSError, ...: one line
        raise UserError(f"{who}: could not download {url} ({_one_line(e)}); give {local_form}") from None
    return target


# --- PickScore -----------------------------------------------------------------------------------------------------
class PickScore(_ClipLike):
    kind = "pickscore"

    def __init__(self, name, model, processor, model_source: str, processor_source: str, digest: str | None, device):
        from reward.clip import ClipPreprocess

        super().__init__(name)
        self.model, self.processor = model.to(device).eval().requires_grad_(False), processor
        ip = processor.image_processor
        crop = ip.crop_size if isinstance(ip.crop_size, int) else (getattr(ip.crop_size, "height", None)
                                                                    or ip.crop_size["height"])
        self.preprocess = ClipPreprocess(crop, ip.image_mean, ip.image_std).to(device)
        self.clip_spec = f"pickscore:{model_source}"
        self.model_source, self.processor_source, self.digest = model_source, processor_source, digest

    def _embed_images(self, x):
        out = self.model.get_image_features(pixel_values=x.to(self.model.dtype))
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def _embed_texts(self, prompts):
        tok = self.processor.tokenizer(prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        out = self.model.get_text_features(**{k: v.to(self.model.device) for k, v in tok.items()})
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def score(self, images, prompts) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):  # PIL: the published processor, exactly
            images = list(images)
            prompts = _prompts(prompts, len(images))
            if not images:
                return torch.zeros(0)
            pixels = self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
            img = F.normalize(self._embed_images(pixels.to(self.model.device)).float(), dim=-1)
            with torch.no_grad():
                txt = F.normalize(self._embed_texts(prompts).float(), dim=-1)
            cos = (img * txt).sum(-1)
        else:
            cos = self.cosines(images, prompts)
        return (self.model.logit_scale.exp().float() * cos).float().cpu()

    def provenance(self) -> dict:
        return {"name": self.name, "kind": self.kind, "source": "yuvalkirstain/PickScore (Kirstain et al. 2023)",
                "weights": self.model_source, "processor": self.processor_source, "digest": self.digest,
                "licence": "code MIT (yuvalkirstain/PickScore); weights: see the model card"}


@register_builtin("pickscore", "PickScore v1: logit_scale * cos(image, prompt) on a CLIP-H (transformers)",
                  lambda arg, options: "PickScore's CLIP ViT-H/14")
def _load_pickscore(arg, options, device):
    from transformers import CLIPModel, CLIPProcessor

    check_options("pickscore", options, ("processor",))
    model_src, digest = PICKSCORE_MODEL, None
    if arg is not None:
        folder = _local(arg, "PickScore model", folder=True)
        model_src, digest = str(folder), _digest(folder)
    proc_src = options.get("processor")
    if proc_src is None:
        proc_src = model_src if arg is not None and _has_processor(Path(model_src)) \
            else PICKSCORE_PROCESSOR
    elif Path(proc_src).expanduser().exists():  # else a hub id
        proc_src = str(_local(proc_src, "PickScore processor", folder=True))
    try:
        processor = CLIPProcessor.from_pretrained(proc_src)
    except (OSError, ValueError) as e:
        raise _hub_error("pickscore", f"the processor {proc_src}", e, "pickscore=FOLDER,processor=FOLDER") from None
    try:
        model, info = CLIPModel.from_pretrained(model_src, dtype=torch.float32, output_loading_info=True)
    except (OSError, ValueError) as e:
        raise _hub_error("pickscore", f"the model {model_src}", e, "pickscore=FOLDER") from None
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    if missing:  # transformers would fill them with random weights
        raise UserError(f"pickscore: {model_src} does not fit transformers' CLIPModel ({len(missing)} weights "
                        f"missing, e.g. {sorted(missing)[0]!r})")
    return PickScore("pickscore", model, processor, model_src, proc_src, digest, device)


def _has_processor(folder: Path) -> bool:
    """Whether a folder holds a saved CLIP processor (transformers 4's or 5's file names) and a tokenizer."""
    return any((folder / n).is_file() for n in ("preprocessor_config.json", "processor_config.json")) and any(
        (folder / n).is_file() for n in ("tokenizer.json", "vocab.json"))


# --- HPS v2.1 ------------------------------------------------------------------------------------------------------
class HPSv2(_ClipLike):
    kind = "hpsv2"

    def __init__(self, name, model, tokenizer, arch: str, source: str, digest: str | None, device):
        from reward.clip import OPENAI_MEAN, OPENAI_STD

        super().__init__(name)
        self.model, self.tokenizer, self.arch = model.to(device).eval().requires_grad_(False), tokenizer, arch
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        self.preprocess = TorchvisionPreprocess(int(size), OPENAI_MEAN, OPENAI_STD).to(device)
        self.clip_spec = f"hpsv2:{arch}"
        self.source, self.digest = source, digest

    def _embed_images(self, x):
        return self.model.encode_image(x.to(self.model.visual.conv1.weight.dtype))

    def _embed_texts(self, prompts):
        return self.model.encode_text(self.tokenizer(prompts).to(self.preprocess.mean.device))

    def score(self, images, prompts) -> torch.Tensor:
        return self.cosines(images, prompts).float().cpu()

    def provenance(self) -> dict:
        return {"name": self.name, "kind": self.kind, "source": "tgxs002/HPSv2 (Wu et al. 2023), HPS v2.1",
                "weights": self.source, "digest": self.digest, "arch": self.arch,
                "licence": "Apache-2.0 (tgxs002/HPSv2); weights: see the model card"}


@register_builtin("hpsv2", "HPS v2.1: cos(image, prompt) on an open_clip ViT-H-14",
                  lambda arg, options: f"HPS v2's {options.get('arch', HPS_ARCH)}")
def _load_hpsv2(arg, options, device):
    import open_clip

    check_options("hpsv2", options, ("arch",))
    arch = options.get("arch", HPS_ARCH)
    if arch not in open_clip.list_models():
        raise UserError(f"hpsv2: unknown open_clip architecture {arch!r} (arch=...; default {HPS_ARCH})")
    if arg is None:
        path = _hub_file(HPS_REPO, HPS_FILE, "hpsv2", "hpsv2=/path/HPS_v2.1_compressed.pt")
        source = f"hf://{HPS_REPO}/{HPS_FILE}"
    else:
        path = _local(arg, "HPS v2 checkpoint")
        source = str(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle errors come in many types
        raise UserError(f"hpsv2: could not read {path} as a torch checkpoint ({_one_line(e)})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UserError(f"hpsv2: {path} is not an HPS checkpoint (a dict with a 'state_dict')")
    sd = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    logging.disable(logging.WARNING)  # open_clip warns that no pretrained weights were loaded: they load next
    try:
        model = open_clip.create_model(arch, pretrained=None, device="cpu")
    finally:
        logging.disable(logging.NOTSET)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        what = (f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}")
        raise UserError(f"hpsv2: {path} does not fit open_clip's {arch} ({len(missing)} keys missing, "
                        f"{len(unexpected)} unexpected; {what})")
    return HPSv2("hpsv2", model, open_clip.get_tokenizer(arch), arch, source, _digest(Path(path)), device)


def _hub_file(repo: str, filename: str, who: str, local_form: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename))
    except Exception as e:  # noqa: BLE001 - offline, network and hub errors: one line
        raise _hub_error(who, f"{repo}/{filename}", e, local_form) from None


# --- CLIPScore -----------------------------------------------------------------------------------------------------
class ClipScore(_ClipLike):
    kind = "clipscore"

    def __init__(self, name, clip):
        super().__init__(name)
        self.clip, self.preprocess, self.clip_spec = clip, clip.preprocess, clip.source.spec

    def _embed_images(self, x):
        return self.clip.model.encode_image(x)

    def _embed_texts(self, prompts):
        return self.clip.model.encode_text(self.clip.tokenizer(prompts).to(self.preprocess.mean.device))

    def score(self, images, prompts) -> torch.Tensor:
        return (CLIPSCORE_W * self.cosines(images, prompts).clamp(min=0)).float().cpu()

    def provenance(self) -> dict:
        return {"name": self.name, "kind": self.kind, "source": "CLIPScore (Hessel et al. 2021), jmhessel/clipscore",
                "weights": self.clip_spec, "clip_fingerprint": self.clip.source.fingerprint(),
                "licence": "see the CLIP's upstream"}


@register_builtin("clipscore", "CLIPScore: 2.5 * max(cos(image, prompt), 0) on a CLIP (default ViT-B-32/openai)",
                  lambda arg, options: arg or CLIPSCORE_CLIP)
def _load_clipscore(arg, options, device):
    check_options("clipscore", options)
    return ClipScore("clipscore", _load_clip(arg or CLIPSCORE_CLIP, device, "clipscore"))


# --- JPEG (in)compressibility -------------------------------------------------------------------------------------
def jpeg_kb(images) -> torch.Tensor:
    """JPEG size in kB (1000 bytes) at quality 95 of each image as uint8, as ddpo-pytorch measures it."""
    from PIL import Image

    x = as_pixels(images).detach()
    arr = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    sizes = []
    for a in arr:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=JPEG_QUALITY)
        sizes.append(buf.tell() / 1000)
    return torch.tensor(sizes, dtype=torch.float32)


class Jpeg(BuiltinReward):
    differentiable = False
    clip_spec = None

    def __init__(self, name, sign: float):
        super().__init__(name)
        self.kind, self.sign = name, sign

    def score(self, images, prompts=None) -> torch.Tensor:
        return self.sign * jpeg_kb(images)

    def provenance(self) -> dict:
        return {"name": self.name, "kind": self.kind, "source": "kvablack/ddpo-pytorch rewards.py",
                "weights": None, "jpeg_quality": JPEG_QUALITY, "licence": "MIT (kvablack/ddpo-pytorch)"}


@register_builtin("jpeg-compressibility", "minus the JPEG size in kB at quality 95 (ddpo-pytorch)",
                  lambda arg, options: None)
def _load_compressibility(arg, options, device):
    if arg is not None:
        raise UserError("jpeg-compressibility takes no argument")
    check_options("jpeg-compressibility", options)
    return Jpeg("jpeg-compressibility", -1.0)


@register_builtin("jpeg-incompressibility", "the JPEG size in kB at quality 95 (ddpo-pytorch)",
                  lambda arg, options: None)
def _load_incompressibility(arg, options, device):
    if arg is not None:
        raise UserError("jpeg-incompressibility takes no argument")
    check_options("jpeg-incompressibility", options)
    return Jpeg("jpeg-incompressibility", 1.0)
