"""The face detector network: a small single-stage, anchor-free (CenterNet-style) detector for the CPU.

Why this shape:
- Faces range from ~12 px to the whole working image, so there are three output levels (strides 8, 16, 32) fed
  by a light top-down feature pyramid; each face is the responsibility of the level(s) whose scale range holds
  its size (`LEVEL_RANGES`), so no level has to regress sizes spanning two orders of magnitude.
- Anchor-free heads: per cell, one face-centre logit (trained as a Gaussian heat map), a box (centre offset and
  log size in stride units) and 5 landmarks (offsets from the cell, in units of the box size). No anchors means
  no anchor tuning and a trivially simple decoder.
- The backbone is made of inverted-residual blocks (1×1 expand, depthwise k×k, 1×1 project) because depthwise
  convolutions give a large receptive field for very few multiply-adds, which is what one CPU thread can afford;
  the deepest stage uses 5×5 depthwise kernels so the stride-32 cells see whole large faces.

The module only defines the network and its level layout (decoding lives in `embedder.detector.decode`, the
matching training targets in `train.train_detector.build_targets`); it imports torch, so import it lazily.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from embedder.model import count_parameters  # noqa: F401  (re-exported for train/ and tests)

STRIDES: tuple[int, ...] = (8, 16, 32)
# Face size (max side of the teacher's box, in network-input pixels) each level is trained on; the ranges
# overlap so that a face near a boundary has two chances and NMS merges the duplicates.
LEVEL_RANGES: tuple[tuple[float, float], ...] = ((0.0, 56.0), (40.0, 128.0), (96.0, 1e9))
# Per cell: 1 score logit + 4 box values (dx, dy, log w, log h) + 10 landmark values.
HEAD_OUTPUTS = 15


@dataclass
class DetectorConfig:
    """Architecture hyper-parameters, stored in the weights file so inference rebuilds the same network."""

    widths: tuple[int, ...] = (16, 24, 48, 96, 160)  # stem, stride 4, 8, 16, 32
    depths: tuple[int, ...] = (1, 2, 2, 2)  # blocks at stride 4, 8, 16, 32
    fpn_width: int = 64
    head_depth: int = 2
    expand: int = 2
    strides: tuple[int, ...] = field(default=STRIDES)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DetectorConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: cheap depthwise spatial mixing between 1×1 channel mixes; residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, k: int = 3) -> None:
        super().__init__()
        hidden = cin * expand
        self.block = nn.Sequential(
            conv_bn(cin, hidden, 1),
            conv_bn(hidden, hidden, k, stride, groups=hidden),
            conv_bn(hidden, cout, 1, act=False),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class SeparableConv(nn.Module):
    """Depthwise 3×3 + pointwise 1×1: a full 3×3 conv's receptive field at a fraction of the cost."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.dw = conv_bn(cin, cin, 3, groups=cin)
        self.pw = conv_bn(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class FaceDetectorNet(nn.Module):
    """Image (N, 3, H, W) in 0..1, H and W multiples of 32 → one (N, 15, H/s, W/s) map per stride s."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__()
        self.config = config or DetectorConfig()
        c = self.config
        w0, w4, w8, w16, w32 = c.widths
        self.stem = conv_bn(3, w0, 3, 2)
        stages = []
        cin = w0
        for i, (cout, depth) in enumerate(zip((w4, w8, w16, w32), c.depths)):
            k = 5 if i >= 2 else 3
            blocks = [InvertedResidual(cin, cout, 2, c.expand, k)]
            blocks += [InvertedResidual(cout, cout, 1, c.expand, k) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.lateral = nn.ModuleList([conv_bn(ch, c.fpn_width, 1) for ch in (w8, w16, w32)])
        self.smooth = nn.ModuleList([SeparableConv(c.fpn_width, c.fpn_width) for _ in range(3)])
        # One head shared by all levels: a face looks the same at every scale once features are normalised,
        # and sharing triples the training signal per head weight.
        self.head = nn.Sequential(*[SeparableConv(c.fpn_width, c.fpn_width) for _ in range(c.head_depth)])
        self.out = nn.Conv2d(c.fpn_width, HEAD_OUTPUTS, 1)
        self.level_embed = nn.Parameter(torch.zeros(3, c.fpn_width, 1, 1))
        nn.init.normal_(self.out.weight, std=0.01)
        nn.init.zeros_(self.out.bias)
        # Start the score near the face prior (~1 %), so the first steps are not spent unlearning false positives.
        with torch.no_grad():
            self.out.bias[0] = -4.6

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x - 0.5)
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= 1:
                feats.append(x)  # strides 8, 16, 32
        p32 = self.lateral[2](feats[2])
        p16 = self.lateral[1](feats[1]) + F.interpolate(p32, size=feats[1].shape[-2:], mode="nearest")
        p8 = self.lateral[0](feats[0]) + F.interpolate(p16, size=feats[0].shape[-2:], mode="nearest")
        outs = []
        for i, p in enumerate((p8, p16, p32)):
            h = self.head(self.smooth[i](p) + self.level_embed[i])
            outs.append(self.out(h))
        return outs

