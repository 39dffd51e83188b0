"""Face detection: photo → faces (box, score, 5 landmarks) with our own small network, no download, no dlib.

The photo is resized so its long side is the working size (`detector.json` → `working_size`; plus a small coarse
pass for faces that fill much of the frame, see `run_detector`) and padded to a multiple of 32; the network (`embedder.detector_net`) predicts, per cell of three levels, a face-centre score, a
box and landmarks; local maxima above the score threshold are decoded, merged with `torchvision.ops.nms`, and
mapped back to the photo's pixels. The threshold was chosen on held-out composed scenes (see the card).

Nothing heavy happens at import: torch and the weights load on the first call, once per process.
"""
from __future__ import annotations

import json
import math
import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from embedder.photo import to_rgb
from embedder.types import Face

if TYPE_CHECKING:
    import torch

    from embedder.detector_net import FaceDetectorNet

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DETECTOR_WEIGHTS = WEIGHTS_DIR / "detector.pt"
DETECTOR_CARD = WEIGHTS_DIR / "detector.json"

# Defaults, overridden by the weights file's "inference" entry (written at export from the validation sweep).
# The values shipped with detector.pt (chosen on 300 LFW photos + held-out composed scenes; threshold by F1 there).
DEFAULT_INFERENCE: dict[str, Any] = {"working_size": 416, "coarse_size": 256, "split_fraction": 0.35,
                                     "refine_size": 128, "score_threshold": 0.4, "nms_iou": 0.4, "max_faces": 100}

# A ~4× cheaper mode: one 320 px pass, no landmark refinement (see benchmarks/results/detector.json for the cost
# in recall and landmark error). For video frames or bulk scans, not for enrolment photos.
FAST_INFERENCE: dict[str, Any] = {"working_size": 320, "coarse_size": 0, "refine_size": 0}

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _load() -> tuple["FaceDetectorNet", dict[str, Any]]:
    import torch

    from embedder.detector_net import DetectorConfig, FaceDetectorNet

    with _lock:
        saved = torch.load(DETECTOR_WEIGHTS, map_location="cpu", weights_only=True)
        model = FaceDetectorNet(DetectorConfig.from_dict(saved["config"]))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in saved["model"].items()})
        settings = {**DEFAULT_INFERENCE, **json.loads(saved.get("inference", "{}"))}
        return model.eval(), settings


def detector_settings() -> dict[str, Any]:
    """Working size, score threshold and NMS overlap used by `detect_faces` (from the shipped weights)."""
    return dict(_load()[1])


def prepare(image: Image.Image, working_size: int) -> tuple["torch.Tensor", float]:
    """Resize so the long side is `working_size`, pad right/bottom to a multiple of 32 → (1,3,H,W), scale."""
    import torch

    image = to_rgb(image)
    w, h = image.size
    scale = working_size / max(w, h, 1)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = image.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=3.0)
    pw, ph = -(-nw // 32) * 32, -(-nh // 32) * 32
    x = torch.full((1, 3, ph, pw), 0.5)
    x[0, :, :nh, :nw] = torch.from_numpy(np.array(resized, dtype=np.uint8)).permute(2, 0, 1).float() / 255
    return x, scale


def decode(outputs: list["torch.Tensor"], strides: tuple[int, ...], score_threshold: float, nms_iou: float,
           max_faces: int = 100) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """Network maps of ONE image → (boxes (n,4), scores (n,), landmarks (n,5,2)) in network-input pixels.

    Inverse of the training targets (`train.train_detector.build_targets`): centre = cell + offset·stride,
    size = exp(log size)·stride, landmark = cell + offset·box size. Only 3×3 local maxima of the score map are
    decoded (each face peaks once per level); NMS then merges a face found on two levels.
    """
    import torch
    from torch.nn import functional as F
    from torchvision.ops import nms

    boxes, scores, marks = [], [], []
    for out, stride in zip(outputs, strides):
        out = out[0]
        score = torch.sigmoid(out[0])
        peak = score == F.max_pool2d(score[None, None], 3, 1, 1)[0, 0]
        ys, xs = torch.nonzero(peak & (score >= score_threshold), as_tuple=True)
        if len(ys) == 0:
            continue
        if len(ys) > 4 * max_faces:
            keep = score[ys, xs].topk(4 * max_faces).indices
            ys, xs = ys[keep], xs[keep]
        r = out[1:, ys, xs]  # (14, k)
        px, py = (xs.float() + 0.5) * stride, (ys.float() + 0.5) * stride
        cx, cy = px + r[0] * stride, py + r[1] * stride
        w, h = torch.exp(r[2].clamp(max=8)) * stride, torch.exp(r[3].clamp(max=8)) * stride
        boxes.append(torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1))
        scores.append(score[ys, xs])
        marks.append(torch.stack([px[:, None] + r[4::2].T * w[:, None], py[:, None] + r[5::2].T * h[:, None]], 2))
    if not boxes:
        return torch.zeros((0, 4)), torch.zeros((0,)), torch.zeros((0, 5, 2))
    b, s, m = torch.cat(boxes), torch.cat(scores), torch.cat(marks)
    keep = nms(b, s, nms_iou)[:max_faces]
    return b[keep], s[keep], m[keep]


def detect_faces(image: Image.Image, score_threshold: float | None = None, *, fast: bool = False) -> list[Face]:
    """Every face in the photo, largest box first; coordinates in the photo's own pixels. No face → [].

    `fast=True` trades some recall on large faces and landmark precision for ~4× speed (`FAST_INFERENCE`)."""
    model, settings = _load()
    if fast:
        settings = {**settings, **FAST_INFERENCE}
    if score_threshold is not None:
        settings = {**settings, "score_threshold": score_threshold}
    return run_detector(model, settings, image)


def run_detector(model: "FaceDetectorNet", settings: dict[str, Any], image: Image.Image) -> list[Face]:
    """`detect_faces` with an explicit network and settings (training, calibration and benchmarks use this).

    Two passes when `coarse_size` is set: the network is trained on faces up to ~250 px, so the full working size
    reports faces smaller than `split_fraction` of the photo's long side and a small coarse pass reports the
    larger ones (a portrait or badge photo whose face fills the frame); each pass keeps only the sizes it is good
    at (with a 15 % overlap band) and a final NMS merges the two.
    """
    import torch
    from torchvision.ops import nms

    passes = [(int(settings["working_size"]), 0.0, 1e9)]
    if settings.get("coarse_size"):
        passes[0] = (passes[0][0], 0.0, float(settings["split_fraction"]) * 1.15)
        passes.append((int(settings["coarse_size"]), float(settings["split_fraction"]) / 1.15, 1e9))
    long_side = max(image.size)
    all_boxes, all_scores, all_marks = [], [], []
    with torch.inference_mode():
        for size, lo, hi in passes:
            x, scale = prepare(image, size)
            boxes, scores, marks = decode(model(x), model.config.strides, float(settings["score_threshold"]),
                                          float(settings["nms_iou"]), int(settings["max_faces"]))
            face = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / scale
            keep = (face >= lo * long_side) & (face < hi * long_side)
            all_boxes.append(boxes[keep] / scale)
            all_scores.append(scores[keep])
            all_marks.append(marks[keep] / scale)
        boxes, scores, marks = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_marks)
        if len(passes) > 1 and len(boxes):
            keep = nms(boxes, scores, float(settings["nms_iou"]))[: int(settings["max_faces"])]
            boxes, scores, marks = boxes[keep], scores[keep], marks[keep]
        if settings.get("refine_size") and len(boxes):
            marks = refine_landmarks(model, settings, image, boxes, marks)
    faces = [
        Face(box=tuple(b), score=float(s), landmarks=tuple((p[0], p[1]) for p in m))  # type: ignore[arg-type]
        for b, s, m in zip(boxes.tolist(), scores.tolist(), marks.tolist())
    ]
    return sorted(faces, key=lambda f: f.area, reverse=True)


FLIP_ORDER = [1, 0, 2, 4, 3]  # mirror: image-left ↔ image-right eye and mouth corner


def refine_landmarks(model: "FaceDetectorNet", settings: dict[str, Any], image: Image.Image,
                     boxes: "torch.Tensor", marks: "torch.Tensor") -> "torch.Tensor":
    """Second look at each face: a square crop around it at one canonical size, plus its mirror image.

    Landmarks from the scene pass carry the error of wherever the face happened to fall on the grid and whatever
    size it had; the crop puts every face at the size the network is most precise at, and averaging with the
    mirrored crop (landmarks un-mirrored, left/right swapped) cancels left/right biases. Costs one batched
    forward pass of 2 small crops per face. Faces whose crop finds no face keep their first-pass landmarks.
    """
    import torch

    size = int(settings["refine_size"])
    margin = float(settings.get("refine_margin", 1.6))
    rgb = to_rgb(image)
    crops, origins = [], []
    for b in boxes.tolist()[: int(settings.get("refine_max_faces", 20))]:
        side = max(2, math.ceil(margin * max(b[2] - b[0], b[3] - b[1])))
        x0, y0 = math.floor((b[0] + b[2] - side) / 2), math.floor((b[1] + b[3] - side) / 2)
        # crop() may reach outside the photo (filled, then greyed below); resize() antialiases when shrinking.
        crop = rgb.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.Resampling.BILINEAR,
                                                                 reducing_gap=3.0)
        arr = torch.from_numpy(np.array(crop, dtype=np.uint8)).permute(2, 0, 1).float() / 255
        # Outside the photo: the grey the network sees as padding, not black.
        inside = _inside_mask(x0, y0, side, size, rgb.size)
        arr = torch.where(inside, arr, torch.full_like(arr, 0.5))
        crops += [arr, torch.flip(arr, dims=[2])]
        origins.append((x0, y0, side / size))
    outs = model(torch.stack(crops))
    refined = marks.clone()
    centre = torch.tensor([size / 2, size / 2])
    for i, (x0, y0, k) in enumerate(origins):
        found = [marks[i]]
        for j, flipped in ((2 * i, False), (2 * i + 1, True)):
            b, _, m = decode([o[j : j + 1] for o in outs], model.config.strides, 0.05, 0.4, 5)
            if not len(b):
                continue
            c = torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)
            best = int(torch.argmin(((c - centre) ** 2).sum(1)))
            lm = m[best].clone()
            if flipped:
                lm[:, 0] = size - lm[:, 0]
                lm = lm[FLIP_ORDER]
            found.append(lm * k + torch.tensor([x0, y0]))
        if settings.get("refine_mode", "avg") == "crop" and len(found) > 1:
            found = found[1:]
        refined[i] = torch.stack(found).mean(0)
    return refined


def _inside_mask(x0: float, y0: float, side: float, size: int, photo: tuple[int, int]) -> "torch.Tensor":
    import torch

    pos = (torch.arange(size) + 0.5) * side / size
    xs, ys = x0 + pos, y0 + pos
    inside_x = (xs >= 0) & (xs < photo[0])
    inside_y = (ys >= 0) & (ys < photo[1])
    return (inside_y[:, None] & inside_x[None, :])[None]
