"""Decode every photo of a dataset once into aligned 128×128 crops, stored as a memory-mapped uint8 array.

Training and calibration on 2 CPU cores cannot afford decoding, detecting and warping every step, so this runs once
per dataset. Each photo goes through the product's own face finder (`embedder.detect_faces`: main face, its 5
landmarks) and `embedder.align.align_face`, so the network is fine-tuned and calibrated on exactly the crops it
will see at run time. Where the finder sees no face, the MTCNN teacher's landmarks (`landmarks.csv`) stand in, and
the row says so (`source`).

    python -m train.crops --dataset celeba --dataset fiw --dataset celeba-wild --out cache/crops
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from embedder.align import CROP_SIZE, align_face
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


def identity_of(dataset: str, row: dict[str, str]) -> str:
    """A person's name across datasets: celeba-wild numbers its people as CelebA does, so they share `celeba:`."""
    prefix = "celeba" if dataset == "celeba-wild" else dataset
    return f"{prefix}:{row['identity']}"


def product_landmarks(image: Image.Image) -> np.ndarray | None:
    """The product's main face's landmarks, or None when it finds no face."""
    from embedder.detector import detect_faces

    faces = detect_faces(image)
    return np.array(faces[0].landmarks) if faces else None


def build(dataset: str, out_dir: Path, size: int = CROP_SIZE) -> None:
    """Write `<out>/<dataset>.npy` (N×size×size×3 uint8) and `<dataset>.json` (paths, identities, source of the
    landmarks: "product", "mtcnn" or "" for no face, and celeba-wild's `in_celeba_training`)."""
    import torch

    torch.set_num_threads(1)
    folder = data_root() / dataset  # type: ignore[operator]
    rows = read_rows(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    array = np.lib.format.open_memmap(
        out_dir / f"{dataset}.npy", mode="w+", dtype=np.uint8, shape=(len(rows), size, size, 3)
    )
    sources = []
    for i, row in enumerate(rows):
        with Image.open(folder / row["path"]) as img:
            image = img.convert("RGB")
        points, source = product_landmarks(image), "product"
        if points is None and row["left_eye_x"]:
            points, source = np.array([float(row[c]) for c in LANDMARK_COLUMNS]).reshape(5, 2), "mtcnn"
        if points is None:
            sources.append("")
            continue
        array[i] = np.asarray(align_face(image, points, size))
        sources.append(source)
        if i % 2000 == 0:
            print(f"{dataset}: {i}/{len(rows)}", flush=True)
    array.flush()
    meta = {
        "paths": [r["path"] for r in rows],
        "identities": [identity_of(dataset, r) for r in rows],
        "source": sources,
        "in_training_folder": [r.get("in_celeba_training", "yes") == "yes" for r in rows],
    }
    (out_dir / f"{dataset}.json").write_text(json.dumps(meta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", action="append", required=True)
    parser.add_argument("--out", type=Path, default=Path("cache/crops"))
    args = parser.parse_args()
    for name in args.dataset:
        build(name, args.out)


if __name__ == "__main__":
    main()
