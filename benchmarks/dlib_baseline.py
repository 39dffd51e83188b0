"""dlib's face encoder (face_recognition's model) as the benchmark baseline: photo → 128-d vector.

Benchmark-only: needs the `bench` extra (`pip install dlib-bin face_recognition_models`), never the product.
The model files are located on disk without importing `face_recognition_models` (its `__init__` needs
`pkg_resources`, which current setuptools no longer ships).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np


def dlib_model_dir() -> Path:
    """Where face_recognition_models keeps dlib's model files (shared with train.teacher_mixes)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("dlib baseline needs: pip install dlib-bin face_recognition_models")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class DlibEncoder:
    """HOG detection (face nearest the centre, else the given fallback box), 5-point shape, 128-d descriptor."""

    def __init__(self) -> None:
        import dlib

        self.dlib = dlib
        models = dlib_model_dir()
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.encoder = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def locate(self, rgb: np.ndarray, fallback: tuple[float, float, float, float] | None):
        """dlib's own detection nearest the image centre; the fallback box when HOG finds none."""
        h, w = rgb.shape[:2]
        found = list(self.detector(rgb, 1))
        if found:
            return min(found, key=lambda r: (r.center().x - w / 2) ** 2 + (r.center().y - h / 2) ** 2)
        if fallback is None:
            return None
        x1, y1, x2, y2 = (int(round(v)) for v in fallback)
        return self.dlib.rectangle(x1, y1, x2, y2)

    def encode(self, rgb: np.ndarray, rect) -> np.ndarray:
        """The descriptor of the face in `rect` (dlib aligns the 150×150 chip itself)."""
        shape = self.shape(rgb, rect)
        return np.array(self.encoder.compute_face_descriptor(rgb, shape, 0), dtype=np.float32)
