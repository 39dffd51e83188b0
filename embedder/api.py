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
    "face_embeddings", "product_precision", "model_card", "model_id",
]

_lock = threading.Lock()


def detect_faces(image: "Image.Image") -> list[Face]:
    """Every face in the photo (box, score, 5 landmarks), largest first."""
    from embedder.detector import detect_faces as _detect

    return _detect(image)


def face_locations(image: "Image.Image") -> list[tuple[float, float, float, float]]:
    """Face boxes (x1, y1, x2, y2), largest first."""
    return [face.box for face in detect_faces(image)]


def face_landmarks(image: "Image.Image") -> list[tuple[tuple[float, float], ...]]:
    """The 5 landmarks of every face, largest first."""
    return [face.landmarks for face in detect_faces(image)]


def aligned_faces(image: "Image.Image", faces: Sequence[Face]) -> list["Image.Image"]:
    """112×112 crops with the landmarks on the template: exactly what the embedder was trained on."""
    return [align_face(image, face.landmarks) for face in faces]


@lru_cache(maxsize=2)
def _embedder(precision: str) -> "torch.nn.Module":
    """The shipped network, loaded once per process and precision: "float32" (BatchNorm folded, channels-last) or
    "int8" (`embedder.int8`, rebuilt from the same weights and the activation ranges shipped beside them)."""
    import torch

    from embedder.fuse import fuse_batchnorms
    from embedder.model import from_saved

    with _lock:
        net = from_saved(torch.load(EMBEDDER_WEIGHTS, map_location="cpu", weights_only=True)).eval()
        if precision == "int8":
            from embedder import int8

            shipped = torch.load(int8.ranges_path(EMBEDDER_WEIGHTS), map_location="cpu", weights_only=True)
            if shipped.get("model_id") != weights_digest():
                raise RuntimeError("the int8 ranges were measured for other weights: "
                                   "run `python -m train.export --recalibrate`")
            return int8.quantize(net, shipped["ranges"])
        # channels-last (NHWC) weights: the CPU convolutions run faster on one thread in that layout (1.23x by
        # median, side by side: benchmarks/memory_layout.py), and the photos' pixels are NHWC already
        return fuse_batchnorms(net).to(memory_format=torch.channels_last)


def product_precision() -> str:
    """int8 wherever torch has the x86 int8 kernels (`embedder.int8`: the same weights, 1.5–1.7x faster per face on
    one thread, held-out accuracy within 0.3 points, benchmarks/int8.py); float32 elsewhere (e.g. ARM builds)."""
    from embedder import int8

    return "int8" if int8.supported() else "float32"


def face_embeddings(crops: Sequence["Image.Image"], precision: str | None = None) -> np.ndarray:
    """Aligned crops → (n, dim) float32 unit vectors.

    Each vector is the normalised sum of the crop's and its mirror image's embeddings (`embedder.model.embed`).
    `precision` defaults to `product_precision()`; benchmarks and tests set "float32" or "int8" to compare them.
    """
    import torch

    from embedder.model import embed

    model = _embedder(precision or product_precision())
    if not crops:
        return np.zeros((0, model.config.dim), dtype=np.float32)
    x = torch.from_numpy(np.stack([np.asarray(c.convert("RGB"), dtype=np.uint8) for c in crops]))
    # the permuted HWC array is a channels-last NCHW tensor: the layout the network's weights are in
    x = x.permute(0, 3, 1, 2).float().div_(255)
    with torch.inference_mode():
        return embed(model, x).numpy()


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
