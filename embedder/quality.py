"""Is a face good enough to enrol? One reference photo is all the product keeps of a person, so a face that is
tiny, blurred or turned away would make every later identification of them unreliable: refuse it, saying why.

Identification never refuses on quality (the door should still try); only enrolment does. The limits were chosen on
the first photos of celeba-wild's validation people (real photos, ≤ 320 px, faces 25–180 px across), each limit
each refusing about 1 % of them or fewer, and on the same photos blurred on purpose (`tests/test_quality.py`):
- size: fewer than `MIN_EYE_DISTANCE` pixels between the eyes leaves too little detail for the 128×128 crop;
- blur: the variance of the Laplacian of the aligned grey crop (edge energy) below `MIN_SHARPNESS` (sharp
  photos: median ~270, 1st percentile ~28; a Gaussian blur of σ ≈ 2.4 crop pixels: median ~8.5);
- pose: the nose's position along the line between the eyes (0 = over the image-left eye, 1 = over the other;
  frontal ≈ 0.5) outside `NOSE_POSITION_RANGE` means the nose is beyond an eye: a profile. Three-quarter views
  (positions up to ~0.05 or ~0.95 and even 1.0 with this landmark network) are fine reference photos and pass.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from embedder.align import align_face
from embedder.types import Face

MIN_EYE_DISTANCE = 12.0
MIN_SHARPNESS = 12.0
NOSE_POSITION_RANGE = (-0.15, 1.15)


def eye_distance(face: Face) -> float:
    (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
    return float(np.hypot(rx - lx, ry - ly))


def nose_position(face: Face) -> float:
    """Where the nose projects onto the eye line, as a fraction of the way from the image-left eye to the other."""
    left, right, nose = (np.array(p, dtype=np.float64) for p in face.landmarks[:3])
    eyes = right - left
    return float(np.dot(nose - left, eyes) / max(np.dot(eyes, eyes), 1e-9))


def sharpness(crop: Image.Image) -> float:
    """Variance of the 4-neighbour Laplacian of the grey crop: high for crisp edges, low for blur."""
    g = np.asarray(crop.convert("L"), dtype=np.float32)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(lap.var())


def enrolment_problem(image: Image.Image, face: Face) -> str | None:
    """Why this face should not be enrolled (one line), or None when it is fine."""
    eyes = eye_distance(face)
    if eyes < MIN_EYE_DISTANCE:
        return f"face too small to enrol ({eyes:.0f} px between the eyes, at least {MIN_EYE_DISTANCE:.0f} needed)"
    low, high = NOSE_POSITION_RANGE
    if not low <= nose_position(face) <= high:
        return "face turned too far away to enrol (use a photo looking at the camera)"
    if sharpness(align_face(image, face.landmarks)) < MIN_SHARPNESS:
        return "face too blurred to enrol (use a sharper photo)"
    return None
