"""LFW benchmark: oneshot, the openvino reference and dlib side by side, in one run.

    python -m benchmarks.lfw                        # all three; writes benchmarks/results/lfw.json
    python -m benchmarks.lfw --no-dlib              # without dlib (whose vectors take ~40 CPU-minutes uncached)
    python -m benchmarks.lfw --landmarks teacher    # oneshot aligned from lfw/landmarks.csv, not its own detector
    python -m benchmarks.lfw --every 20             # every 20th pair of each fold only (quick check; writes nothing)

LFW is the test set: nothing here feeds back into training or calibration. Reported for each system:
- LFW 10-fold: accuracy on the official View 2 `pairs.txt`, the threshold fitted on 9 folds and applied to the
  10th; mean ± standard deviation over the 10 folds;
- TAR @ FAR 0.1 %: the fraction of the 3,000 same-person pairs accepted at the threshold that accepts at most
  0.1 % (3) of the 3,000 different-person pairs;
- one-shot open set: the 1,680 people with ≥ 2 photos are enrolled from their first photo and probed with the
  others (7,484 probes); the 4,069 single-photo people are strangers. rank-1 = probes whose nearest enrolled
  person is right; named @ FPIR 1 % (DIR) = probes named correctly at the threshold that names 1 % of the
  strangers; for oneshot also what the product gets at its own threshold τ(N = 1,680) from its model card
  (`enroll.decision.threshold_for_gallery`): named correctly (DIR) and strangers named (FPIR);
- ms per face: alignment + embedding network for one face, one CPU thread (detection excluded; dlib: its
  5-point shape + chip + network).

How each system sees a photo (all on the 170×170 LFW crops):
- oneshot: the product's flat API — `detect_faces` → main face → `aligned_faces` → `face_embeddings`
  (`--landmarks detector`, default); where our detector finds no face, the landmarks from `lfw/landmarks.csv`
  stand in (counted in `face_found`). `--landmarks teacher` aligns from landmarks.csv for every photo, i.e. the
  very same crops as the reference, which isolates the embedder.
- openvino reference: Intel's face-reidentification-retail-0095 through openvino on crops aligned from
  landmarks.csv (how ../shared/teachers/README.md measured it: 99.50 %).
- dlib: face_recognition's pipeline, HOG detection nearest the centre, the landmarks.csv box when HOG finds
  none (counted in `face_found`). Its vectors are cached in cache/dlib_lfw.npy (`--fresh` recomputes them).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import RESULTS, cpu_name, write_result
from benchmarks.open_set import (
    named_at_fpir, nearest, one_shot_split, outcomes, pair_distances, rank1, tar_at_far, ten_fold_accuracy,
)
from train.data_paths import data_root

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = RESULTS / "lfw.json"
DLIB_CACHE = ROOT / "cache" / "dlib_lfw.npy"
DLIB_FOUND_CACHE = ROOT / "cache" / "dlib_lfw_found.npy"
LANDMARK_COLUMNS = ("left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y", "nose_x", "nose_y",
                    "mouth_left_x", "mouth_left_y", "mouth_right_x", "mouth_right_y")
BATCH = 64
TIMED_FACES = 100


@dataclass(frozen=True)
class LfwPhoto:
    """One LFW photo with the MTCNN teacher's box and 5 landmarks (landmarks.csv; present for every photo)."""

    path: Path
    identity: str
    box: tuple[float, float, float, float]
    landmarks: np.ndarray                # (5, 2) pixels


@dataclass
class Embedded:
    """One system's vectors for the photos in use, whether its own face finder found the face, and its speed."""

    vectors: np.ndarray
    found: np.ndarray | None             # None: no face finder of its own (aligned from landmarks.csv)
    ms_per_face: float = float("nan")


# -- data ------------------------------------------------------------------------------------------------------

def read_photos(lfw: Path) -> list[LfwPhoto]:
    """Every LFW photo in manifest order (sorted by path, so a person's first photo is _0001)."""
    with open(lfw / "manifest.csv", newline="") as fh:
        manifest = list(csv.DictReader(fh))
    with open(lfw / "landmarks.csv", newline="") as fh:
        marks = list(csv.DictReader(fh))
    photos = []
    for m, row in zip(manifest, marks, strict=True):
        assert m["path"] == row["path"], f"landmarks.csv out of step with manifest.csv at {m['path']}"
        points = np.array([float(row[c]) for c in LANDMARK_COLUMNS]).reshape(5, 2)
        box = tuple(float(row[c]) for c in ("x1", "y1", "x2", "y2"))
        photos.append(LfwPhoto(lfw / m["path"], m["identity"], box, points))  # type: ignore[arg-type]
    return photos


def read_pairs(lfw: Path, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pairs.txt → (pairs of photo indices, same-person flags, fold of each pair)."""
    lines = (lfw / "protocol" / "pairs.txt").read_text().strip().splitlines()
    folds, per_fold = (int(v) for v in lines[0].split())

    def photo(name: str, number: str) -> int:
        return index[f"images/{name}/{name}_{int(number):04d}.jpg"]

    pairs, same, fold = [], [], []
    for k, line in enumerate(lines[1:]):
        parts = line.split("\t")
        if len(parts) == 3:
            pairs.append((photo(parts[0], parts[1]), photo(parts[0], parts[2])))
        else:
            pairs.append((photo(parts[0], parts[1]), photo(parts[2], parts[3])))
        same.append(len(parts) == 3)
        fold.append(k // (2 * per_fold))
    assert max(fold) + 1 == folds and len(pairs) == 2 * folds * per_fold
    return np.array(pairs), np.array(same), np.array(fold)


def subset(photos: list[LfwPhoto], pairs: np.ndarray, same: np.ndarray, fold: np.ndarray,
           every: int) -> tuple[list[LfwPhoto], np.ndarray, np.ndarray, np.ndarray]:
    """Every `every`-th pair of each fold (both kinds stay balanced in every fold) and only the photos they use,
    with the pairs re-indexed: a quick check of the whole benchmark on a few hundred photos."""
    keep = np.arange(len(pairs)) % every == 0
    used = np.unique(pairs[keep])
    remap = {int(old): new for new, old in enumerate(used)}
    kept = np.vectorize(remap.__getitem__)(pairs[keep])
    return [photos[i] for i in used], kept, same[keep], fold[keep]


# -- systems ---------------------------------------------------------------------------------------------------

def oneshot_crop(image: Any, photo: LfwPhoto, landmarks: str) -> tuple[Any, bool]:
    """The aligned crop oneshot embeds, and whether its own detector found the face (False: aligned from
    landmarks.csv, always so with `landmarks="teacher"`)."""
    import embedder
    from embedder.align import align_face

    if landmarks == "detector":
        faces = embedder.detect_faces(image)
        if faces:
            return embedder.aligned_faces(image, faces[:1])[0], True
    return align_face(image, photo.landmarks), False


def embed_oneshot_and_reference(photos: Sequence[LfwPhoto], landmarks: str,
                                reference: Any | None) -> tuple[Embedded, Embedded | None]:
    """oneshot's and the reference's vectors for every photo, `BATCH` photos at a time (one batched network
    call per system and batch; the photos are read and aligned once for both)."""
    import embedder
    from embedder.align import align_face

    ours, theirs, found = [], [], []
    start = time.perf_counter()
    for first in range(0, len(photos), BATCH):
        chunk = photos[first:first + BATCH]
        images = [embedder.load_photo(p.path) for p in chunk]
        ours_crops = []
        for image, photo in zip(images, chunk):
            crop, hit = oneshot_crop(image, photo, landmarks)
            ours_crops.append(crop)
            found.append(hit)
        ours.append(embedder.face_embeddings(ours_crops))
        if reference is not None:
            teacher_crops = ours_crops if landmarks == "teacher" else [
                align_face(image, photo.landmarks) for image, photo in zip(images, chunk)]
            theirs.append(reference.embed_aligned_batch(teacher_crops))
        _progress(first + len(chunk), len(photos), start)
    found_flags = np.array(found) if landmarks == "detector" else None
    ref = Embedded(np.concatenate(theirs), None) if reference is not None else None
    return Embedded(np.concatenate(ours), found_flags), ref


def _progress(done: int, total: int, start: float) -> None:
    if done == total or done % (BATCH * 32) == 0:
        print(f"  {done}/{total} photos, {time.perf_counter() - start:.0f} s", file=sys.stderr)


def time_alignment_and_network(photos: Sequence[LfwPhoto], reference_threads_1: Any | None,
                               dlib_encoder: Any | None) -> dict[str, float]:
    """Median ms per face, one thread, the systems interleaved (benchmarks.timing) so background load hits all:
    align from the landmarks + embed one face (dlib: 5-point shape, its own chip, network)."""
    import torch

    import embedder
    from benchmarks.timing import interleaved_ms
    from embedder.align import align_face

    sample = list(photos[:TIMED_FACES])
    images = [embedder.load_photo(p.path) for p in sample]
    runs: dict[str, Callable[[int], object]] = {
        "oneshot": lambda i: embedder.face_embeddings([align_face(images[i], sample[i].landmarks)]),
    }
    if reference_threads_1 is not None:
        runs["openvino_reference"] = lambda i: reference_threads_1.embed_aligned(
            align_face(images[i], sample[i].landmarks))
    if dlib_encoder is not None:
        pixels = [np.asarray(im) for im in images]
        rects = [_box_rect(dlib_encoder, p.box) for p in sample]
        runs["dlib"] = lambda i: dlib_encoder.encode(pixels[i], rects[i])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        per_round = max(1, len(sample) // 4)
        timed = interleaved_ms(runs, rounds=len(sample) // per_round, per_round=per_round)
    finally:
        torch.set_num_threads(threads)
    return {name: t["median"] for name, t in timed.items()}


def _box_rect(encoder: Any, box: Sequence[float]) -> Any:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return encoder.dlib.rectangle(x1, y1, x2, y2)


_worker_encoder = None


def _dlib_vector(photo: LfwPhoto) -> tuple[np.ndarray, bool]:
    """One LFW photo through dlib, in a worker process that keeps its own encoder (dlib objects do not pickle):
    HOG's detection nearest the centre, else the landmarks.csv box."""
    global _worker_encoder
    from benchmarks.dlib_baseline import DlibEncoder
    from embedder.photo import load_photo

    if _worker_encoder is None:
        _worker_encoder = DlibEncoder()
    rgb = np.asarray(load_photo(photo.path))
    own = _worker_encoder.locate(rgb, None, rule="centre")
    rect = own if own is not None else _box_rect(_worker_encoder, photo.box)
    return _worker_encoder.encode(rgb, rect), own is not None


def dlib_vectors(photos: Sequence[LfwPhoto], cache: bool, fresh: bool) -> Embedded:
    """dlib's vectors for every photo, on all cores; read from / written to cache/ when `cache` (full runs)."""
    from concurrent.futures import ProcessPoolExecutor

    if cache and not fresh and DLIB_CACHE.exists() and DLIB_FOUND_CACHE.exists():
        vectors, found = np.load(DLIB_CACHE), np.load(DLIB_FOUND_CACHE)
        if len(vectors) == len(photos) == len(found):
            return Embedded(vectors, found)
        print("dlib cache does not match the photos; recomputing", file=sys.stderr)
    print(f"dlib: {len(photos)} photos on {os.cpu_count()} processes", file=sys.stderr)
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(_dlib_vector, photos, chunksize=32))
    vectors = np.stack([v for v, _ in results]).astype(np.float32)
    found = np.array([f for _, f in results])
    if cache:
        DLIB_CACHE.parent.mkdir(exist_ok=True)
        np.save(DLIB_CACHE, vectors)
        np.save(DLIB_FOUND_CACHE, found)
    return Embedded(vectors, found)


# -- numbers ---------------------------------------------------------------------------------------------------

def open_set(vectors: np.ndarray, identities: Sequence[str],
             product_threshold: Callable[[int], float] | None = None) -> dict[str, Any]:
    """One-shot open set: people with ≥ 2 photos enrolled from their first, the rest probes; one-photo people
    are strangers. With `product_threshold(N)`, also the outcome at the product's own τ(N)."""
    split = one_shot_split(identities, lambda _person, rows: len(rows) < 2)
    gallery = vectors[split.enrol_rows]
    index, dist = nearest(vectors[split.probe_rows], gallery)
    right = np.array(split.enrolled)[index] == np.array(split.probe_people)
    _, stranger_dist = nearest(vectors[split.stranger_rows], gallery)
    out: dict[str, Any] = {
        "enrolled": len(split.enrolled), "probes": len(split.probe_rows), "strangers": len(split.stranger_rows),
        "rank1": rank1(dist, right), "at_fpir_1%": named_at_fpir(dist, right, stranger_dist, 0.01),
    }
    if product_threshold is not None:
        out["product_threshold"] = {"people": len(split.enrolled),
                                    **outcomes(dist, right, stranger_dist, product_threshold(len(split.enrolled)))}
    return out


def report(embedded: Embedded, identities: Sequence[str], pairs: np.ndarray, same: np.ndarray, fold: np.ndarray,
           product_threshold: Callable[[int], float] | None = None) -> dict[str, Any]:
    """Every LFW number for one system, on plain Euclidean distances between its vectors."""
    dist = pair_distances(embedded.vectors, pairs)
    return {
        "lfw_10fold": ten_fold_accuracy(dist, same, fold),
        "tar_at_far_0.1%": tar_at_far(dist, same, 0.001),
        "open_set": open_set(embedded.vectors, identities, product_threshold),
        "face_found": float(np.mean(embedded.found)) if embedded.found is not None else None,
        "ms_per_face_1thread": embedded.ms_per_face,
    }


# -- output ----------------------------------------------------------------------------------------------------

LABELS = {"oneshot": "oneshot", "openvino_reference": "openvino reference (landmarks.csv)",
          "dlib": "dlib (face_recognition)"}


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def print_table(results: dict[str, Any]) -> None:
    print(f"{results['data']['photos']} photos, {results['data']['pairs']} pairs; {results['machine']}; "
          f"model {results['model_id']}; oneshot aligned from {results['landmarks']} landmarks")
    print("| system | LFW 10-fold | TAR @ FAR 0.1 % | rank-1 | named @ FPIR 1 % | face found | ms/face (1 thread) |")
    print("|---|---|---|---|---|---|---|")
    for name, s in results["systems"].items():
        acc, o = s["lfw_10fold"], s["open_set"]
        print(f"| {LABELS[name]} | {100 * acc['mean']:.2f} % ± {100 * acc['std']:.2f} | "
              f"{100 * s['tar_at_far_0.1%']['tar']:.1f} % | {100 * o['rank1']:.1f} % | "
              f"{100 * o['at_fpir_1%']['named_correctly']:.1f} % | {_percent(s['face_found'])} | "
              f"{s['ms_per_face_1thread']:.1f} |")
    product = results["systems"]["oneshot"]["open_set"].get("product_threshold")
    if product:
        print(f"oneshot at its own τ(N={product['people']}) = {product['threshold']:.3f}: named correctly "
              f"{100 * product['named_correctly']:.1f} %, strangers named {100 * product['strangers_named']:.2f} %")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--landmarks", choices=["detector", "teacher"], default="detector",
                        help="oneshot's alignment: its own detector (the product) or lfw/landmarks.csv")
    parser.add_argument("--no-dlib", action="store_true", help="skip dlib")
    parser.add_argument("--no-openvino", action="store_true", help="skip the openvino reference")
    parser.add_argument("--fresh", action="store_true", help="recompute dlib's cached LFW vectors")
    parser.add_argument("--every", type=int, default=1, help="keep every EVERY-th pair of each fold (quick check)")
    parser.add_argument("--out", type=Path, help=f"results file (default {DEFAULT_OUT.relative_to(ROOT)}; "
                                                 "with --every > 1, none unless given)")
    args = parser.parse_args(argv)
    root = data_root()
    if root is None:
        sys.exit("no datasets found: set $ONESHOT_DATA or put them in ../shared/datasets")
    lfw = root / "lfw"
    photos = read_photos(lfw)
    pairs, same, fold = read_pairs(lfw, {str(p.path.relative_to(lfw)): i for i, p in enumerate(photos)})
    full = args.every == 1
    if not full:
        photos, pairs, same, fold = subset(photos, pairs, same, fold, args.every)
    identities = [p.identity for p in photos]

    import embedder
    from enroll.decision import threshold_for_gallery

    reference = reference_1 = None
    if not args.no_openvino:
        from benchmarks.openvino_reference import OpenVinoReference

        reference, reference_1 = OpenVinoReference(), OpenVinoReference(threads=1)
    print(f"oneshot{' and the openvino reference' if reference else ''}: {len(photos)} photos", file=sys.stderr)
    ours, theirs = embed_oneshot_and_reference(photos, args.landmarks, reference)
    dlib = None if args.no_dlib else dlib_vectors(photos, cache=full, fresh=args.fresh)
    encoder = None
    if dlib is not None:
        from benchmarks.dlib_baseline import DlibEncoder

        encoder = DlibEncoder()
    ms = time_alignment_and_network(photos, reference_1, encoder)

    card = embedder.model_card()
    systems: dict[str, Any] = {}
    ours.ms_per_face = ms["oneshot"]
    systems["oneshot"] = report(ours, identities, pairs, same, fold, lambda n: threshold_for_gallery(card, n))
    if theirs is not None:
        theirs.ms_per_face = ms["openvino_reference"]
        systems["openvino_reference"] = report(theirs, identities, pairs, same, fold)
    if dlib is not None:
        dlib.ms_per_face = ms["dlib"]
        systems["dlib"] = report(dlib, identities, pairs, same, fold)
    results = {
        "command": "python -m benchmarks.lfw " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "model_id": embedder.model_id(),
        "landmarks": args.landmarks,
        "data": {"photos": len(photos), "pairs": len(pairs), "every": args.every},
        "systems": systems,
    }
    out = args.out if args.out is not None else (DEFAULT_OUT if full else None)
    if out is not None:
        write_result(out, results)
    print_table(results)


if __name__ == "__main__":
    main()
