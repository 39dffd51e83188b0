"""`oneshot identify --annotate DIR`: a copy of each photo with every face's box and name (or "unknown") drawn.

A person checking why the door did not open wants to *see* which face was found and what it was taken for. The
copy is drawn on the photo as the detector saw it (upright, EXIF orientation applied), so boxes land on faces;
it never overwrites the photo it was made from.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

    from enroll.service import Identification

KNOWN, UNKNOWN = (32, 192, 64), (224, 48, 48)
# Suffixes written in their own format; anything else (HEIC, AVIF, GIF, ...) is written as PNG.
_WRITABLE = {".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP",
             ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM"}


def prepare_folder(folder: str | os.PathLike[str]) -> Path:
    """Create `folder` if needed; OSError (one line) when it is a file or cannot be created."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{os.fspath(folder)}: not a directory (--annotate needs a folder)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"{os.fspath(folder)}: cannot create the folder ({exc.strerror or exc})") from None
    return path


def draw(image: "Image.Image", result: "Identification") -> "Image.Image":
    """A copy of `image` with a box and a label per face: the name in green, "unknown" in red."""
    from PIL import ImageDraw, ImageFont

    out = image.convert("RGB")
    canvas = ImageDraw.Draw(out)
    short = min(out.size)
    line = max(2, round(short / 150))
    font = ImageFont.load_default(size=max(12, round(short / 22)))
    for face in result.faces:
        x1, y1, x2, y2 = face.box
        colour = KNOWN if face.name is not None else UNKNOWN
        label = face.name if face.name is not None else "unknown"
        canvas.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        left, top, right, bottom = canvas.textbbox((0, 0), label, font=font)
        width, height = right - left + 8, bottom - top + 8
        y = y1 - height if y1 - height >= 0 else y2
        canvas.rectangle((x1, y, x1 + width, y + height), fill=colour)
        canvas.text((x1 + 4 - left, y + 4 - top), label, fill=(255, 255, 255), font=font)
    return out


def annotated_path(folder: Path, photo: str | os.PathLike[str], taken: set[Path]) -> Path:
    """Where the copy of `photo` goes: its file name in `folder` (PNG for formats Pillow cannot write), unless that
    is in `taken` (resolved paths: the run's photos themselves, and copies already written), then
    `name-annotated`, `name-annotated-2`, ... Adds the chosen path to `taken`."""
    source = Path(photo)
    suffix = source.suffix.lower() if source.suffix.lower() in _WRITABLE else ".png"
    stem = source.stem or "photo"
    n = 0
    candidate = folder / f"{stem}{suffix}"
    while _resolved(candidate) in taken:
        n += 1
        candidate = folder / f"{stem}-annotated{'' if n == 1 else f'-{n}'}{suffix}"
    taken.add(_resolved(candidate))
    return candidate


def write(image: "Image.Image", result: "Identification", target: Path) -> Path:
    """Draw and save the copy; OSError (one line) when it cannot be written."""
    fmt = _WRITABLE.get(target.suffix.lower(), "PNG")
    options = {"quality": 92} if fmt in ("JPEG", "WEBP") else {}
    try:
        draw(image, result).save(target, fmt, **options)
    except OSError as exc:
        raise OSError(f"{target}: cannot write the annotated copy ({exc.strerror or exc})") from None
    return target


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()
