"""In-memory photos (`embedder.photo.PhotoBytes`, the service's uploads) are read exactly like photo files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedder.photo import PhotoBytes, PhotoError, load_photo
from enroll.service import OneShot
from tests.test_cli import ALICE, FakeEngine, make_bad_inputs, photo


def test_same_pixels_and_same_errors_as_a_file(tmp_path: Path) -> None:
    path = tmp_path / "portrait.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(
        path, exif=_rotated_exif())
    from_file, from_memory = load_photo(path), load_photo(PhotoBytes("portrait.jpg", path.read_bytes()))
    assert from_memory.size == from_file.size == (40, 60)             # EXIF orientation applied to both
    assert np.array_equal(np.asarray(from_memory), np.asarray(from_file))
    for kind, bad in make_bad_inputs(tmp_path / "bad").items():
        if kind in ("missing", "directory"):
            continue                                                  # only files have those
        with pytest.raises(PhotoError) as on_disk:
            load_photo(bad)
        with pytest.raises(PhotoError) as in_memory:
            load_photo(PhotoBytes(bad.name, bad.read_bytes()))
        assert str(in_memory.value) == str(on_disk.value).replace(str(bad), bad.name), kind


def test_the_service_takes_in_memory_photos(tmp_path: Path) -> None:
    data = photo(tmp_path / "alice.png", (ALICE, 40, 30, 60)).read_bytes()
    with OneShot(tmp_path / "home", engine=FakeEngine()) as service:
        enrolled = service.enroll_one(PhotoBytes("upload.png", data), "alice")
        assert enrolled.status == "enrolled" and enrolled.photo == "upload.png"
        again = service.enroll_one(PhotoBytes("other-name.png", data), "alice")
        assert again.status == "duplicate"                            # the same bytes: the same sha256
        assert service.identify_one(PhotoBytes("door.png", data)).name == "alice"
        assert service.verify(PhotoBytes("a", data), PhotoBytes("b", data)).same is True
        assert service.enroll_one(PhotoBytes("x.png", b""), "bob").message == "x.png: file is empty (0 bytes)"


def _rotated_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6            # orientation: rotate 90° clockwise to display
    return exif
