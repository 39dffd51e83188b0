"""The face detector network: a torch port of Intel's face-detection-retail-0004 (SSD, SqueezeNet-light backbone).

Source: Open Model Zoo, `face-detection-retail-0004` (Apache-2.0; licence and notice in `embedder/weights/LICENSE`
and `NOTICE`). `train/convert_openvino.py` reads the IR files into this module's state dict; tests/test_port.py
checks it against the openvino runtime.

Input: (N, 3, 300, 300) BGR in 0–255, the whole photo resized. Output: per image, for each of the 19×19×9
clustered prior boxes, 4 box offsets and a face probability; `decode_detections` turns them into boxes as
fractions of the photo (the IR's PriorBoxClustered + DetectionOutput layers, written out in torch).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from embedder.layers import ChannelAffine, conv

INPUT_SIZE = 300
GRID = 19                     # the single detection head reads a 19×19 map
STEP = 16.0                   # prior centres: (cell + 0.5) · 16 px of the 300 px input
# The 9 clustered prior boxes per cell, width × height in input pixels (from the IR's PriorBoxClustered layer).
PRIOR_WIDTHS = (9.4, 25.1, 14.7, 34.7, 143.0, 77.4, 128.8, 51.1, 75.6)
PRIOR_HEIGHTS = (15.0, 39.6, 25.5, 63.2, 227.5, 162.9, 124.5, 105.1, 72.6)
VARIANCE = (0.1, 0.1, 0.2, 0.2)
NMS_IOU = 0.45               # the IR's DetectionOutput settings
TOP_K = 400


class Fire(nn.Module):
    """SqueezeNet's fire module: 1×1 squeeze, then 3×3 and 1×1 expands side by side (3×3 first in the output)."""

    def __init__(self, cin: int, squeeze: int, expand: int, stride: int = 1) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1, stride)
        self.expand3x3 = conv(squeeze, expand, 3)
        self.expand1x1 = conv(squeeze, expand, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.squeeze(x), inplace=True)
        return F.relu(torch.cat([self.expand3x3(x), self.expand1x1(x)], 1), inplace=True)


class FaceDetectorNet(nn.Module):
    """300×300 BGR photo → (box offsets (N, 3249, 4), face probability (N, 3249))."""

    def __init__(self) -> None:
        super().__init__()
        self.input_norm = ChannelAffine(3)
        self.conv1 = conv(3, 32, 7, stride=2)                    # 300 → 150
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)          # 150 → 75
        self.fires = nn.Sequential(
            Fire(32, 8, 32), Fire(64, 8, 32), Fire(64, 16, 64),
            Fire(128, 16, 64, stride=2),                         # 75 → 38
            Fire(128, 24, 96), Fire(192, 24, 96), Fire(192, 32, 128),
            Fire(256, 32, 128, stride=2),                        # 38 → 19
            Fire(256, 48, 192), Fire(384, 48, 192),
        )
        self.loc = conv(384, 9 * 4, 3)
        self.conf = conv(384, 9 * 2, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.fires(self.pool1(F.relu(self.conv1(self.input_norm(x)), inplace=True)))
        n = x.shape[0]
        loc = self.loc(x).permute(0, 2, 3, 1).reshape(n, -1, 4)
        conf = self.conf(x).permute(0, 2, 3, 1).reshape(n, -1, 2)
        return loc, conf.softmax(-1)[..., 1]


def prior_boxes(grid: int = GRID) -> torch.Tensor:
    """(grid·grid·9, 4) prior boxes as centre x, centre y, width, height, fractions of the input (row-major cells,
    then the 9 priors), as the IR's PriorBoxClustered layer lays them out."""
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32),
                            indexing="ij")
    cx = ((xs + 0.5) * STEP / INPUT_SIZE).reshape(-1, 1).expand(-1, 9)
    cy = ((ys + 0.5) * STEP / INPUT_SIZE).reshape(-1, 1).expand(-1, 9)
    w = torch.tensor(PRIOR_WIDTHS).div(INPUT_SIZE).expand_as(cx)
    h = torch.tensor(PRIOR_HEIGHTS).div(INPUT_SIZE).expand_as(cy)
    return torch.stack([cx, cy, w, h], -1).reshape(-1, 4)


def decode_detections(loc: torch.Tensor, scores: torch.Tensor, priors: torch.Tensor, min_score: float,
                      max_faces: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's network outputs → (boxes (n, 4) as x1, y1, x2, y2 fractions of the photo, scores (n,)).

    SSD's centre-size decoding with the IR's variances, then non-maximum suppression at the IR's overlap (the
    DetectionOutput layer: top 400 candidates into NMS, at most 200 kept).
    """
    keep = scores >= min_score
    loc, scores, priors = loc[keep], scores[keep], priors[keep]
    if len(scores) > TOP_K:
        top = torch.sort(scores, descending=True, stable=True).indices[:TOP_K]
        loc, scores, priors = loc[top], scores[top], priors[top]
    cx = priors[:, 0] + loc[:, 0] * VARIANCE[0] * priors[:, 2]
    cy = priors[:, 1] + loc[:, 1] * VARIANCE[1] * priors[:, 3]
    w = priors[:, 2] * torch.exp(loc[:, 2] * VARIANCE[2])
    h = priors[:, 3] * torch.exp(loc[:, 3] * VARIANCE[3])
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
    kept = suppress_overlaps(boxes, scores, NMS_IOU)[:max_faces]
    return boxes[kept], scores[kept]


def suppress_overlaps(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the boxes kept, most confident first.

    Written out (a few hundred candidates at most) rather than imported from torchvision, whose import alone
    costs more than a whole detection and would slow every `oneshot identify` start.
    """
    # stable: among equally confident boxes (saturated scores of 1.0 are common) the earlier prior wins, as in the
    # IR's DetectionOutput
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes = boxes[order]
    area = (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (bottom_right - top_left).clamp_min(0).prod(-1)
    overlap = inter / (area[:, None] + area[None, :] - inter).clamp_min(1e-12)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    kept = []
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= overlap[i] > iou
    return order[torch.tensor(kept, dtype=torch.long)]
