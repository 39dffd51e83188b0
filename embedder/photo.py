"""Read a photo the way a user means it: any common format and mode → upright 8-bit RGB, or one clear error.

Photos come from phones, scanners and image editors, so they arrive as PNG with alpha, grayscale, palette,
CMYK JPEG, 16-bit PNG, WebP, or with an EXIF orientation tag instead of rotated pixels. The detector and the
embedder only ever see 8-bit RGB, upright. Everything that cannot be read becomes a `PhotoError` naming the path
and the problem in one line, so a batch can report it and move on.

Only Pillow is imported here: reading a photo must not pull in torch.
"""
from __future__ import annotations

import io
import os
import re
import struct
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

# Refuse images above this many pixels *before* decoding them: 100 megapixels is beyond any phone or DSLR photo
# in ordinary use, while a decoded 30000×30000 RGB image alone would take 2.7 GB.
MAX_PIXELS = 100_000_000

# Formats that identify themselves by a magic number. Restricting `Image.open` to these keeps a text file or
# random bytes from being "identified" by a lenient plugin (TGA has no magic number), and never hands a file to
# a plugin that shells out (EPS runs Ghostscript).
FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "AVIF", "HEIF")

# Transparent areas are painted this colour. White is what every image viewer shows behind a cut-out portrait.
BACKGROUND = (255, 255, 255)

# What Pillow raises for damaged or cut-off files varies by plugin and decoder.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError)


class PhotoError(ValueError):
    """A photo that cannot be used; the message is one line naming the path and the problem."""

    def __init__(self, path: "str | os.PathLike[str] | PhotoBytes", problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class PhotoBytes:
    """A photo held in memory, such as an upload to `oneshot serve`: it is decoded from memory and never written to
    disk (a face photo is biometric data). `name` is how messages refer to it, like a path for a file."""

    name: str
    data: bytes = b""

    def __str__(self) -> str:
        return self.name


def load_photo(path: str | os.PathLike[str] | PhotoBytes) -> Image.Image:
    """Read `path` (or the bytes of a `PhotoBytes`) as an upright 8-bit RGB image (EXIF orientation applied), fully
    decoded.

    Raises `PhotoError` for a missing path, a directory, an empty, truncated or non-image file, and an image with
    more than `MAX_PIXELS` pixels (refused from its header, before any pixel is decoded).
    """
    file: Path | io.BytesIO
    if isinstance(path, PhotoBytes):
        if not path.data:
            raise PhotoError(path, "file is empty (0 bytes)")
        file = io.BytesIO(path.data)
    else:
        file = Path(path)
        _check_file(file, path)
    try:
        with warnings.catch_warnings():
            # Pillow warns about images above its own bomb limit (~89 MP; ours is the one that decides) and about
            # unidentifiable files; the user gets one line from us instead.
            warnings.simplefilter("ignore")
            with Image.open(file, formats=_formats()) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise PhotoError(path, _too_large(width, height))
                if width == 0 or height == 0:
                    raise PhotoError(path, f"image has no pixels ({width}×{height})")
                # A full decode now, so that a truncated file fails here rather than somewhere downstream.
                # LOAD_TRUNCATED_IMAGES stays off: a cut-off photo is refused, not silently padded with grey.
                image.load()
                upright = _upright(image)
                return to_rgb(upright)
    except PhotoError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow's own limit (2 × MAX_IMAGE_PIXELS) fired inside `Image.open`, from the header alone.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)) / 1e6:.0f} megapixels; " if found else ""
        raise PhotoError(path, f"image is too large ({size}the limit is {MAX_PIXELS / 1e6:.0f})") from None
    except UnidentifiedImageError:
        raise PhotoError(path, "not an image Pillow can read (JPEG, PNG, WebP, GIF, BMP, TIFF, PPM)") from None
    except MemoryError:
        raise PhotoError(path, "not enough memory to decode this image") from None
    except PermissionError:
        raise PhotoError(path, "permission denied") from None
    except _DECODE_ERRORS as exc:
        raise PhotoError(path, f"damaged or truncated image ({_one_line(exc)})") from None


@lru_cache(maxsize=1)
def _formats() -> tuple[str, ...]:
    """`FORMATS` that this Pillow build can open (AVIF/HEIF depend on how it was built)."""
    Image.init()
    return tuple(name for name in FORMATS if name in Image.OPEN)


def _check_file(file: Path, shown: str | os.PathLike[str]) -> None:
    """Cheap checks that give a clearer message than Pillow's would."""
    try:
        if not file.exists():
            raise PhotoError(shown, "no such file")
        if file.is_dir():
            raise PhotoError(shown, "is a directory, not a photo")
        if not file.is_file():
            raise PhotoError(shown, "not a regular file")
        if file.stat().st_size == 0:
            raise PhotoError(shown, "file is empty (0 bytes)")
    except OSError as exc:  # e.g. a path component that is a file, a name too long, permissions
        raise PhotoError(shown, _one_line(exc)) from None


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag, so a phone photo taken in portrait is upright.

    A broken EXIF block must not cost the user the photo: the pixels are still fine, so fall back to them as
    stored.
    """
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - any EXIF parsing failure means "no usable orientation"
        return image.copy()


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB: alpha composited on `BACKGROUND`, 16-bit scaled (not clipped) to 8-bit."""
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_to_rgb(image)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "PA", "La", "RGBa") or (mode in ("L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, BACKGROUND)
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode == "CMYK":
        # Pillow already undoes Adobe's inverted CMYK JPEGs when decoding; a plain conversion is then right.
        return image.convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError:
        # Modes without a direct route to RGB (e.g. LAB, HSV) go through their own RGB conversion or L.
        return image.convert("L").convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit (and 32-bit int / float) grayscale → 8-bit RGB by scaling, not clipping.

    `convert("L")` on a 16-bit image clips everything above 255 to white, so a normal 16-bit photo (values up to
    65535) would come out almost entirely white. 16-bit modes are divided by 257 (65535 → 255); int and float
    images are scaled by their own range when they exceed 8 bits.
    """
    if image.mode.startswith("I;16"):
        scale, offset = 1.0 / 257.0, 0.0
    else:
        low, high = image.getextrema()
        if image.mode == "F" and 0.0 <= low and high <= 1.0:
            scale, offset = 255.0, 0.0          # float images in 0..1
        elif 0 <= low and high <= 255:
            scale, offset = 1.0, 0.0            # already 8-bit values
        elif 0 <= low and high <= 65535:
            scale, offset = 1.0 / 257.0, 0.0    # 16-bit values in a 32-bit container
        else:
            span = float(high - low) or 1.0
            scale, offset = 255.0 / span, -float(low) * 255.0 / span
    as_float = image.convert("F")
    scaled = as_float.point(lambda v: v * scale + offset)
    return scaled.convert("L").convert("RGB")


def _too_large(width: int, height: int) -> str:
    return (
        f"image is too large ({width}×{height} = {width * height / 1e6:.0f} megapixels; "
        f"the limit is {MAX_PIXELS / 1e6:.0f})"
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
