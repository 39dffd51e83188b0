"""dlib's face encoder (face_recognition's model) as the benchmark baseline: photo → 128-d vector.

Benchmark-only: needs the `bench` extra (`pip install dlib-bin face_recognition_models`), never the product.
The model files are located on disk without importing `face_recognition_models` (its `__init__` needs
`pkg_resources`, which current setuptools no longer ships).

What face_recognition does, step by step: HOG detection with the photo upsampled once (`face_locations` default),
the 5-point shape predictor (`model="small"`), the ResNet descriptor of the 150×150 chip dlib aligns itself, and
faces "match" when their Euclidean distance is ≤ 0.6 (`compare_faces`' default tolerance).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

import numpy as np

# face_recognition's default tolerance: two faces are the same person when their distance is at most this.
STANDARD_THRESHOLD = 0.6
DIM = 128
Rule = Literal["largest", "centre"]


def dlib_model_dir() -> Path:
    """Where face_recognition_models keeps dlib's model files (shared with train.teacher_mixes)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("dlib baseline needs: pip install dlib-bin face_recognition_models")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class DlibEncoder:
    """HOG detection, 5-point shape, 128-d descriptor.

    Which detection is the photo's face: `rule="largest"` for whole photos (the same rule as enrolling with
    `--largest`), `rule="centre"` for LFW's centred crops (the labelled person is the one in the middle).
    """

    def __init__(self) -> None:
        import dlib

        self.dlib = dlib
        models = dlib_model_dir()
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.encoder = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def locate(self, rgb: np.ndarray, fallback: tuple[float, float, float, float] | None = None,
               rule: Rule = "centre") -> Any:
        """dlib's own detection chosen by `rule`; the fallback box when HOG finds none; None when neither."""
        h, w = rgb.shape[:2]
        found = list(self.detector(rgb, 1))
        if found:
            if rule == "largest":
                return max(found, key=lambda r: r.area())
            return min(found, key=lambda r: (r.center().x - w / 2) ** 2 + (r.center().y - h / 2) ** 2)
        if fallback is None:
            return None
        x1, y1, x2, y2 = (int(round(v)) for v in fallback)
        return self.dlib.rectangle(x1, y1, x2, y2)

    def encode(self, rgb: np.ndarray, rect: Any) -> np.ndarray:
        """The descriptor of the face in `rect` (dlib aligns the 150×150 chip itself; one jitter, as
        face_recognition's default)."""
        shape = self.shape(rgb, rect)
        return np.array(self.encoder.compute_face_descriptor(rgb, shape, 1), dtype=np.float32)

    def embed_photo(self, rgb: np.ndarray, rule: Rule = "largest") -> np.ndarray | None:
        """The photo's face as face_recognition sees it, or None when HOG finds no face (no fallback)."""
        rect = self.locate(rgb, None, rule)
        return None if rect is None else self.encode(rgb, rect)
