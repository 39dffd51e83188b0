"""Enrolment refuses faces that make poor references: tiny, turned away, blurred (synthetic: never skips), and
accepts ordinary real photos (celeba-wild; skips without the datasets)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from embedder.quality import enrolment_problem, nose_position, sharpness
from embedder.types import Face
from tests.data import wild_rows


def face_at(x: float, y: float, eyes: float, nose_shift: float = 0.0) -> Face:
    """A frontal face whose eyes are `eyes` px apart, nose moved sideways by `nose_shift` × that distance."""
    marks = ((x, y), (x + eyes, y), (x + eyes * (0.5 + nose_shift), y + 0.6 * eyes),
             (x + 0.1 * eyes, y + 1.1 * eyes), (x + 0.9 * eyes, y + 1.1 * eyes))
    return Face(box=(x - eyes / 2, y - eyes, x + 1.5 * eyes, y + 2 * eyes), score=0.99, landmarks=marks)


def checkerboard(size: int = 400, cell: int = 4) -> Image.Image:
    pattern = (np.indices((size, size)) // cell).sum(0) % 2 * 255
    return Image.fromarray(np.repeat(pattern[..., None], 3, 2).astype(np.uint8))


def test_nose_position_is_half_for_a_frontal_face_and_moves_when_turned() -> None:
    assert nose_position(face_at(100, 100, 60)) == pytest.approx(0.5)
    assert nose_position(face_at(100, 100, 60, nose_shift=0.45)) == pytest.approx(0.95)


def test_refuses_small_turned_and_blurred_faces_and_accepts_a_sharp_frontal_one() -> None:
    sharp = checkerboard()
    assert enrolment_problem(sharp, face_at(150, 150, 60)) is None
    assert "too small" in enrolment_problem(sharp, face_at(150, 150, 8))
    assert "turned" in enrolment_problem(sharp, face_at(150, 150, 60, nose_shift=0.75))      # a profile
    assert enrolment_problem(sharp, face_at(150, 150, 60, nose_shift=0.45)) is None          # three-quarter view
    assert "blurred" in enrolment_problem(Image.new("RGB", (400, 400), (120, 110, 100)), face_at(150, 150, 60))
    assert sharpness(sharp) > sharpness(sharp.filter(ImageFilter.GaussianBlur(3)))


@pytest.mark.slow
def test_ordinary_real_photos_pass_and_heavily_blurred_ones_do_not() -> None:
    import embedder

    accepted = refused_blurred = 0
    rows = wild_rows(30)
    for row in rows:
        image = embedder.load_photo(row["file"])
        faces = embedder.detect_faces(image)
        if not faces:
            continue
        accepted += enrolment_problem(image, faces[0]) is None
        eyes = np.hypot(*np.subtract(faces[0].landmarks[1], faces[0].landmarks[0]))
        blurred = image.filter(ImageFilter.GaussianBlur(float(eyes) / 10))
        refused_blurred += enrolment_problem(blurred, faces[0]) is not None
    assert accepted >= 0.9 * len(rows)
    assert refused_blurred >= 0.9 * len(rows)
