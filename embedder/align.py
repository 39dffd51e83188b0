"""Alignment: map a face's 5 landmarks onto the embedder's 128×128 template with a similarity transform.

The embedder is trained and run on exactly these crops, so training (`train/`) and the application share this
module: any change here changes what the network sees.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

# Where the 5 landmarks land in the embedder's 128×128 input (eyes, nose, mouth corners; image-left first): the
# convention face-reidentification-retail-0095 was trained with (the Open Model Zoo demo's), i.e. the familiar
# five-point template of 96×112 crops stretched to the square (x · 128/96, y · 128/112).
TEMPLATE_96x112 = np.array(
    [
        [30.2946, 51.6963],
        [65.5318, 51.5014],
        [48.0252, 71.7366],
        [33.5493, 92.3655],
        [62.7299, 92.2041],
    ],
    dtype=np.float64,
)
TEMPLATE_128 = TEMPLATE_96x112 * np.array([128.0 / 96.0, 128.0 / 112.0])
CROP_SIZE = 128


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking `src` points onto `dst`.

    Solves for [a, b, tx, ty] in x' = a·x − b·y + tx, y' = b·x + a·y + ty, which is linear in the unknowns, so
    plain least squares gives the optimum (no reflection is possible by construction). Returns a 2×3 matrix.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError("similarity_transform needs two equally long lists of at least 2 points")
    n = len(src)
    a_mat = np.zeros((2 * n, 4))
    a_mat[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
    a_mat[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
    rhs = dst.reshape(-1)
    (a, b, tx, ty), *_ = np.linalg.lstsq(a_mat, rhs, rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def align_face(
    image: Image.Image, landmarks: Sequence[Sequence[float]], size: int = CROP_SIZE
) -> Image.Image:
    """Warp `image` so that `landmarks` (5 × (x, y)) land on the template; returns a size×size RGB crop."""
    template = TEMPLATE_128 * (size / CROP_SIZE)
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    matrix = similarity_transform(points, template)
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    # Shrinking a large face with a single bilinear warp aliases; pre-reduce by an integer factor first so the
    # warp itself never shrinks by more than 2×.
    factor = int(1.0 / (2.0 * scale)) if scale < 0.5 else 1
    if factor > 1:
        image = image.reduce(factor)
        matrix = matrix.copy()
        matrix[:, :2] *= factor
    # Pillow wants the inverse map (output pixel → input pixel).
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(full)[:2].reshape(-1)
    return image.convert("RGB").transform(
        (size, size), Image.Transform.AFFINE, data=tuple(inverse), resample=Image.Resampling.BILINEAR
    )
