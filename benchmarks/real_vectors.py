"""Real face vectors for the gallery benchmarks: LFW and celeba-wild photos embedded by the shipped model.

Each photo is aligned from its dataset's landmarks.csv (MTCNN landmarks, see ../shared/datasets/README.md) rather
than the product's detector: the gallery benchmark measures search, not the face finder, and this keeps the embedding
of ~15k photos to a few minutes on two cores. The vectors are cached (``cache/real_vectors.npz``, git-ignored, with
the id of the model that made them: another model's cache is embedded again) because embedding is by far the
slowest part of ``benchmarks.gallery_scale``.

    python -m benchmarks.real_vectors            # embed (or load the cache) and print how many
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

from train.data_paths import REPO_ROOT, data_root

CACHE = REPO_ROOT / "cache" / "real_vectors.npz"
FOLDERS = ("lfw", "celeba-wild")
_BATCH = 64


def _rows(folder: Path) -> list[tuple[str, str, tuple[tuple[float, float], ...]]]:
    """(path, identity, 5 landmarks) per photo with a face in landmarks.csv, in manifest order."""
    with open(folder / "manifest.csv", newline="") as fh:
        identity = {row["path"]: row["identity"] for row in csv.DictReader(fh)}
    out = []
    with open(folder / "landmarks.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if not row.get("left_eye_x"):
                continue
            keys = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
            marks = tuple((float(row[f"{k}_x"]), float(row[f"{k}_y"])) for k in keys)
            out.append((row["path"], f"{folder.name}/{identity[row['path']]}", marks))
    return out


def embed_all(root: Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n, dim) float32 unit rows, identities (n,) str) of every listed photo (or the first ``limit``)."""
    import embedder
    from embedder.align import align_face

    rows = [r for name in FOLDERS if (root / name / "landmarks.csv").exists() for r in
            [(root / name / p, who, m) for p, who, m in _rows(root / name)]]
    rows = rows[:limit] if limit else rows
    vectors, identities, start = [], [], time.time()
    for i in range(0, len(rows), _BATCH):
        batch = rows[i:i + _BATCH]
        crops = [align_face(embedder.load_photo(path), marks) for path, _, marks in batch]
        vectors.append(embedder.face_embeddings(crops))
        identities += [who for _, who, _ in batch]
        print(f"\rembedded {i + len(batch)}/{len(rows)} ({time.time() - start:.0f} s)", end="", file=sys.stderr)
    print(file=sys.stderr)
    return np.concatenate(vectors).astype(np.float32), np.array(identities)


def load(refresh: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """Cached real vectors of the shipped model, embedding them first if needed; None when the datasets are absent."""
    import embedder

    model = embedder.model_id()
    if CACHE.exists() and not refresh:
        data = np.load(CACHE)
        if "model_id" in data and str(data["model_id"]) == model:
            return data["vectors"], data["identities"]
    root = data_root()
    if root is None:
        return None
    vectors, identities = embed_all(root)
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.savez(CACHE, vectors=vectors, identities=identities, model_id=model)
    return vectors, identities


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refresh", action="store_true", help="embed again even if the cache exists")
    args = parser.parse_args(argv)
    loaded = load(args.refresh)
    if loaded is None:
        sys.exit("no datasets: set $ONESHOT_DATA or put them in ../shared/datasets")
    vectors, identities = loaded
    print(f"{len(vectors)} vectors of {len(set(identities.tolist()))} people, dim {vectors.shape[1]}")


if __name__ == "__main__":
    main()
