"""AUTOMATIC1111's `parameters` text: how generation settings travel inside an image file.

A1111 (and Forge, SD.Next, ComfyUI exporters, civitai) write one text block into a PNG `tEXt`/`iTXt`
chunk named `parameters` (for JPEG/WebP: the EXIF UserComment). Its layout is:

    a prompt, possibly
    over several lines
    Negative prompt: the negative prompt, possibly multi-line
    Steps: 20, Sampler: DDIM, CFG scale: 7.5, Seed: 1, Size: 512x512, Model: name, Key: "a, quoted value"

The `Negative prompt:` line is omitted when there is none. The last line holds `Key: value` pairs; a value
containing a comma, colon or newline is written as a JSON string (A1111's `quote`). Parsing follows A1111's
own `parse_generation_parameters`: the last line counts as settings only when it holds at least three pairs.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

PARAMETERS_KEY = "parameters"
NEGATIVE_PREFIX = "Negative prompt:"
# One `Key: value` pair: a key starting with a word character, then a JSON-quoted string or anything up to
# the next comma (A1111's re_param_code, verbatim, so we parse what A1111 parses).
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_EXIF_USER_COMMENT = 0x9286
_EXIF_IFD = 0x8769


def _quote(value: Any) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text and not text.startswith('"'):
        return text
    return json.dumps(text, ensure_ascii=False)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def format_parameters(
    prompt: str,
    negative_prompt: str = "",
    *,
    steps: int,
    sampler: str,
    cfg_scale: float,
    seed: int,
    width: int,
    height: int,
    model: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Write generation settings in A1111's exact `parameters` layout (see the module docstring).

    `extra` pairs are appended after `Model` in their insertion order; None values are left out.
    Values with commas, colons or newlines are JSON-quoted, so `parse_parameters` reads them back exactly.
    """
    settings: dict[str, Any] = {
        "Steps": steps,
        "Sampler": sampler,
        "CFG scale": cfg_scale,
        "Seed": seed,
        "Size": f"{width}x{height}",
    }
    if model is not None:
        settings["Model"] = model
    for key, value in (extra or {}).items():
        if value is not None:
            settings[str(key)] = value
    lines = [prompt]
    if negative_prompt:
        lines.append(f"{NEGATIVE_PREFIX} {negative_prompt}")
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in settings.items()))
    return "\n".join(lines)


def parse_parameters(text: str) -> dict[str, Any]:
    """Parse an A1111 `parameters` block into `{"prompt", "negative_prompt", "settings"}`.

    `settings` maps each key of the last line to its value as a string (quoted values unquoted). Text
    without a settings line (fewer than three pairs on the last line) is all prompt, as in A1111.
    """
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PREFIX):].strip()
        (negative if in_negative else prompt).append(line)
    settings = {key.strip(): _unquote(value.strip()) for key, value in _PARAM.findall(last)}
    return {"prompt": "\n".join(prompt), "negative_prompt": "\n".join(negative), "settings": settings}


def pnginfo(text: str) -> PngInfo:
    """A `PngInfo` carrying `text` as the `parameters` chunk: `img.save(path, pnginfo=pnginfo(text))`.

    Non-Latin-1 text goes into a UTF-8 `iTXt` chunk, as A1111 does.
    """
    info = PngInfo()
    try:
        text.encode("latin-1")
        info.add_text(PARAMETERS_KEY, text)
    except UnicodeEncodeError:
        info.add_itxt(PARAMETERS_KEY, text)
    return info


def read_parameters(source: str | os.PathLike | Image.Image) -> str | None:
    """The `parameters` text of an image file or an open PIL image, or None when it has none.

    PNG: the `parameters` text chunk. JPEG/WebP: the EXIF UserComment (where A1111 puts it).
    """
    if isinstance(source, Image.Image):
        return _read_from(source)
    with Image.open(source) as img:
        return _read_from(img)


def _read_from(img: Image.Image) -> str | None:
    text = img.info.get(PARAMETERS_KEY)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if text:
        return str(text)
    try:
        exif = img.getexif()
    except Exception:  # a damaged EXIF block must not make an image unreadable
        return None
    raw = exif.get_ifd(_EXIF_IFD).get(_EXIF_USER_COMMENT) or exif.get(_EXIF_USER_COMMENT)
    return _decode_user_comment(raw) if raw else None


def _decode_user_comment(raw: bytes | str) -> str | None:
    if isinstance(raw, str):
        return raw or None
    head, body = raw[:8], raw[8:]
    if head.startswith(b"UNICODE"):
        # Big-endian is the standard (piexif, A1111); some writers use little-endian, recognisable by the
        # zero high byte of an ASCII first character.
        little = len(body) >= 2 and body[0] != 0 and body[1] == 0
        text = body.decode("utf-16-le" if little else "utf-16-be", "replace")
    elif head.startswith(b"ASCII"):
        text = body.decode("ascii", "replace")
    else:
        text = raw.decode("utf-8", "replace")
    return text.strip("\x00") or None
