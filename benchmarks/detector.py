"""The face finder on real photos, against MTCNN's labels: does it find the photo's main face, how often does it
fire on something else, how close are its landmarks, how fast is it?

    python -m benchmarks.detector [--lfw-every 5]      # → benchmarks/results/detector.json

On `celeba-wild` (whole photos with background; `faces.csv` lists every MTCNN face) and on LFW (its
`landmarks.csv` labels the main face only). Per dataset:
- `main_face_agrees`: the finder's first face overlaps MTCNN's main face (IoU ≥ 0.5), over photos MTCNN labels;
- `found`: photos with at least one face; `several`: photos with more than one;
- `unmatched_per_photo` (celeba-wild): detections overlapping no MTCNN face (IoU < 0.3) — false detections, up to
  the faces MTCNN itself misses;
- `landmark_error`: mean distance of the 5 landmarks to MTCNN's, over MTCNN's inter-ocular distance, where the
  main faces agree;
- `ms_per_photo`: median wall time of `embedder.detect_faces` per photo (decode not included), one thread.

Only the flat API (`embedder.load_photo`, `embedder.detect_faces`) is used, so this file also measures any other
checkout's face finder: `PYTHONPATH=/path/to/other/checkout python benchmarks/detector.py --out other.json`.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import RESULTS, cpu_name, write_result

DEFAULT_OUT = RESULTS / "detector.json"
MARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def data_root() -> Path:
    import os

    env = os.environ.get("ONESHOT_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "datasets"
    if not (root / "celeba-wild" / "faces.csv").is_file():
        raise SystemExit(f"error: no datasets at {root} (set ONESHOT_DATA)")
    return root


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def labelled(row: dict[str, str]) -> tuple[np.ndarray, np.ndarray] | None:
    """MTCNN's box and landmarks of one csv row, or None when it found no face."""
    if not row.get("x1"):
        return None
    box = np.array([float(row[k]) for k in ("x1", "y1", "x2", "y2")])
    marks = np.array([[float(row[f"{m}_x"]), float(row[f"{m}_y"])] for m in MARKS])
    return box, marks


def measure(folder: Path, every: int, all_faces: dict[str, list[np.ndarray]] | None) -> dict[str, float]:
    import embedder

    rows = list(csv.DictReader((folder / "landmarks.csv").open()))[::every]
    agree = found = several = labelled_photos = unmatched = 0
    errors, times = [], []
    for row in rows:
        image = embedder.load_photo(folder / row["path"])
        start = time.perf_counter()
        faces = embedder.detect_faces(image)
        times.append(1000 * (time.perf_counter() - start))
        found += bool(faces)
        several += len(faces) > 1
        if all_faces is not None:
            truth = all_faces.get(row["path"], [])
            unmatched += sum(all(iou(np.array(f.box), t) < 0.3 for t in truth) for f in faces)
        label = labelled(row)
        if label is None:
            continue
        labelled_photos += 1
        if faces and iou(np.array(faces[0].box), label[0]) >= 0.5:
            agree += 1
            ocular = float(np.linalg.norm(label[1][1] - label[1][0]))
            errors.append(float(np.linalg.norm(np.array(faces[0].landmarks) - label[1], axis=1).mean() / ocular))
    out = {"photos": len(rows), "main_face_agrees": agree / max(labelled_photos, 1), "found": found / len(rows),
           "several": several / len(rows), "landmark_error": float(np.mean(errors)) if errors else None,
           "ms_per_photo": float(np.median(times))}
    if all_faces is not None:
        out["unmatched_per_photo"] = unmatched / len(rows)
    return out


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw-every", type=int, default=5, help="every n-th LFW photo (13,233 in all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    root = data_root()
    all_faces: dict[str, list[np.ndarray]] = {}
    for row in csv.DictReader((root / "celeba-wild" / "faces.csv").open()):
        all_faces.setdefault(row["path"], []).append(np.array([float(row[k]) for k in ("x1", "y1", "x2", "y2")]))
    result = {"celeba_wild": measure(root / "celeba-wild", 1, all_faces),
              "lfw": measure(root / "lfw", args.lfw_every, None)}
    result["machine"] = cpu_name()
    print(json.dumps(result, indent=1))
    write_result(args.out, result)


if __name__ == "__main__":
    main()
