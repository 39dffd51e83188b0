"""Face detection: photo → faces (box, score, 5 landmarks) with our own small network, no download, no dlib.

The photo is resized so its long side is the working size (`detector.json` → `working_size`; plus a small coarse
pass for faces that fill much of the frame, see `run_detector`) and padded to a multiple of 32; the network (`embedder.detector_net`) predicts, per cell of three levels, a face-centre score, a
box and landmarks; local maxima above the score threshold are decoded, merged with `torchvision.ops.nms`, and
mapped back to the photo's pixels. The threshold was chosen on held-out composed scenes (see the card). The
landmarks then come from a small dedicated network (`embedder.landmark_net`, weights `landmarks.pt`) that looks at
a square crop around each detected box (`landmark_net_refine`).

Nothing heavy happens at import: torch and the weights load on the first call, once per process.
"""
from __future__ import annotations

import json
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
    from embedder.landmark_net import LandmarkNet

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DETECTOR_WEIGHTS = WEIGHTS_DIR / "detector.pt"
DETECTOR_CARD = WEIGHTS_DIR / "detector.json"
LANDMARK_WEIGHTS = WEIGHTS_DIR / "landmarks.pt"

# How a photo is scanned and its landmarks refined: two passes at 320 + 160 px, then the landmark network
# (`refine`). Chosen as the cheapest scan that kept LFW main-face recall ≥ 99.5 % and held-out scene recall ≥ 95 %
# on samples; the full measurement (`python -m benchmarks.detector`, benchmarks/results/detector.json): LFW
# recall 99.86 %, landmark error 0.039, 18.1 ms per 640×480 photo on one thread (5.1× faster than MTCNN).
DEFAULT_INFERENCE: dict[str, Any] = {"working_size": 320, "coarse_size": 160, "split_fraction": 0.35,
                                     "refine": True, "score_threshold": 0.4, "nms_iou": 0.4, "max_faces": 100}
# What the weights file's "inference" entry may override: the values its export calibrated on held-out scenes.
# (Scan sizes and refinement are chosen above, so a newer landmark stage does not require re-exporting detector.pt.)
CALIBRATED_KEYS = ("score_threshold", "nms_iou", "max_faces")

# A cheaper mode: one 320 px pass (misses some faces filling most of the frame: 99.49 % LFW recall),
# still with the landmark network, which costs a few ms. For video frames or bulk scans, not for enrolment photos.
FAST_INFERENCE: dict[str, Any] = {"working_size": 320, "coarse_size": 0}

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _load() -> tuple["FaceDetectorNet", dict[str, Any]]:
    import torch

    from embedder.detector_net import DetectorConfig, FaceDetectorNet

    with _lock:
        saved = torch.load(DETECTOR_WEIGHTS, map_location="cpu", weights_only=True)
        model = FaceDetectorNet(DetectorConfig.from_dict(saved["config"]))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in saved["model"].items()})
        calibrated = json.loads(saved.get("inference", "{}"))
        settings = {**DEFAULT_INFERENCE, **{k: v for k, v in calibrated.items() if k in CALIBRATED_KEYS}}
        return _for_cpu_inference(model), settings


@lru_cache(maxsize=1)
def _load_landmarks() -> "LandmarkNet":
    """The landmark network (`embedder.landmark_net`), loaded on first use, once per process."""
    import torch

    from embedder.landmark_net import LandmarkConfig, LandmarkNet

    with _lock:
        saved = torch.load(LANDMARK_WEIGHTS, map_location="cpu", weights_only=True)
        model = LandmarkNet(LandmarkConfig.from_dict(saved["config"]))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in saved["model"].items()})
        return _for_cpu_inference(model)


def _for_cpu_inference(model: "torch.nn.Module") -> "torch.nn.Module":
    """BatchNorm folded into the convolutions and channels-last weights: oneDNN's CPU convolutions run ~25 %
    faster on NHWC tensors (inputs are converted in `prepare` and `landmark_net_refine`)."""
    import torch

    from embedder.fuse import fuse_batchnorms

    return fuse_batchnorms(model.eval()).to(memory_format=torch.channels_last)


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
    x = torch.full((1, ph, pw, 3), 0.5)
    x[0, :nh, :nw] = torch.from_numpy(np.array(resized, dtype=np.uint8)).float().div_(255)
    return x.permute(0, 3, 1, 2), scale  # NHWC memory seen as NCHW: the channels-last layout, without a copy


def downscale(x: "torch.Tensor", scale: float, factor: float) -> tuple["torch.Tensor", float]:
    """A prepared tensor → the same photo at `factor` (< 1) of its size, padded to a multiple of 32 again.

    Box-averages the already resized pixels (area interpolation), which is ~4× cheaper than resizing the photo
    a second time with Pillow and, for the 2:1 coarse pass, gives the same pixels up to rounding.
    """
    import torch
    from torch.nn import functional as F

    small = F.interpolate(x, scale_factor=factor, mode="area")
    h, w = small.shape[-2:]
    pad = F.pad(small, (0, -(-w // 32) * 32 - w, 0, -(-h // 32) * 32 - h), value=0.5)
    return pad.contiguous(memory_format=torch.channels_last), scale * factor


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

    `fast=True` trades some recall (faces filling the frame) for ~1.4× speed (`FAST_INFERENCE`)."""
    model, settings = _load()
    if fast:
        settings = {**settings, **FAST_INFERENCE}
    if score_threshold is not None:
        settings = {**settings, "score_threshold": score_threshold}
    return run_detector(model, settings, image)


def run_detector(model: "FaceDetectorNet", settings: dict[str, Any], image: Image.Image) -> list[Face]:
    """`detect_faces` with an explicit network and settings (training, calibration and benchmarks use this).

    Two passes when `coarse_size` is set: the network is trained on faces up to ~250 px, so the full working size
    reports faces smaller than `split_fraction` of the photo's long side and a small coarse pass (the working-size
    tensor box-averaged down, `downscale`) reports the larger ones (a portrait or badge photo whose face fills the
    frame); each pass keeps only the sizes it is good at (with a 15 % overlap band) and a final NMS merges the two.
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
        full, full_scale = prepare(image, passes[0][0])
        for size, lo, hi in passes:
            x, scale = (full, full_scale) if size == passes[0][0] else downscale(full, full_scale, size / passes[0][0])
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
        if settings.get("refine") and len(boxes):
            marks = landmark_net_refine(_load_landmarks(), image, boxes)
    faces = [
        Face(box=tuple(b), score=float(s), landmarks=tuple((p[0], p[1]) for p in m))  # type: ignore[arg-type]
        for b, s, m in zip(boxes.tolist(), scores.tolist(), marks.tolist())
    ]
    return sorted(faces, key=lambda f: f.area, reverse=True)


def landmark_net_refine(net: "LandmarkNet", image: Image.Image, boxes: "torch.Tensor") -> "torch.Tensor":
    """Landmarks (n, 5, 2) in photo pixels from the landmark network, one batched call for all faces.

    Each box's square crop region (`landmark_net.crop_region`: box centre, side = margin × long side, snapped to
    whole pixels) is cut from the photo and resized to the network's input (antialiased when shrinking, grey
    beyond the photo's edge as in training). Crop units map back to pixels through the region actually cut.
    (Averaging with a mirrored pass lowered the LFW landmark error only from 0.039 to 0.036 for ~2 ms per photo,
    the difference between 4.5× and 5× MTCNN's speed, so it was dropped.)
    """
    import torch

    from embedder.landmark_net import crop_region, to_photo

    size, margin = net.config.input_size, net.config.margin
    rgb = to_rgb(image)
    crops, regions = [], []
    for cx0, cy0, side_f in crop_region(boxes.double().numpy(), margin).tolist():
        side = max(2, round(side_f))
        x0, y0 = round(cx0 + (side_f - side) / 2), round(cy0 + (side_f - side) / 2)
        crop = rgb.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.Resampling.BILINEAR,
                                                               reducing_gap=3.0)
        crops.append(torch.from_numpy(np.array(crop, dtype=np.uint8)))
        regions.append((x0, y0, side))
    # NHWC stacked, then viewed as NCHW: already the channels-last layout the network runs fastest on.
    x = torch.stack(crops).float().div_(255)
    for i, (x0, y0, side) in enumerate(regions):
        if x0 < 0 or y0 < 0 or x0 + side > rgb.width or y0 + side > rgb.height:
            x[i] = torch.where(_inside_mask(x0, y0, side, size, rgb.size), x[i], 0.5)
    x = x.permute(0, 3, 1, 2)
    pred = net(x)
    return to_photo(pred, torch.tensor(regions, dtype=torch.float32))


def _inside_mask(x0: float, y0: float, side: float, size: int, photo: tuple[int, int]) -> "torch.Tensor":
    import torch

    pos = (torch.arange(size) + 0.5) * side / size
    xs, ys = x0 + pos, y0 + pos
    inside_x = (xs >= 0) & (xs < photo[0])
    inside_y = (ys >= 0) & (ys < photo[1])
    return (inside_y[:, None] & inside_x[None, :])[..., None]
