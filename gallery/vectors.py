"""Validation and byte encoding of face vectors, kept apart so the store and the index agree bit for bit.

Vectors are stored L2-normalised as little-endian float16: the shipped embedder's own weights are float16, and a
unit vector's components round to within 2^-11 of themselves, which moves a distance by ~1e-4 (the thresholds
are read to 1e-3) while halving the database (512 B rather than 1 KB per face at 256-d). Galleries written with
float32 blobs stay readable: the length tells the two apart. The inner product of two stored vectors is their
cosine and ``d = sqrt(2 - 2 ip)`` is the Euclidean distance between unit vectors used by the model card.
"""
from __future__ import annotations

import numpy as np

STORED = np.dtype("<f2")
_READABLE = (np.dtype("<f2"), np.dtype("<f4"))     # what earlier versions wrote stays readable
_MIN_NORM = 1e-6


def unit_rows(vectors: np.ndarray, dim: int, *, what: str = "vectors") -> np.ndarray:
    """Return ``vectors`` as a C-contiguous (n, dim) float32 array of unit rows.

    A 1-D array is one row. Raises ValueError on a non-float dtype, wrong shape, NaN/inf, or a (near) zero row,
    because a silently coerced bad vector would be enrolled or matched as garbage.
    """
    arr = np.asarray(vectors)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{what} must be a float array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}) or ({dim},), got {np.shape(vectors)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contain NaN or infinite values")
    wide = arr.astype(np.float64)
    norms = np.linalg.norm(wide, axis=1, keepdims=True)
    if arr.shape[0] and float(norms.min()) < _MIN_NORM:
        raise ValueError(f"{what} contain a zero-length row, which has no direction to compare")
    return np.ascontiguousarray(wide / norms if arr.shape[0] else wide, dtype=np.float32)


def to_blob(vector: np.ndarray) -> bytes:
    """Encode one unit row for the database BLOB (explicit little-endian so files move between machines)."""
    return np.ascontiguousarray(vector, dtype=STORED).tobytes()


def from_blob(blob: bytes, dim: int) -> np.ndarray | None:
    """Decode a BLOB (float16, or float32 from an earlier version) into a (dim,) float32 unit row, or None when its
    length fits neither."""
    for dtype in _READABLE:
        if len(blob) == dim * dtype.itemsize:
            row = np.frombuffer(blob, dtype=dtype).astype(np.float32)
            return row / max(float(np.linalg.norm(row)), 1e-12)
    return None


def ip_to_distance(ip: np.ndarray) -> np.ndarray:
    """Inner products of unit vectors → Euclidean distances: the embedder's one definition of distance."""
    from embedder.api import distance_from_cosine

    return distance_from_cosine(ip)
