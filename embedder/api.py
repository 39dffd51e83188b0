"""The flat public API: photo → faces → aligned crops → L2-normalised vectors.

In the spirit of face_recognition's `api.py`, but nothing heavy happens at import: torch and the weights load on
the first call that needs them, once per process, so `oneshot --help` stays fast.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedder.align import align_face
from embedder.photo import PhotoError, load_photo
from embedder.types import Face

if TYPE_CHECKING:
    import torch
    from PIL import Image

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
EMBEDDER_WEIGHTS = WEIGHTS_DIR / "embedder.pt"
EMBEDDER_CARD = WEIGHTS_DIR / "embedder.json"

__all__ = [
    "Face", "PhotoError", "load_photo", "detect_faces", "face_locations", "face_landmarks", "aligned_faces",
    "face_embeddings", "enrolment_problem", "model_card", "model_id", "distance",
]

_lock = threading.Lock()


def detect_faces(image: "Image.Image") -> list[Face]:
    """Every face in the photo (box, score, 5 landmarks), the photo's main face first (`detector.main_face_first`)."""
    from embedder.detector import detect_faces as _detect

    return _detect(image)


def face_locations(image: "Image.Image") -> list[tuple[float, float, float, float]]:
    """Face boxes (x1, y1, x2, y2), main face first."""
    return [face.box for face in detect_faces(image)]


def face_landmarks(image: "Image.Image") -> list[tuple[tuple[float, float], ...]]:
    """The 5 landmarks of every face, main face first."""
    return [face.landmarks for face in detect_faces(image)]


def aligned_faces(image: "Image.Image", faces: Sequence[Face]) -> list["Image.Image"]:
    """128×128 crops with the landmarks on the template: exactly what the embedder was trained on."""
    return [align_face(image, face.landmarks) for face in faces]


def enrolment_problem(image: "Image.Image", face: Face) -> str | None:
    """Why `face` is no good reference photo (too small, blurred, turned away), or None (`embedder.quality`)."""
    from embedder.quality import enrolment_problem as problem

    return problem(image, face)


@lru_cache(maxsize=1)
def embedder_net() -> "torch.nn.Module":
    """The shipped embedding network, loaded on first use, once per process."""
    from embedder.layers import load_weights
    from embedder.model import FaceEmbeddingNet

    with _lock:
        return load_weights(FaceEmbeddingNet, EMBEDDER_WEIGHTS)


def face_embeddings(crops: Sequence["Image.Image"]) -> np.ndarray:
    """Aligned crops → (n, dim) float32 unit vectors."""
    import torch

    from embedder.layers import bgr_tensor
    from embedder.model import embed

    if not crops:
        return np.zeros((0, embedder_net().dim), dtype=np.float32)
    pixels = np.stack([np.asarray(c.convert("RGB"), dtype=np.uint8) for c in crops])
    with torch.inference_mode():
        return embed(embedder_net(), bgr_tensor(pixels)).numpy()


@lru_cache(maxsize=1)
def model_card() -> dict[str, Any]:
    """The embedder's model card: data, loss, margin, calibrated threshold and ROC, metrics."""
    return json.loads(EMBEDDER_CARD.read_text())


def model_id() -> str:
    """Which model made a vector: vectors from different models are never compared."""
    return str(model_card()["model_id"])


def weights_digest(path: Path = EMBEDDER_WEIGHTS) -> str:
    """Short content hash of a weights file (the model id written into the card at export)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between unit vectors (0..2), row by row: the one distance the whole product compares by.

    Computed from the cosine (`distance_from_cosine`), so it also works on (n, d) × (d,).
    """
    return distance_from_cosine(np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64), axis=-1))


def distance_from_cosine(cosine: np.ndarray | float) -> np.ndarray:
    """Cosines (inner products) of unit vectors → their Euclidean distances, d = sqrt(2 − 2·cosine); clipped
    because rounding can push a cosine past 1. The gallery's search and the evaluation use this same function."""
    return np.sqrt(np.maximum(2.0 - 2.0 * np.asarray(cosine, dtype=np.float64), 0.0))
