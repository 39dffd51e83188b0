"""The flat public API: photo → faces → aligned crops → L2-normalised vectors.

In the spirit of face_recognition's `api.py`, but nothing heavy happens at import: torch and the weights load on
the first call that needs them, once per process, so `oneshot --help` stays fast.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedder.align import align_face
from embedder.photo import PhotoError, load_photo
from embedder.types import Face

if TYPE_CHECKING:
    from PIL import Image

    from embedder.model import EmbeddingNet

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
EMBEDDER_WEIGHTS = WEIGHTS_DIR / "embedder.pt"
EMBEDDER_CARD = WEIGHTS_DIR / "embedder.json"

__all__ = [
    "Face", "PhotoError", "load_photo", "detect_faces", "face_locations", "face_landmarks", "aligned_faces",
    "face_embeddings", "native_bf16", "use_bf16", "model_card", "model_id",
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


@lru_cache(maxsize=1)
def _embedder() -> "EmbeddingNet":
    import torch

    from embedder.fuse import fuse_batchnorms
    from embedder.model import from_saved

    with _lock:
        saved = torch.load(EMBEDDER_WEIGHTS, map_location="cpu", weights_only=True)
        # channels-last (NHWC) weights: the CPU convolutions run faster on one thread in that layout (1.23x by
        # median, side by side: benchmarks/memory_layout.py), and the photos' pixels are NHWC already
        return fuse_batchnorms(from_saved(saved).eval()).to(memory_format=torch.channels_last)


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16). Without it bf16 would be emulated and slow, so
    float32 it is; with it, `use_bf16` still measures which is faster."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the probe: assume no native bf16
        return False


def bf16_is_faster(run: Callable[[bool], object], repeats: int = 5, margin: float = 0.85) -> bool:
    """Whether `run(True)` (bf16) is clearly faster than `run(False)` (float32): best of `repeats` interleaved
    timings each, after one warm-up call of each (oneDNN builds its kernels on first use), bf16 winning only when
    it takes under `margin` of float32's time. Where bf16 pays it pays by far more (1.45x on the AMD VM), and on a
    busy CPU a few timings of one crop are noisy: with a bare `<` and three timings, a second benchmark beside the LFW
    benchmark made it pick bf16 on the Intel VM, at 47.3 ms per face against 33.3 in float32 (same run,
    benchmarks/results/lfw_bf16_under_load.json)."""
    best = {True: float("inf"), False: float("inf")}
    for bf16 in (True, False):
        run(bf16)
    for _ in range(repeats):
        for bf16 in (True, False):
            start = time.perf_counter()
            run(bf16)
            best[bf16] = min(best[bf16], time.perf_counter() - start)
    return best[True] < margin * best[False]


@lru_cache(maxsize=1)
def use_bf16() -> bool:
    """Whether the product embeds under bf16 autocast on this machine: only where the CPU has native bf16 *and*
    bf16 measured faster than float32 here, timed once per process on one crop. The flag alone does not
    decide: the same network with its mirror ran 1.45× faster under bf16 on an AMD EPYC with AVX512-BF16, but 1.6×
    slower (27.2 vs 16.7 ms per face, benchmarks/results/lfw_bf16_by_cpu_flag.json) on an Intel Xeon with the same
    flag and no AMX. The vectors hardly differ
    (within 1e-4 cosine; held-out accuracy the same, TAR at FAR 0.1 % within 0.2 points: benchmarks/fit_gap.py),
    so only speed is at stake."""
    if not native_bf16():
        return False
    import torch

    from embedder.model import embed

    model, crop = _embedder(), torch.rand(1, 3, 112, 112)
    with torch.inference_mode():
        return bf16_is_faster(lambda bf16: embed(model, crop, bf16=bf16))


def face_embeddings(crops: Sequence["Image.Image"], bf16: bool | None = None) -> np.ndarray:
    """Aligned crops → (n, dim) float32 unit vectors.

    Each vector is the normalised sum of the crop's and its mirror image's embeddings (`embedder.model.embed`).
    `bf16` defaults to `use_bf16()` (benchmarks set it to compare both).
    """
    import torch

    from embedder.model import embed

    model = _embedder()
    if not crops:
        return np.zeros((0, model.config.dim), dtype=np.float32)
    x = torch.from_numpy(np.stack([np.asarray(c.convert("RGB"), dtype=np.uint8) for c in crops]))
    # the permuted HWC array is a channels-last NCHW tensor: the layout the network's weights are in
    x = x.permute(0, 3, 1, 2).float().div_(255)
    with torch.inference_mode():
        return embed(model, x, bf16=use_bf16() if bf16 is None else bf16).numpy()


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
