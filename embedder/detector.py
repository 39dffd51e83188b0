"""Face detection: photo → faces (box, score, 5 landmarks), main face first.

Two ported Open Model Zoo networks (Apache-2.0): the SSD detector (`embedder.detector_net`) reads the whole photo
resized to 300×300, and the landmark network (`embedder.landmark_net`) reads a crop around each box. Boxes above
`MIN_SCORE` survive; which one is *the* face of the photo is decided by `main_face_first`.

Nothing heavy happens at import: torch and the weights load on the first call, once per process.
"""
from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from embedder.photo import to_rgb
from embedder.types import Face

if TYPE_CHECKING:
    import torch
    from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DETECTOR_WEIGHTS = WEIGHTS_DIR / "detector.pt"
LANDMARK_WEIGHTS = WEIGHTS_DIR / "landmarks.pt"

# Detections below this probability are dropped. Chosen on celeba-wild's photos against MTCNN's labels: lower
# values found few more faces while detections that match no face grew fast (docs/EXPERIMENTS.md).
MIN_SCORE = 0.5
# A face counts as a main-face candidate when its score is within this much of the best one: of those, the largest
# wins. A bag or an arm that the detector half-believes in (score well below the real face's) can then never win on
# size alone, while of two confident faces the one nearer the camera (larger) is the photo's subject.
MAIN_FACE_SCORE_MARGIN = 0.15
MAX_FACES = 100

_lock = threading.Lock()


@lru_cache(maxsize=1)
def detector_net() -> "nn.Module":
    """The detector, loaded on first use, once per process."""
    from embedder.detector_net import FaceDetectorNet
    from embedder.layers import load_weights

    with _lock:
        return load_weights(FaceDetectorNet, DETECTOR_WEIGHTS)


@lru_cache(maxsize=1)
def landmark_net() -> "nn.Module":
    """The landmark network, loaded on first use, once per process."""
    from embedder.landmark_net import LandmarkNet
    from embedder.layers import load_weights

    with _lock:
        return load_weights(LandmarkNet, LANDMARK_WEIGHTS)


@lru_cache(maxsize=1)
def _priors() -> "torch.Tensor":
    from embedder.detector_net import prior_boxes

    return prior_boxes()


def detect_faces(image: Image.Image, min_score: float = MIN_SCORE) -> list[Face]:
    """Every face in the photo with its 5 landmarks, the main face first (`main_face_first`)."""
    rgb = to_rgb(image)
    boxes, scores = find_boxes(rgb, min_score)
    if len(boxes) == 0:
        return []
    marks = locate_landmarks(rgb, boxes)
    faces = [Face(box=tuple(float(v) for v in box), score=float(score),  # type: ignore[arg-type]
                  landmarks=tuple((float(x), float(y)) for x, y in points))
             for box, score, points in zip(boxes, scores, marks)]
    return main_face_first(faces)


def find_boxes(rgb: Image.Image, min_score: float = MIN_SCORE) -> tuple[np.ndarray, np.ndarray]:
    """Face boxes (n, 4) in pixels of the RGB photo, clipped to it, and their probabilities (n,), most probable
    first."""
    import torch

    from embedder.detector_net import INPUT_SIZE, decode_detections
    from embedder.layers import bgr_tensor

    w, h = rgb.size
    resized = rgb.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR)
    with torch.inference_mode():
        loc, prob = detector_net()(bgr_tensor(np.asarray(resized)[None]))
        boxes, scores = decode_detections(loc[0], prob[0], _priors(), min_score, MAX_FACES)
    boxes = boxes.numpy().astype(np.float64) * np.array([w, h, w, h])
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    usable = (boxes[:, 2] - boxes[:, 0] >= 2) & (boxes[:, 3] - boxes[:, 1] >= 2)
    return boxes[usable], scores.numpy().astype(np.float64)[usable]


def landmark_region(box: np.ndarray, photo_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The crop the landmark network reads: the box enlarged 1.15× about its centre, clipped to the photo."""
    from embedder.landmark_net import BOX_ENLARGE

    x1, y1, x2, y2 = box
    cx, cy, half_w, half_h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * BOX_ENLARGE / 2, (y2 - y1) * BOX_ENLARGE / 2
    w, h = photo_size
    left, top = max(0, int(round(cx - half_w))), max(0, int(round(cy - half_h)))
    right, bottom = min(w, int(round(cx + half_w))), min(h, int(round(cy + half_h)))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def locate_landmarks(rgb: Image.Image, boxes: np.ndarray) -> np.ndarray:
    """(n, 5, 2) landmarks in pixels of the RGB photo, one set per box (one batched pass of the landmark network)."""
    import torch

    from embedder.landmark_net import INPUT_SIZE
    from embedder.layers import bgr_tensor

    regions = [landmark_region(box, rgb.size) for box in boxes]
    crops = np.stack([np.asarray(rgb.crop(r).resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR))
                      for r in regions])
    with torch.inference_mode():
        fractions = landmark_net()(bgr_tensor(crops)).numpy().astype(np.float64)
    origin = np.array([[r[0], r[1]] for r in regions], dtype=np.float64)[:, None]
    size = np.array([[r[2] - r[0], r[3] - r[1]] for r in regions], dtype=np.float64)[:, None]
    return origin + fractions * size


def main_face_first(faces: list[Face]) -> list[Face]:
    """The photo's subject first, then the others largest first.

    The subject is the largest face among those scored within `MAIN_FACE_SCORE_MARGIN` of the most confident
    one: never simply the largest box, which a half-believed arm, chest or bag could be.
    """
    if not faces:
        return []
    best = max(face.score for face in faces)
    contenders = [face for face in faces if face.score >= best - MAIN_FACE_SCORE_MARGIN]
    main = max(contenders, key=lambda face: face.area)
    rest = sorted((face for face in faces if face is not main), key=lambda face: face.area, reverse=True)
    return [main, *rest]
