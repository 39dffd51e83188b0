"""More teacher signal from the same photos: dlib's vectors of *blended* training faces ("function matching").

The student overfits the ~22k training photos: it learns dlib's vector of each photo it saw, not dlib's function
(benchmarks/fit_gap.py). Beyer et al. ("Knowledge distillation: a good teacher is patient and consistent", 2022)
found that on small datasets the student needs the teacher's answers on many *new* inputs, and that blends of two
images (mixup) are the most useful ones. dlib is far too slow to run inside the training loop on 2 cores
(~76 ms per face), so this precomputes a bank of blends once:

    blend = λ · face_a + (1 − λ) · face_b       (a, b: training photos of two different people, λ in [0.2, 0.8])

blended both in dlib's own 150 px chip space (from which dlib's vector is taken) and, at training time, in our
112 px aligned-crop space with the same λ (both are similarity-aligned on the same landmarks, so the two blends show
the same face). Only training people are blended; the held-out people stay unseen.

    python -m train.teacher_mixes --out cache/mixes --count 27578       # ~38 min on one core (the shipped bank)

Several shards (`--shard 1`, …) can run side by side, one per core; each is deterministic given its number.

Needs the `bench` extra (dlib-bin, face_recognition_models): a training-time tool, never a product dependency.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from train.data_paths import data_root
from train.face_data import TRAIN_SETS, load_training_faces

CHIP_SIZE, CHIP_PADDING = 150, 0.25  # dlib's face_recognition chip geometry


def face_sources(cache: Path) -> list[tuple[Path, tuple[float, float, float, float]]]:
    """(photo path, MTCNN box) of every face row, in the order `load_training_faces` numbers them (`rows`)."""
    root = data_root()
    if root is None:
        raise SystemExit("no datasets: set ONESHOT_DATA or put them in ../shared/datasets")
    sources = []
    for name in TRAIN_SETS:
        meta = json.loads((cache / f"{name}.json").read_text())
        with open(root / name / "landmarks.csv", newline="") as f:
            marks = list(csv.DictReader(f))
        for path, keep, mark in zip(meta["paths"], meta["has_face"], marks):
            if keep:
                box = tuple(float(mark[k]) for k in ("x1", "y1", "x2", "y2"))
                sources.append((root / name / path, box))
    return sources


class DlibTeacher:
    """dlib's 5-point alignment and 128-d encoder, on chips we can blend before encoding."""

    def __init__(self) -> None:
        import dlib

        from benchmarks.dlib_baseline import dlib_model_dir

        self.dlib = dlib
        models = dlib_model_dir()
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.encoder = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def chip(self, photo: Path, box: tuple[float, float, float, float]) -> np.ndarray:
        """dlib's aligned 150×150 chip of the face in `box` (the MTCNN box; dlib's 5 points are found inside it)."""
        with Image.open(photo) as img:
            rgb = np.asarray(img.convert("RGB"))
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        shape = self.shape(rgb, self.dlib.rectangle(x1, y1, x2, y2))
        return np.asarray(self.dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING))

    def encode(self, chips: list[np.ndarray]) -> np.ndarray:
        return np.array(self.encoder.compute_face_descriptor(chips), dtype=np.float32)


def save(path: Path, a: list[int], b: list[int], lam: list[float], vectors: list[np.ndarray]) -> None:
    """Atomically (re)write this shard's bank, so a killed job leaves every finished blend usable."""
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, a=np.array(a, np.int64), b=np.array(b, np.int64), lam=np.array(lam, np.float32),
             teacher=np.concatenate(vectors) if vectors else np.zeros((0, 128), np.float32))
    tmp.replace(path)


def load_bank(folder: Path) -> dict[str, np.ndarray]:
    """All shards of a bank, concatenated: a, b (face rows), lam, teacher (raw dlib vectors)."""
    shards = [np.load(p) for p in sorted(folder.glob("mixes-*.npz")) if ".tmp" not in p.name]
    if not shards:
        raise SystemExit(f"no blends in {folder}: run python -m train.teacher_mixes first")
    return {k: np.concatenate([s[k] for s in shards]) for k in ("a", "b", "lam", "teacher")}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=Path("cache/crops"))
    p.add_argument("--out", type=Path, default=Path("cache/mixes"))
    p.add_argument("--shard", type=int, default=0, help="run several with different shards (one per core)")
    p.add_argument("--count", type=int, default=27578, help="stop after this many blends (~12 per second)")
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args(argv)

    train_set, _, _ = load_training_faces(args.cache, seed=0)
    sources = face_sources(args.cache)
    teacher = DlibTeacher()
    rng = np.random.default_rng(1000 + args.shard)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"mixes-{args.shard}.npz"
    a_rows: list[int] = []
    b_rows: list[int] = []
    lams: list[float] = []
    vectors: list[np.ndarray] = []
    chips: dict[int, np.ndarray] = {}
    start = last_save = time.time()
    while len(lams) < args.count:
        i = rng.integers(0, len(train_set.rows), size=args.batch)
        j = rng.integers(0, len(train_set.rows), size=args.batch)
        keep = train_set.labels[i] != train_set.labels[j]
        pairs = list(zip(train_set.rows[i[keep]].tolist(), train_set.rows[j[keep]].tolist()))
        lam = rng.uniform(0.2, 0.8, size=len(pairs))
        blends = []
        for (a, b), w in zip(pairs, lam):
            for row in (a, b):
                if row not in chips:
                    chips[row] = teacher.chip(*sources[row])
            blends.append((w * chips[a] + (1 - w) * chips[b] + 0.5).astype(np.uint8))
        vectors.append(teacher.encode(blends))
        a_rows += [a for a, _ in pairs]
        b_rows += [b for _, b in pairs]
        lams += lam.tolist()
        # Rewriting the whole bank is ~50 MB at 100k blends: once a minute keeps that I/O off the dlib core.
        if time.time() - last_save > 60 or len(lams) >= args.count:
            save(out, a_rows, b_rows, lams, vectors)
            last_save = time.time()
            print(f"{len(lams)} blends, {len(lams) / (last_save - start):.1f}/s", flush=True)


if __name__ == "__main__":
    main()
