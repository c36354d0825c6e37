"""The image pool: content-addressed files under the home (`pool/ab/abcdef....png`), and image validation.

A file's identity is the sha256 of its bytes, so the same image added twice is stored once. Files keep
their original bytes and format (PNG, JPEG, WebP); in-memory PIL images are encoded as PNG. Every image is
checked before it is stored: it must decode, be one of the supported formats, and stay within the size
limits (a small file can declare a huge canvas: a decompression bomb), which are checked from the header
before any pixel is decoded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import warnings
from pathlib import Path

from PIL import Image as PILImage

from prefs import atomic
from prefs.errors import StorageError, UserError

DEFAULT_MAX_SIDE = 4096  # px; the largest side SD-family models generate, with room to spare
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}  # PIL format -> extension in the pool
EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp"}


class ImageError(UserError):
    """A file is not a usable image: corrupt, an unsupported format, or over the size limits."""


@dataclasses.dataclass(frozen=True)
class ImageFile:
    """A validated image file's bytes and what the pool needs to know about them."""

    data: bytes
    sha256: str
    width: int
    height: int
    format: str  # pool extension: png | jpg | webp
    parameters: str | None  # AUTOMATIC1111 `parameters` text found in the file, if any


@dataclasses.dataclass(frozen=True)
class Limits:
    """Size limits for incoming images."""

    max_side: int = DEFAULT_MAX_SIDE  # px, either side
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self):
        if self.max_side < 1 or self.max_bytes < 1:
            raise UserError(f"image size limits must be positive, got max_side={self.max_side}, max_bytes={self.max_bytes}")


def load_image_file(source: bytes | str | os.PathLike | PILImage.Image, limits: Limits = Limits(), name: str | None = None) -> ImageFile:
    """Read and validate an image from bytes, a path, or a PIL image (encoded as PNG, keeping its text chunks).

    Raises ImageError naming the file (or `name`) when it is unreadable, unsupported or too large.
    """
    from prefs.pngmeta import pnginfo

    if isinstance(source, PILImage.Image):
        buf = io.BytesIO()
        text = source.info.get("parameters")
        source.save(buf, format="PNG", pnginfo=pnginfo(text) if isinstance(text, str) else None)
        data = buf.getvalue()
        name = name or "<image>"
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = name or "<bytes>"
    else:
        path = Path(source)
        name = name or str(path)
        try:
            size = path.stat().st_size
        except OSError as e:
            raise ImageError(f"{name}: cannot read ({e.strerror or e})") from e
        if size > limits.max_bytes:
            raise ImageError(f"{name}: {size:,} bytes is over the limit of {limits.max_bytes:,} bytes (--max-bytes)")
        data = path.read_bytes()
    return _validate(data, limits, name)


def _validate(data: bytes, limits: Limits, name: str) -> ImageFile:
    from prefs.pngmeta import read_parameters

    if len(data) > limits.max_bytes:
        raise ImageError(f"{name}: {len(data):,} bytes is over the limit of {limits.max_bytes:,} bytes (--max-bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data)) as img:
                fmt = FORMATS.get(img.format or "")
                if fmt is None:
                    raise ImageError(f"{name}: unsupported image format {img.format}; supported: PNG, JPEG, WebP")
                width, height = img.size
                if max(width, height) > limits.max_side:
                    raise ImageError(
                        f"{name}: {width}x{height} px is over the limit of {limits.max_side} px a side (--max-side)"
                    )
                img.load()  # decode every pixel: catches truncated and corrupt files
                parameters = read_parameters(img)
    except ImageError:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: refused as a possible decompression bomb, over the limit of {limits.max_side} px a side ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: not a readable image ({e})") from e
    return ImageFile(data, hashlib.sha256(data).hexdigest(), width, height, fmt, parameters)


def read_image(path: str | os.PathLike, name: str | None = None) -> PILImage.Image:
    """The image file at `path` decoded to RGB: what every reader of the pool uses, so a missing or unreadable
    file is the same ImageError (naming the path, after `name` when given) wherever it is met."""
    where = f"{name}: " if name else ""
    try:
        with PILImage.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError as e:
        raise ImageError(f"{where}the file {path} is missing") from e
    except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise ImageError(f"{where}{path} is not a readable image ({reason})") from e


def pool_path(pool_dir: Path, sha256: str, fmt: str) -> Path:
    """Where a file lives in the pool: `pool/ab/abcdef....ext` (two-hex-digit fan-out keeps folders small)."""
    return pool_dir / sha256[:2] / f"{sha256}.{fmt}"


def store_file(pool_dir: Path, image: ImageFile) -> tuple[Path, bool]:
    """Write the file into the pool (atomically) unless it is already there: (its path, whether it was written).

    A write the disk refuses (full, read-only) raises StorageError naming the file, with nothing left behind.
    """
    path = pool_path(pool_dir, image.sha256, image.format)
    if path.exists():
        return path, False
    try:
        atomic.write_bytes(path, image.data)
    except OSError as e:
        raise StorageError(f"cannot write {path}: {e.strerror or e}") from e
    return path, True
