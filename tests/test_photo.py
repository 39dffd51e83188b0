"""`load_photo`: every ordinary kind of photo comes out upright 8-bit RGB; every bad file is one clear PhotoError.

All photos are made here (no dataset needed), so nothing skips.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedder.photo import MAX_PIXELS, PhotoError, load_photo


def noise(width: int = 64, height: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def png_with_header_size(path: Path, width: int, height: int) -> Path:
    """A valid PNG whose IHDR claims width×height while holding only a few bytes of image data.

    Pillow reads the size from the header alone, so this tests refusal-before-decoding without allocating pixels.
    """
    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def assert_rgb(image: Image.Image, size: tuple[int, int]) -> None:
    assert image.mode == "RGB" and image.size == size
    image.getpixel((0, 0))  # fully decoded and usable after the file is closed


# -- unusual photos simply work ---------------------------------------------------------------------------------


def test_plain_jpeg_and_png(tmp_path: Path) -> None:
    Image.fromarray(noise()).save(tmp_path / "a.jpg", quality=90)
    Image.fromarray(noise()).save(tmp_path / "a.png")
    assert_rgb(load_photo(tmp_path / "a.jpg"), (64, 48))
    assert np.array_equal(np.asarray(load_photo(str(tmp_path / "a.png"))), noise())


def test_png_with_alpha_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((10, 20, 4), dtype=np.uint8)
    rgba[:, :10] = (255, 0, 0, 255)      # opaque red left half, fully transparent right half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    image = load_photo(tmp_path / "alpha.png")
    assert_rgb(image, (20, 10))
    assert image.getpixel((2, 2)) == (255, 0, 0)
    assert image.getpixel((15, 2)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "1", "CMYK", "I"])
def test_other_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    source = Image.fromarray(noise()).convert(mode)
    path = tmp_path / ("photo.jpg" if mode == "CMYK" else "photo.png" if mode != "I" else "photo.tif")
    source.save(path)
    assert_rgb(load_photo(path), (64, 48))


def test_palette_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    image.paste(1, (0, 0, 4, 8))
    image.save(tmp_path / "p.png", transparency=0)
    loaded = load_photo(tmp_path / "p.png")
    assert loaded.getpixel((1, 1)) == (10, 200, 30) and loaded.getpixel((6, 1)) == (255, 255, 255)


def test_cmyk_jpeg_keeps_its_colours(tmp_path: Path) -> None:
    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    rgb[:] = (200, 40, 40)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    r, g, b = load_photo(tmp_path / "cmyk.jpg").getpixel((16, 16))
    assert r > 150 and g < 90 and b < 90


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (4, 1))
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    gray = np.asarray(load_photo(tmp_path / "deep.png"))[..., 0]
    # Clipping would make everything above 255/65535 white; scaling keeps the ramp.
    assert gray[0, 0] == 0 and gray[0, -1] == 255
    assert 120 <= gray[0, 128] <= 135
    assert np.all(np.diff(gray[0].astype(int)) >= 0)


def test_webp(tmp_path: Path) -> None:
    Image.fromarray(noise()).save(tmp_path / "a.webp")
    assert_rgb(load_photo(tmp_path / "a.webp"), (64, 48))


@pytest.mark.parametrize("orientation, size", [(1, (64, 48)), (3, (64, 48)), (6, (48, 64)), (8, (48, 64))])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, size: tuple[int, int]) -> None:
    pixels = noise()
    pixels[:8, :8] = (255, 0, 0)                    # a red marker in the stored top-left corner
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    loaded = load_photo(tmp_path / "phone.jpg")
    assert loaded.size == size
    if orientation == 6:                            # rotated 90° clockwise for display: marker goes top-right
        assert loaded.getpixel((size[0] - 3, 3))[0] > 200
    if orientation == 3:                            # rotated 180°: marker goes bottom-right
        assert loaded.getpixel((size[0] - 3, size[1] - 3))[0] > 200


def test_large_photo_below_the_limit_is_fine(tmp_path: Path) -> None:
    Image.new("RGB", (6000, 4000), (90, 90, 90)).save(tmp_path / "big.jpg", quality=50)
    assert_rgb(load_photo(tmp_path / "big.jpg"), (6000, 4000))


def test_tiny_photo_loads(tmp_path: Path) -> None:
    Image.new("RGB", (3, 2)).save(tmp_path / "tiny.png")
    assert_rgb(load_photo(tmp_path / "tiny.png"), (3, 2))


# -- bad input: one-line PhotoError naming the path ----------------------------------------------------------------


def refused(path: Path) -> str:
    with pytest.raises(PhotoError) as info:
        load_photo(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert isinstance(info.value, ValueError)
    return message


def test_missing_path(tmp_path: Path) -> None:
    assert "no such file" in refused(tmp_path / "nope.jpg")


def test_directory(tmp_path: Path) -> None:
    assert "directory" in refused(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert "empty" in refused(tmp_path / "empty.jpg")


def test_truncated_jpeg(tmp_path: Path) -> None:
    Image.fromarray(noise(256, 256)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert "truncated" in refused(tmp_path / "cut.jpg")
    from PIL import ImageFile

    assert not ImageFile.LOAD_TRUNCATED_IMAGES


def test_text_file_named_jpg(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("this is not a photo\n" * 20)
    assert "not an image" in refused(tmp_path / "notes.jpg")


def test_random_bytes(tmp_path: Path) -> None:
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(1).bytes(4096))
    refused(tmp_path / "noise.png")


def test_30000_square_header_is_refused_before_decoding(tmp_path: Path) -> None:
    path = png_with_header_size(tmp_path / "bomb.png", 30000, 30000)
    assert path.stat().st_size < 200
    assert "too large" in refused(path)


def test_just_above_our_limit_is_refused(tmp_path: Path) -> None:
    """Between our limit and Pillow's own bomb limit, our header check is what refuses."""
    width = 12000
    height = MAX_PIXELS // width + 1
    assert "too large" in refused(png_with_header_size(tmp_path / "big.png", width, height))
