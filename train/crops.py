"""Decode every photo of a dataset once into aligned 112×112 crops, stored as a memory-mapped uint8 array.

Training on 2 CPU cores cannot afford JPEG decoding and warping every step, so this runs once per dataset and the
training loop only slices a uint8 array. Alignment uses the MTCNN teacher's 5 landmarks from `landmarks.csv` and
the same `embedder.align.align_face` the product uses at run time, so the network sees identical geometry.

    python -m train.crops --dataset celeba --dataset fiw --dataset lfw --out cache/crops
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from embedder.align import align_face
from train.data_paths import data_root

LANDMARK_COLUMNS = [
    "left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y", "nose_x", "nose_y",
    "mouth_left_x", "mouth_left_y", "mouth_right_x", "mouth_right_y",
]


def read_rows(folder: Path) -> list[dict[str, str]]:
    """Manifest rows joined with their landmark rows (same order, checked)."""
    with open(folder / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    with open(folder / "landmarks.csv", newline="") as f:
        marks = list(csv.DictReader(f))
    if len(manifest) != len(marks):
        raise ValueError(f"{folder}: manifest and landmarks differ in length")
    rows = []
    for m, l in zip(manifest, marks):
        if m["path"] != l["path"]:
            raise ValueError(f"{folder}: row order differs at {m['path']}")
        rows.append({**l, **m})
    return rows


def build(dataset: str, out_dir: Path, size: int = 112) -> None:
    """Write `<out>/<dataset>.npy` (N×size×size×3 uint8), `<dataset>.json` (paths, identities, has_face) and,
    for the training sets, `<dataset>.dlib.npy` (the dlib teacher's vectors, same rows)."""
    folder = data_root() / dataset  # type: ignore[operator]
    rows = read_rows(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    array = np.lib.format.open_memmap(
        out_dir / f"{dataset}.npy", mode="w+", dtype=np.uint8, shape=(len(rows), size, size, 3)
    )
    has_face = []
    for i, row in enumerate(rows):
        if not row["left_eye_x"]:
            has_face.append(False)
            continue
        points = np.array([float(row[c]) for c in LANDMARK_COLUMNS]).reshape(5, 2)
        with Image.open(folder / row["path"]) as img:
            crop = align_face(img.convert("RGB"), points, size)
        array[i] = np.asarray(crop)
        has_face.append(True)
        if i % 2000 == 0:
            print(f"{dataset}: {i}/{len(rows)}", flush=True)
    array.flush()
    meta = {
        "paths": [r["path"] for r in rows],
        "identities": [f"{dataset}:{r['identity']}" for r in rows],
        "has_face": has_face,
        "faces": [int(r["faces"] or 0) for r in rows],
    }
    (out_dir / f"{dataset}.json").write_text(json.dumps(meta))
    teacher = folder / "dlib128.npy"
    if teacher.exists():  # training sets carry dlib's vector of each photo: keep it beside the crops
        np.save(out_dir / f"{dataset}.dlib.npy", np.load(teacher).astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", action="append", required=True)
    parser.add_argument("--out", type=Path, default=Path("cache/crops"))
    args = parser.parse_args()
    for name in args.dataset:
        build(name, args.out)


if __name__ == "__main__":
    main()
