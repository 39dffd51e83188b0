"""Cache of face crops for training the landmark network (`embedder.landmark_net`), built once.

    python -m train.landmark_crops --out cache/landmarks

For every CelebA + FIW photo with one teacher face (`train.scenes.load_face_records`, train and val splits; LFW is
the test set and is never cached), a square of `--margin` × the teacher box's long side around the box centre is
cut out — grey (128) where it leaves the photo, as at inference — and resized to `--size` px. The margin is
generous (2.2 by default) because training cuts its own crop out of this one around a *jittered, rotated* box:
the cache must hold everything such a crop can reach, so no sample shows an artificial border.

Writes, per split: `{split}.npy` (N, size, size, 3) uint8, memory-mappable, and `{split}_labels.npz` with `boxes`
(N, 4) and `landmarks` (N, 5, 2), float32, in cache-crop pixels, plus `paths`; and `meta.json`. Decoding a JPEG
costs more than a training step's worth of crops, which is why this is a one-off cache rather than a loader.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

GREY = (128, 128, 128)


def cut(image: Image.Image, box: np.ndarray, landmarks: np.ndarray, margin: float,
        size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One photo → (crop (size, size, 3) uint8, box (4,), landmarks (5, 2)), labels in crop pixels.

    The region is snapped to whole photo pixels (left/top rounded, side rounded) and the labels are mapped with
    the region actually used, so the labels stay exact."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(2, round(margin * max(box[2] - box[0], box[3] - box[1])))
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    canvas = Image.new("RGB", (side, side), GREY)
    canvas.paste(image.convert("RGB"), (-x0, -y0))
    crop = canvas.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    k = size / side
    origin = np.array([x0, y0], dtype=np.float64)
    new_box = (np.asarray(box, np.float64).reshape(2, 2) - origin) * k
    new_marks = (np.asarray(landmarks, np.float64).reshape(5, 2) - origin) * k
    return np.asarray(crop, dtype=np.uint8), new_box.reshape(4).astype(np.float32), new_marks.astype(np.float32)


def write_cache(items: Iterable[tuple[Image.Image, np.ndarray, np.ndarray, str]], count: int, out: Path,
                split: str, margin: float = 2.2, size: int = 128, progress_every: int = 2000) -> int:
    """Crops of (image, box, landmarks, name) items → `{split}.npy` + `{split}_labels.npz` in `out`; returns N.

    The image array is written straight into a memory-mapped .npy, so the cache never has to fit in RAM twice."""
    out.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(out / f"{split}.tmp.npy", mode="w+", dtype=np.uint8,
                                       shape=(count, size, size, 3))
    boxes = np.zeros((count, 4), np.float32)
    marks = np.zeros((count, 5, 2), np.float32)
    names: list[str] = []
    t0 = time.time()
    n = 0
    for image, box, lm, name in items:
        images[n], boxes[n], marks[n] = cut(image, box, lm, margin, size)
        names.append(name)
        n += 1
        if progress_every and n % progress_every == 0:
            print(f"{split}: {n}/{count} crops, {time.time() - t0:.0f} s", flush=True)
    images.flush()
    del images
    if n != count:
        raise RuntimeError(f"expected {count} items, got {n}")
    (out / f"{split}.tmp.npy").replace(out / f"{split}.npy")
    np.savez(out / f"{split}_labels.npz", boxes=boxes, landmarks=marks, paths=np.array(names))
    return n


def dataset_items(root: Path, split: str) -> tuple[list, Iterator[tuple[Image.Image, np.ndarray, np.ndarray, str]]]:
    """Teacher-labelled CelebA + FIW photos of one split (records, lazily decoded items)."""
    from train.scenes import load_face_records

    records = load_face_records(root, split)

    def items() -> Iterator[tuple[Image.Image, np.ndarray, np.ndarray, str]]:
        for rec in records:
            with Image.open(rec.path) as im:
                image = im.convert("RGB")
            yield image, np.array(rec.box), np.array(rec.landmarks).reshape(5, 2), str(rec.path.relative_to(root))

    return records, items()


def load_cache(folder: Path, split: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (N, S, S, 3) uint8, boxes (N, 4), landmarks (N, 5, 2)) of one split of a cache."""
    images = np.load(folder / f"{split}.npy", mmap_mode="r" if mmap else None)
    labels = np.load(folder / f"{split}_labels.npz")
    return images, labels["boxes"], labels["landmarks"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("cache/landmarks"))
    p.add_argument("--margin", type=float, default=2.2, help="cache crop side / teacher box long side")
    p.add_argument("--size", type=int, default=128, help="cache crop side in pixels")
    p.add_argument("--data", type=Path, default=None, help="datasets folder (default: train.data_paths)")
    a = p.parse_args(argv)
    from train.data_paths import data_root

    root = a.data or data_root()
    if root is None:
        raise SystemExit("no datasets: set ONESHOT_DATA or put them in ../shared/datasets")
    counts = {}
    for split in ("train", "val"):
        records, items = dataset_items(root, split)
        counts[split] = write_cache(items, len(records), a.out, split, a.margin, a.size)
        print(f"{split}: {counts[split]} crops → {a.out / (split + '.npy')}", flush=True)
    meta = {"margin": a.margin, "size": a.size, "counts": counts, "datasets": ["celeba", "fiw"],
            "split": "train.scenes.is_validation_group (10 % of groups held out)",
            "labels": "MTCNN teacher (landmarks.csv), in cache-crop pixels", "grey": GREY[0]}
    (a.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta), flush=True)


if __name__ == "__main__":
    main()
