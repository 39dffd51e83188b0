"""LFW benchmark: our embedder and dlib's side by side, in one run.

    python benchmarks/lfw.py                     # both models, writes benchmarks/results/lfw.json
    python benchmarks/lfw.py --no-dlib           # ours only

LFW is the test set: nothing here feeds back into training or calibration (those use held-out CelebA/FIW
people). Reported, for each model:
- 10-fold accuracy on the official View 2 `pairs.txt` (threshold chosen on 9 folds, applied to the 10th),
  mean ± standard deviation over the folds;
- TAR at FAR 0.1 % over all 6,000 pairs;
- one-shot open-set identification: the 1,680 people with ≥ 2 photos enrolled from their first photo and probed
  with the others, the 4,069 single-photo people as strangers: rank-1, and DIR at FPIR 1 %; for our model also
  the DIR/FPIR the product actually gets with its own calibrated threshold τ(N = 1,680);
- milliseconds per face on one CPU thread.

Our model sees LFW through the product's alignment (the 5 landmarks onto the 112×112 template) using the MTCNN
teacher's landmarks from `lfw/landmarks.csv` (`--landmarks teacher`, default) or our own detector
(`--landmarks detector`). dlib uses its own HOG detector and 5-point aligner (falling back to the teacher's box
when HOG finds nothing), as face_recognition does. dlib's vectors are cached in `cache/` because they take
~40 CPU-minutes (spread over all cores); `--fresh` recomputes them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import cpu_name  # noqa: E402
from train.data_paths import data_root  # noqa: E402


def read_pairs(lfw: Path, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pairs.txt → (pairs of row indices, same flags, fold of each pair)."""
    lines = (lfw / "protocol" / "pairs.txt").read_text().strip().splitlines()
    folds, per = (int(v) for v in lines[0].split())
    pairs, same, fold = [], [], []

    def row(name: str, i: str) -> int:
        return index[f"images/{name}/{name}_{int(i):04d}.jpg"]

    for k, line in enumerate(lines[1:]):
        parts = line.split("\t")
        if len(parts) == 3:
            pairs.append((row(parts[0], parts[1]), row(parts[0], parts[2])))
            same.append(True)
        else:
            pairs.append((row(parts[0], parts[1]), row(parts[2], parts[3])))
            same.append(False)
        fold.append(k // (2 * per))
    assert max(fold) + 1 == folds
    return np.array(pairs), np.array(same), np.array(fold)


def ten_fold_accuracy(dist: np.ndarray, same: np.ndarray, fold: np.ndarray) -> tuple[float, float, list[float]]:
    """Threshold picked on 9 folds (best accuracy), applied to the held-out fold."""
    accs = []
    for k in range(fold.max() + 1):
        train = fold != k
        candidates = np.unique(dist[train])
        mids = (candidates[:-1] + candidates[1:]) / 2
        correct = [(np.mean((dist[train] < t) == same[train])) for t in mids[:: max(1, len(mids) // 2000)]]
        best = mids[:: max(1, len(mids) // 2000)][int(np.argmax(correct))]
        accs.append(float(np.mean((dist[~train] < best) == same[~train])))
    return float(np.mean(accs)), float(np.std(accs)), accs


def tar_at_far(dist: np.ndarray, same: np.ndarray, far: float) -> float:
    neg = np.sort(dist[~same])
    k = int(np.floor(far * len(neg)))
    threshold = neg[k] if k < len(neg) else np.inf
    return float(np.mean(dist[same] < threshold))


def cross_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between every row of a and every row of b (any vector lengths)."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(sq, 0, None))


def open_set(emb: np.ndarray, identities: list[str], paths: list[str], fixed_threshold: float | None) -> dict:
    """One-shot open-set identification (gallery: first photo of each person with ≥ 2 photos)."""
    by_person: dict[str, list[int]] = {}
    for i, person in enumerate(identities):
        by_person.setdefault(person, []).append(i)
    gallery, probes, probe_label, strangers = [], [], [], []
    for person, rows in sorted(by_person.items()):
        rows = sorted(rows, key=lambda r: paths[r])
        if len(rows) >= 2:
            gallery.append(rows[0])
            probes += rows[1:]
            probe_label += [len(gallery) - 1] * (len(rows) - 1)
        else:
            strangers += rows
    g = emb[gallery]

    def nearest(rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        d = cross_distances(emb[rows], g)
        best = d.argmin(axis=1)
        return best, d[np.arange(len(rows)), best]

    pbest, pdist = nearest(probes)
    _, sdist = nearest(strangers)
    correct = pbest == np.array(probe_label)
    tau = np.sort(sdist)[int(0.01 * len(sdist))]  # FPIR 1 %: 1 % of strangers fall below
    out = {
        "gallery": len(gallery), "probes": len(probes), "strangers": len(strangers),
        "rank1": float(correct.mean()), "dir@fpir1%": float(np.mean(correct & (pdist < tau))),
        "threshold@fpir1%": float(tau),
    }
    if fixed_threshold is not None:
        out["product_threshold"] = fixed_threshold
        out["product_dir"] = float(np.mean(correct & (pdist < fixed_threshold)))
        out["product_fpir"] = float(np.mean(sdist < fixed_threshold))
    return out


def report(name: str, emb: np.ndarray, pairs, same, fold, identities, paths, ms: float, fixed: float | None) -> dict:
    """All LFW metrics for one model, on plain Euclidean distances of its vectors (the model's own metric)."""
    dist = np.linalg.norm(emb[pairs[:, 0]] - emb[pairs[:, 1]], axis=1)
    mean, std, accs = ten_fold_accuracy(dist, same, fold)
    return {
        "model": name, "lfw_accuracy": mean, "lfw_std": std, "folds": accs,
        "tar@far0.1%": tar_at_far(dist, same, 1e-3), "open_set": open_set(emb, identities, paths, fixed),
        "ms_per_face_1thread": ms,
    }


def our_embeddings(lfw: Path, rows: list[dict], landmarks: str) -> tuple[np.ndarray, dict[str, float]]:
    """Our vectors for every LFW photo as the product computes them (`embedder.api.product_precision`: int8 where
    torch has the x86 kernels), and ms per face (embedding with flip, one thread) that way and in float32."""
    import torch
    from PIL import Image

    from embedder import api
    from embedder.align import align_face
    from train.crops import LANDMARK_COLUMNS

    crops = []
    for row in rows:
        with Image.open(lfw / row["path"]) as img:
            img = img.convert("RGB")
            if landmarks == "detector":
                faces = api.detect_faces(img)
                if faces:
                    w, h = img.size
                    face = min(faces, key=lambda f: ((f.box[0] + f.box[2]) / 2 - w / 2) ** 2
                               + ((f.box[1] + f.box[3]) / 2 - h / 2) ** 2)
                    crops.append(api.aligned_faces(img, [face])[0])
                    continue
            points = np.array([float(row[c]) for c in LANDMARK_COLUMNS]).reshape(5, 2)
            crops.append(align_face(img, points))
    torch.set_num_threads(2)
    emb = np.concatenate([api.face_embeddings(crops[i:i + 256]) for i in range(0, len(crops), 256)])
    torch.set_num_threads(1)
    ms = {}
    for name, precision in (("product", None), ("fp32", "float32")):
        api.face_embeddings(crops[:4], precision=precision)
        t = time.perf_counter()
        for c in crops[:200]:
            api.face_embeddings([c], precision=precision)
        ms[name] = (time.perf_counter() - t) / 200 * 1000
    return emb, ms


_worker_encoder = None


def _dlib_vector(lfw: Path, row: dict) -> np.ndarray:
    """One LFW photo through dlib, in a worker process that keeps its own encoder (dlib objects do not pickle)."""
    global _worker_encoder
    from benchmarks.dlib_baseline import DlibEncoder

    if _worker_encoder is None:
        _worker_encoder = DlibEncoder()
    return _worker_encoder.encode(*_dlib_input(_worker_encoder, lfw, row))


def _dlib_input(enc, lfw: Path, row: dict) -> tuple[np.ndarray, object]:
    """A photo's pixels and the face dlib will describe (its own detection, else the teacher's box)."""
    from PIL import Image

    rgb = np.asarray(Image.open(lfw / row["path"]).convert("RGB"))
    box = tuple(float(row[c]) for c in ("x1", "y1", "x2", "y2"))
    return rgb, enc.locate(rgb, box)


def _dlib_vectors_in_parallel(lfw: Path, rows: list[dict]) -> np.ndarray:
    """Every LFW photo through dlib on all cores: ~40 CPU-minutes, so this is the benchmark's long step.
    The vectors do not depend on how many processes made them; only the timing below is single-threaded."""
    import os
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return np.stack(list(pool.map(partial(_dlib_vector, lfw), rows, chunksize=64)))


def dlib_embeddings(lfw: Path, rows: list[dict], fresh: bool) -> tuple[np.ndarray, float]:
    """dlib's vectors for every LFW photo (cached), and ms per face for the descriptor on one thread."""
    from benchmarks.dlib_baseline import DlibEncoder

    cache = ROOT / "cache" / "dlib_lfw.npy"
    enc = DlibEncoder()
    if cache.exists() and not fresh:
        emb = np.load(cache)
    else:
        emb = _dlib_vectors_in_parallel(lfw, rows)
        cache.parent.mkdir(exist_ok=True)
        np.save(cache, emb)
    samples = [_dlib_input(enc, lfw, row) for row in rows[:100]]
    t = time.perf_counter()
    for rgb, rect in samples:
        enc.encode(rgb, rect)
    ms = (time.perf_counter() - t) / len(samples) * 1000
    return emb, ms


def main() -> None:
    import csv

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-dlib", action="store_true")
    parser.add_argument("--fresh", action="store_true", help="recompute dlib's cached LFW vectors")
    parser.add_argument("--landmarks", choices=["teacher", "detector"], default="teacher")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lfw.json")
    args = parser.parse_args()
    root = data_root()
    if root is None:
        sys.exit("no datasets found: set $ONESHOT_DATA or put them in ../shared/datasets")
    lfw = root / "lfw"
    with open(lfw / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    with open(lfw / "landmarks.csv", newline="") as f:
        rows = [{**l, **m} for m, l in zip(manifest, csv.DictReader(f))]
    paths = [r["path"] for r in rows]
    identities = [r["identity"] for r in rows]
    pairs, same, fold = read_pairs(lfw, {p: i for i, p in enumerate(paths)})

    from embedder import api
    from enroll.decision import threshold_for_gallery

    card = api.model_card()
    results = {"machine": f"{cpu_name()}, {__import__('os').cpu_count()} cores",
               "landmarks": args.landmarks, "models": []}
    emb, ms = our_embeddings(lfw, rows, args.landmarks)
    fixed = threshold_for_gallery(card, 1680)
    ours = report(f"oneshot {card['model_id']}", emb, pairs, same, fold, identities, paths, ms["product"], fixed)
    results["models"].append({**ours, "precision": api.product_precision(), "ms_per_face_1thread_fp32": ms["fp32"]})
    if not args.no_dlib:
        demb, dms = dlib_embeddings(lfw, rows, args.fresh)
        results["models"].append(report("dlib (face_recognition)", demb, pairs, same, fold, identities, paths, dms, None))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print_table(results)


def print_table(results: dict) -> None:
    print(f"machine: {results['machine']}; our alignment from {results['landmarks']} landmarks")
    print("| model | LFW 10-fold | TAR @ FAR 0.1 % | rank-1 | DIR @ FPIR 1 % | ms/face (1 thread) |")
    print("|---|---|---|---|---|---|")
    for m in results["models"]:
        o = m["open_set"]
        print(f"| {m['model']} | {100 * m['lfw_accuracy']:.2f} % ± {100 * m['lfw_std']:.2f} | "
              f"{100 * m['tar@far0.1%']:.1f} % | {100 * o['rank1']:.1f} % | {100 * o['dir@fpir1%']:.1f} % | "
              f"{m['ms_per_face_1thread']:.1f} |")
    if "ms_per_face_1thread_fp32" in results["models"][0]:
        m = results["models"][0]
        print(f"ours: {m.get('precision', 'bf16' if m.get('bf16') else 'float32')}; "
              f"in float32 {m['ms_per_face_1thread_fp32']:.1f} ms/face")
    ours = results["models"][0]["open_set"]
    if "product_threshold" in ours:
        print(f"product threshold tau(N=1680) = {ours['product_threshold']:.3f}: DIR {100 * ours['product_dir']:.1f} %, "
              f"FPIR {100 * ours['product_fpir']:.2f} %")


if __name__ == "__main__":
    main()
