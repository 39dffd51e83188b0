"""Photo → faces → aligned crops → L2-normalised vectors.

The public functions live in `embedder.api` and are re-exported here lazily, so `import embedder` is cheap.
"""
from __future__ import annotations

from typing import Any

_API = {
    "Face", "PhotoError", "load_photo", "detect_faces", "face_locations", "face_landmarks", "aligned_faces",
    "face_embeddings", "enrolment_problem", "model_card", "model_id", "distance",
}


def __getattr__(name: str) -> Any:
    if name in _API:
        from embedder import api

        return getattr(api, name)
    raise AttributeError(f"module 'embedder' has no attribute {name!r}")
