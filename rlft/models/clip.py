"""Resolve a CLIP spec through open_clip to `(model, preprocess, tokenizer)`.

A spec is one of:
  - a built-in name (`toy`): an open_clip folder shipped inside the package;
  - a local folder in open_clip's hub layout: `open_clip_config.json` (`{"model_cfg": ..., "preprocess_cfg": ...}`)
    and `open_clip_model.safetensors` (or `.bin`);
  - `ARCH/TAG`, an open_clip architecture and pretrained tag (`ViT-L-14/openai`), from the local cache
    when offline;
  - `hf-hub:org/repo`, an open_clip model on the Hugging Face hub.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from prefs.errors import NotFoundError, UserError
from rlft.models.device import default_device
from rlft.models.pipeline import ASSETS, OfflineError, is_offline

CONFIG_NAME = "open_clip_config.json"


@dataclass(frozen=True)
class BuiltinClip:
    """A CLIP model that ships inside the package (or is built into it by an rlft command)."""

    folder: Path  # open_clip hub-layout folder
    build: str  # the command that writes `folder` when it is missing


BUILTIN_CLIPS: dict[str, BuiltinClip] = {
    "toy": BuiltinClip(ASSETS / "toy" / "clip", "rlft toy pretrain"),
}


def valid_forms(arch_names: bool = False) -> str:
    text = (
        f"a built-in name ({', '.join(sorted(BUILTIN_CLIPS))}), a folder with {CONFIG_NAME} and weights, "
        "ARCH/TAG (e.g. ViT-L-14/openai), or hf-hub:org/repo"
    )
    if arch_names:
        import open_clip

        text += f"; architectures: {', '.join(open_clip.list_models())}"
    return text


def resolve_clip(spec: str | os.PathLike) -> tuple[str, str | None]:
    """The open_clip `(model_name, pretrained)` pair for `spec`; raises NotFoundError listing valid forms."""
    text = os.fspath(spec)
    if text in BUILTIN_CLIPS:
        builtin = BUILTIN_CLIPS[text]
        if not (builtin.folder / CONFIG_NAME).is_file():
            raise NotFoundError(
                f"the built-in CLIP {text!r} has no weights yet ({builtin.folder} is missing); "
                f"build them with `{builtin.build}`"
            )
        return f"local-dir:{builtin.folder}", None
    if text.startswith("hf-hub:"):
        return text, None
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise NotFoundError(f"{text} is a folder without {CONFIG_NAME}; a CLIP model is {valid_forms()}")
        return f"local-dir:{path.resolve()}", None
    import open_clip

    arch, _, tag = text.partition("/")
    if arch not in open_clip.list_models():
        raise NotFoundError(f"unknown CLIP model {text!r}; a CLIP model is {valid_forms(arch_names=True)}")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag not in tags:
        raise NotFoundError(
            f"{arch} needs a pretrained tag as {arch}/TAG" + (f", not {tag!r}" if tag else "")
            + f"; tags: {', '.join(tags) or 'none (train one, or use a folder)'}"
        )
    return arch, tag


def load_clip(spec: str | os.PathLike, device: str | None = None):
    """Load an open_clip model: returns `(model, preprocess, tokenizer)`, the model in eval mode on `device`.

    `preprocess` is the evaluation transform (PIL image -> tensor); `tokenizer(list_of_texts)` gives ids.
    Only `ARCH/TAG` and `hf-hub:` specs ever download, and not when offline (HF_HUB_OFFLINE=1).
    """
    import open_clip

    name, pretrained = resolve_clip(spec)
    device = device or default_device()
    try:
        # open_clip logs a failed download as an ERROR on the root logger; our exception says it in one line.
        logging.disable(logging.ERROR)
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
        tokenizer = open_clip.get_tokenizer(name)
    except (RuntimeError, OSError) as e:
        if name.startswith("local-dir:"):
            raise UserError(f"could not load the CLIP folder {name[len('local-dir:'):]}: {e}") from e
        if is_offline():
            raise OfflineError(
                f"the CLIP model {os.fspath(spec)!r} is not in the local cache and rlft is offline (HF_HUB_OFFLINE=1); "
                "download it once with network access, or pass a local folder"
            ) from e
        raise NotFoundError(f"could not fetch the CLIP model {os.fspath(spec)!r}: {e}") from e
    finally:
        logging.disable(logging.NOTSET)
    return model.eval(), preprocess, tokenizer
