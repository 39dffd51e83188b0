"""Detector benchmark: our shipped detector side by side with the MTCNN teacher, same photos, one run.

    python -m benchmarks.detector                 # everything, 1 thread → benchmarks/results/detector.json
    python -m benchmarks.detector --lfw-limit 500 # quicker look

Measures (issue #4):
- recall of the main face on LFW (all 13,233 photos by default): a detection with IoU ≥ 0.5 with the teacher's
  box from `lfw/landmarks.csv`; the teacher is MTCNN, so its own recall there is 100 % by construction;
- landmark error vs the teacher on those matches: mean point distance / the teacher's inter-ocular distance;
- recall on composed multi-face scenes of held-out CelebA/FIW people (640×480, 2–8 faces of 24–300 px), for us and
  for MTCNN, and false detections per face-free composed canvas;
- ms per 640×480 photo on one CPU thread (the composed scenes), for us and MTCNN, and the speed ratio;
- all of ours twice: the shipped default and `detect_faces(..., fast=True)` (one 320 px pass, no refinement).
MTCNN needs `pip install --no-deps facenet-pytorch` (+ tqdm), benchmark-only; without it, its columns are null.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.machine import cpu_name
from embedder.detector import FAST_INFERENCE, _load, detector_settings, run_detector
from embedder.types import Face
from train.data_paths import data_root
from train.export_detector import eval_scenes, iou_matrix, match
from train.scenes import DatasetFaces, Scene, load_face_records

RESULTS = Path(__file__).resolve().parent / "results" / "detector.json"


def lfw_rows(root: Path, limit: int | None) -> list[dict[str, str]]:
    with open(root / "lfw" / "landmarks.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["x1"]]
    if limit and limit < len(rows):
        idx = np.random.default_rng(0).choice(len(rows), limit, replace=False)
        rows = [rows[i] for i in sorted(idx)]
    return rows


def lfw_metrics(root: Path, rows: list[dict[str, str]], model: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """Main-face recall and landmark NME against the teacher's labels."""
    hits, nmes, n_det, times = 0, [], [], []
    misses: list[str] = []
    for r in rows:
        image = Image.open(root / "lfw" / r["path"]).convert("RGB")
        t0 = time.perf_counter()
        faces = run_detector(model, settings, image)
        times.append(time.perf_counter() - t0)
        n_det.append(len(faces))
        truth = np.array([[float(r[k]) for k in ("x1", "y1", "x2", "y2")]])
        if not faces:
            misses.append(r["path"])
            continue
        ious = iou_matrix(np.array([f.box for f in faces]), truth)[:, 0]
        best = int(np.argmax(ious))
        if ious[best] < 0.5:
            misses.append(r["path"])
            continue
        hits += 1
        lm = np.array([[float(r[f"{p}_{a}"]) for a in ("x", "y")]
                       for p in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")])
        iod = float(np.linalg.norm(lm[0] - lm[1]))
        nmes.append(float(np.linalg.norm(np.array(faces[best].landmarks) - lm, axis=1).mean() / max(iod, 1e-6)))
    return {
        "photos": len(rows), "recall_iou50": hits / max(1, len(rows)),
        "landmark_nme_mean": float(np.mean(nmes)) if nmes else None,
        "landmark_nme_median": float(np.median(nmes)) if nmes else None,
        "landmark_nme_p95": float(np.percentile(nmes, 95)) if nmes else None,
        "mean_detections_per_photo": float(np.mean(n_det)) if n_det else 0.0,
        "ms_per_170px_photo": 1000 * statistics.median(times) if times else None,
        "misses_sample": misses[:20],
    }


def mtcnn_detector() -> Any:
    try:
        from facenet_pytorch import MTCNN
    except Exception as exc:  # noqa: BLE001 - any import problem means "no teacher here"
        return f"facenet-pytorch unavailable: {exc}"
    return MTCNN(keep_all=True, device="cpu")


def mtcnn_faces(mtcnn: Any, image: Image.Image) -> list[Face]:
    boxes, probs, points = mtcnn.detect(image, landmarks=True)
    if boxes is None:
        return []
    return [Face(tuple(map(float, b)), float(p), tuple((float(x), float(y)) for x, y in pt))  # type: ignore[arg-type]
            for b, p, pt in zip(boxes, probs, points) if p >= 0.9]


def scene_metrics(scenes: list[Scene], detect: Any) -> dict[str, Any]:
    """Recall on scenes with faces (by face size), false detections per face-free scene, ms per 640×480 scene."""
    found, total, fp_empty, n_empty, times = 0, 0, 0, 0, []
    by_size: dict[str, list[int]] = {"24-48": [0, 0], "48-96": [0, 0], "96-300": [0, 0]}
    fp_faces = 0
    for scene in scenes:
        image = Image.fromarray(scene.image)
        t0 = time.perf_counter()
        faces = detect(image)
        times.append(time.perf_counter() - t0)
        assigned, used = match(scene.boxes, faces)
        if len(scene.boxes) == 0:
            fp_empty += len(faces)
            n_empty += 1
            continue
        fp_faces += int((~used).sum())
        found += int((assigned >= 0).sum())
        total += len(scene.boxes)
        for box, a in zip(scene.boxes, assigned):
            s = max(box[2] - box[0], box[3] - box[1])
            key = "24-48" if s < 48 else "48-96" if s < 96 else "96-300"
            by_size[key][0] += int(a >= 0)
            by_size[key][1] += 1
    return {
        "faces": total, "recall_iou50": found / max(1, total),
        "recall_by_size": {k: (v[0] / v[1] if v[1] else None) for k, v in by_size.items()},
        "false_detections_per_scene_with_faces": fp_faces / max(1, len(scenes) - n_empty),
        "face_free_images": n_empty, "false_detections_per_face_free_image": fp_empty / max(1, n_empty),
        "ms_per_640x480_median": 1000 * statistics.median(times), "ms_per_640x480_mean": 1000 * statistics.mean(times),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lfw-limit", type=int, default=None, help="random subset of LFW (default: all 13,233)")
    p.add_argument("--scenes", type=int, default=200, help="multi-face held-out scenes")
    p.add_argument("--empty", type=int, default=100, help="face-free scenes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-mtcnn", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    root = data_root()
    if root is None:
        raise SystemExit("no datasets: set ONESHOT_DATA or put them in ../shared/datasets")
    model, settings = _load()
    card = json.loads((Path(__file__).resolve().parent.parent / "embedder" / "weights" / "detector.json").read_text())
    result: dict[str, Any] = {
        "machine": {"cpu": cpu_name(), "threads": a.threads,
                    "torch": torch.__version__, "python": platform.python_version()},
        "detector": {"params": card.get("params"), "steps": card.get("steps"), **detector_settings()},
    }
    t0 = time.time()
    rows = lfw_rows(root, a.lfw_limit)
    fast = {**settings, **FAST_INFERENCE}
    result["lfw"] = lfw_metrics(root, rows, model, settings)
    print(json.dumps(result["lfw"], indent=1), flush=True)
    result["lfw_fast"] = lfw_metrics(root, rows, model, fast)
    scenes = eval_scenes(DatasetFaces(load_face_records(root, "val")), a.scenes, a.empty, seed=1000)
    result["scenes"] = {"ours": scene_metrics(scenes, lambda im: run_detector(model, settings, im)),
                        "ours_fast": scene_metrics(scenes, lambda im: run_detector(model, fast, im))}
    print(json.dumps(result["scenes"], indent=1), flush=True)
    mtcnn = None if a.no_mtcnn else mtcnn_detector()
    if mtcnn is None or isinstance(mtcnn, str):
        result["scenes"]["mtcnn"] = None
        result["mtcnn_note"] = mtcnn or "skipped (--no-mtcnn)"
    else:
        with torch.inference_mode():
            result["scenes"]["mtcnn"] = scene_metrics(scenes, lambda im: mtcnn_faces(mtcnn, im))
            times = []
            for r in lfw_rows(root, 300):
                image = Image.open(root / "lfw" / r["path"]).convert("RGB")
                t1 = time.perf_counter()
                mtcnn_faces(mtcnn, image)
                times.append(time.perf_counter() - t1)
            result["lfw"]["mtcnn_ms_per_170px_photo"] = 1000 * statistics.median(times)
        result["speed_ratio_vs_mtcnn"] = {
            mode: result["scenes"]["mtcnn"]["ms_per_640x480_median"] / result["scenes"][key]["ms_per_640x480_median"]
            for mode, key in (("default", "ours"), ("fast", "ours_fast"))}
        result["mtcnn_note"] = ("facenet-pytorch 2.6.0 MTCNN, keep_all, default thresholds, detections with "
                                "p >= 0.9 (the teacher's rule); on LFW it is the label source (recall 1.0 by definition)")
    result["scene_protocol"] = ("held-out CelebA/FIW groups (10 %), 640x480, 2-8 faces of 24-300 px (box long side), "
                                "seed 1000; face-free = composed canvases with distractor patches")
    result["wall_seconds"] = round(time.time() - t0, 1)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    result["fast_settings"] = FAST_INFERENCE
    print(json.dumps({k: v for k, v in result.items() if k not in ("lfw", "lfw_fast", "scenes")}, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
