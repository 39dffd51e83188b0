"""The FAISS cache of one model's face vectors: build, save atomically, and load only if it is still valid.

The cache is two files beside the database: ``index.faiss`` (an ``IndexIDMap`` over ``IndexFlatIP``; ids are face
row ids) and ``index.json`` (format, generation, model_id, dim, count, sha256 of index.faiss). ``load`` returns
None, rather than raising, whenever the pair does not describe exactly the database state the caller expects
(missing, stale generation, other model or dim, wrong count, unreadable json, checksum mismatch, FAISS parse error);
the caller then rebuilds from SQLite. The checksum means damaged bytes are never handed to FAISS's parser.

``faiss`` is imported inside functions: it is slow to import and most commands (list, remove) need it late or never.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

INDEX_FILE = "index.faiss"
META_FILE = "index.json"
FORMAT = 1


@dataclass(frozen=True)
class CacheKey:
    """What a cache must match to be usable: the database generation and this gallery's model, dim and count."""

    generation: int
    model_id: str
    dim: int
    count: int


def _faiss() -> Any:
    import faiss  # noqa: PLC0415 - deliberately lazy, see module docstring

    return faiss


def build(dim: int, ids: np.ndarray, vectors: np.ndarray) -> Any:
    """A fresh inner-product index holding ``vectors`` (unit rows) under ``ids`` (face row ids)."""
    faiss = _faiss()
    index = faiss.IndexIDMap(faiss.IndexFlatIP(dim))
    add(index, ids, vectors)
    return index


def add(index: Any, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Add rows to an index in place (used for the cheap incremental update after one enrolment)."""
    if len(ids):
        index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64)
        )


def save(home: Path, index: Any, key: CacheKey) -> None:
    """Write index.faiss then index.json, each atomically; raises OSError on failure.

    A crash between the two leaves a json whose checksum does not match the faiss file, which ``load`` rejects.
    """
    blob = _faiss().serialize_index(index)  # uint8 numpy array
    meta = {"format": FORMAT, **asdict(key), "sha256": hashlib.sha256(blob).hexdigest()}
    atomic_write(home / INDEX_FILE, memoryview(blob))
    atomic_write(home / META_FILE, (json.dumps(meta, sort_keys=True) + "\n").encode())


def load(home: Path, key: CacheKey) -> Any | None:
    """The cached index if it matches ``key`` exactly and is intact, else None (never raises for a bad cache)."""
    try:
        meta = json.loads((home / META_FILE).read_bytes())
        blob = (home / INDEX_FILE).read_bytes()
    except (OSError, ValueError):
        return None
    expected = {"format": FORMAT, **asdict(key)}
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in expected.items()):
        return None
    if meta.get("sha256") != hashlib.sha256(blob).hexdigest():
        return None
    faiss = _faiss()
    try:
        index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
    except (RuntimeError, ValueError, TypeError):
        return None
    if (
        not isinstance(index, faiss.IndexIDMap)
        or index.metric_type != faiss.METRIC_INNER_PRODUCT
        or index.d != key.dim
        or index.ntotal != key.count
    ):
        return None
    return index


def discard(home: Path) -> None:
    """Delete both cache files (used when a rewrite failed but stale vectors must not stay on disk)."""
    for name in (INDEX_FILE, META_FILE):
        try:
            (home / name).unlink()
        except FileNotFoundError:
            pass


def atomic_write(path: Path, data: bytes | memoryview) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a partial one.

    Temp file in the same directory (so os.replace is a rename on one filesystem), fsync before the rename, then
    fsync the directory so the rename itself survives a power cut. The temp file is removed on any failure.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Best-effort directory fsync (not supported on every platform/filesystem)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
