"""Checkpoint → shipped detector: `embedder/weights/detector.pt` (float16) + model card `detector.json`.

    python -m train.export_detector --checkpoint runs/det2/last.pt

Scan settings (two passes at 320 and 160 px split at 35 % of the long side, then the landmark network) are
`embedder.detector.DEFAULT_INFERENCE`, in code; the weights carry only what is calibrated. The score threshold is calibrated here, on
composed scenes of *held-out* people (never seen in training) at 640×480 with 2–8 faces of 24–300 px plus
face-free canvases: the threshold that maximises F1 of IoU ≥ 0.5 matches.
The same scene helpers are used by `benchmarks/detector.py`.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from embedder.detector import CALIBRATED_KEYS, DEFAULT_INFERENCE, DETECTOR_CARD, DETECTOR_WEIGHTS, run_detector
from embedder.detector_net import DetectorConfig, FaceDetectorNet, count_parameters
from embedder.types import Face
from train.scenes import FaceSource, Scene, compose_scene

TRAIN_DATA = "celeba + fiw (90 % of groups; LFW never used), composed scenes (train.scenes)"


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (n,4) and (m,4) boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match(truth: np.ndarray, faces: Sequence[Face], iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching by score: (index of the detection matched to each truth or -1, matched mask)."""
    order = sorted(range(len(faces)), key=lambda i: -faces[i].score)
    assigned = np.full(len(truth), -1)
    used = np.zeros(len(faces), bool)
    if len(truth) and len(faces):
        m = iou_matrix(np.array([faces[i].box for i in order]), truth)
        for k, i in enumerate(order):
            j = int(np.argmax(np.where(assigned < 0, m[k], -1)))
            if m[k, j] >= iou and assigned[j] < 0:
                assigned[j], used[i] = i, True
    return assigned, used


def eval_scenes(source: FaceSource, n_faces: int, n_empty: int, seed: int = 1000) -> list[Scene]:
    """Held-out benchmark scenes: 640×480, 2–8 faces of 24–300 px; then face-free canvases."""
    rng = np.random.default_rng(seed)
    scenes = [compose_scene(rng, source, 640, 480, n_faces=(2, 8), face_size=(24.0, 300.0), p_empty=0.0,
                            p_whole=0.0) for _ in range(n_faces)]
    scenes += [compose_scene(rng, source, 640, 480, p_empty=1.0) for _ in range(n_empty)]
    return scenes


def sweep(model: FaceDetectorNet, settings: dict[str, Any], scenes: list[Scene],
          thresholds: Sequence[float]) -> list[dict[str, float]]:
    """Recall, false detections per image and F1 for each threshold, from one low-threshold pass per scene."""
    low = {**settings, "score_threshold": min(thresholds)}
    records = []  # per scene: (scores of detections, matched flags, number of truths, best score per truth)
    for scene in scenes:
        faces = run_detector(model, low, Image.fromarray(scene.image))
        assigned, used = match(scene.boxes, faces)
        scores = np.array([f.score for f in faces])
        truth_scores = np.array([faces[i].score if i >= 0 else -1.0 for i in assigned])
        records.append((scores, used, truth_scores))
    out = []
    n_truth = sum(len(r[2]) for r in records)
    for t in thresholds:
        tp = sum(int((r[2] >= t).sum()) for r in records)
        fp = sum(int(((r[0] >= t) & ~r[1]).sum()) for r in records)
        recall = tp / max(1, n_truth)
        precision = tp / max(1, tp + fp)
        out.append({"threshold": float(t), "recall": recall, "fp_per_image": fp / len(scenes),
                    "f1": 2 * precision * recall / max(1e-9, precision + recall)})
    return out


def load_checkpoint(path: Path) -> tuple[FaceDetectorNet, dict[str, Any]]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = FaceDetectorNet(DetectorConfig.from_dict(ck["config"]))
    model.load_state_dict(ck["model"])
    return model.eval(), ck


def export(checkpoint: Path, threshold: float | None, n_scenes: int, out: Path = DETECTOR_WEIGHTS,
           card: Path = DETECTOR_CARD) -> dict[str, Any]:
    """Calibrate at the product's scan settings (`DEFAULT_INFERENCE`); only the calibrated values are stored."""
    model, ck = load_checkpoint(checkpoint)
    settings = dict(DEFAULT_INFERENCE)
    calibration: list[dict[str, float]] = []
    if threshold is None:
        from train.data_paths import data_root
        from train.scenes import DatasetFaces, load_face_records

        root = data_root()
        if root is None:
            raise SystemExit("no datasets to calibrate the threshold on: pass --threshold")
        scenes = eval_scenes(DatasetFaces(load_face_records(root, "val")), n_scenes, n_scenes // 4, seed=777)
        calibration = sweep(model, settings, scenes, [round(t, 2) for t in np.arange(0.15, 0.8, 0.05)])
        threshold = max(calibration, key=lambda r: r["f1"])["threshold"]
    settings["score_threshold"] = float(threshold)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    calibrated = {k: settings[k] for k in CALIBRATED_KEYS}
    torch.save({"model": state, "config": ck["config"], "inference": json.dumps(calibrated)}, out)
    args = ck.get("args", {})
    info = {
        "params": count_parameters(model), "file_bytes": out.stat().st_size, "dtype": "float16 (widened on load)",
        "architecture": "CenterNet-style anchor-free, strides 8/16/32, inverted-residual backbone + light FPN",
        "config": ck["config"], **calibrated,
        "scan": "embedder.detector.DEFAULT_INFERENCE (sizes, landmark refinement) at the time of calibration: "
                + json.dumps(settings),
        "training_command": (f"python -m train.train_detector --out {args.get('out')} --minutes {args.get('minutes')} "
                             f"--threads {args.get('threads')} --seed {args.get('seed')}"),
        "export_command": f"python -m train.export_detector --checkpoint {checkpoint}",
        "steps": ck["step"], "train_minutes": round(ck["elapsed"] / 60, 1), "batch": args.get("batch"),
        "scene_size": args.get("size"), "data": TRAIN_DATA, "teacher": "MTCNN (facenet-pytorch 2.6.0) landmarks.csv",
        "calibration": {"scenes": "held-out people, 640x480, 2-8 faces 24-300 px + 25 % face-free, seed 777",
                        "sweep": calibration},
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    card.write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--threshold", type=float, default=None, help="fixed score threshold (default: calibrate)")
    p.add_argument("--scenes", type=int, default=120, help="held-out calibration scenes with faces")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    info = export(a.checkpoint, a.threshold, a.scenes)
    print(json.dumps({k: v for k, v in info.items() if k not in ("calibration", "config")}, indent=1))
    best = [r for r in info["calibration"]["sweep"] if r["threshold"] == info["score_threshold"]]
    print("calibration:", best)


if __name__ == "__main__":
    main()
