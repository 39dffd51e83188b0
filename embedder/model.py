"""The face embedding network: aligned 128×128 face → L2-normalised vector.

A torch port of Intel's face-reidentification-retail-0095 (Open Model Zoo, Apache-2.0; licence and notice in
`embedder/weights/LICENSE` and `NOTICE`): a MobileNetV2-style network (inverted residual blocks with depthwise
convolutions, PReLU, squeeze-and-excitation gates) ending in a global depthwise convolution and a 256-d linear
layer. `train/convert_openvino.py` reads the IR files into this module's state dict (tests/test_port.py checks
the port against the openvino runtime); `train/finetune.py` fine-tunes it with the triplet loss.

Input: (N, 3, 128, 128) BGR in 0–255, aligned by `embedder.align` onto `TEMPLATE_128`. Output: (N, 256)
unit vectors; faces are compared by Euclidean distance between them (`embedder.distance`).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from embedder.layers import ChannelAffine, conv

INPUT_SIZE = 128
DIM = 256
# (input channels, expanded channels, output channels, stride, how many) of each run of inverted residual blocks
BLOCKS = ((64, 128, 64, 2, 1), (64, 128, 64, 1, 4),
          (64, 256, 128, 2, 1), (128, 256, 128, 1, 6),
          (128, 512, 128, 2, 1), (128, 256, 128, 1, 2))


class SqueezeExcite(nn.Module):
    """Channel gates from the globally pooled features (reduction 8, PReLU, sigmoid)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // 8, 1)
        self.act = nn.PReLU()
        self.expand = nn.Conv2d(channels // 8, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.expand(self.act(self.reduce(F.adaptive_avg_pool2d(x, 1)))))
        return x * gate


class InvertedResidual(nn.Module):
    """1×1 expand → 3×3 depthwise (stride) → 1×1 project → squeeze-excite, plus the input when shapes allow."""

    def __init__(self, cin: int, expanded: int, cout: int, stride: int) -> None:
        super().__init__()
        self.expand = conv(cin, expanded, 1)
        self.expand_act = nn.PReLU()
        self.depthwise = conv(expanded, expanded, 3, stride, groups=expanded)
        self.depthwise_act = nn.PReLU()
        self.project = conv(expanded, cout, 1)
        self.gate = SqueezeExcite(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.depthwise_act(self.depthwise(self.expand_act(self.expand(x))))
        out = self.gate(self.project(out))
        return x + out if self.residual else out


class FaceEmbeddingNet(nn.Module):
    """Aligned 128×128 BGR face → (N, dim) embedding (not normalised: `embed` normalises).

    `head_dim` > 0 adds a linear projection of the 256-d output to that many dimensions: the triplet-trained head
    that `train/finetune.py` can put on top of the port (0: the port's own 256-d output).
    """

    def __init__(self, head_dim: int = 0) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.input_norm = ChannelAffine(3)
        self.stem = nn.Sequential(conv(3, 64, 3, 2), nn.PReLU(),                      # 128 → 64
                                  conv(64, 64, 3, groups=64), nn.PReLU())
        self.blocks = nn.Sequential(*[InvertedResidual(cin if i == 0 else cout, expanded, cout, stride if i == 0 else 1)
                                      for cin, expanded, cout, stride, n in BLOCKS for i in range(n)])
        # 8×8 map → 512 channels → one global depthwise 8×8 filter per channel → 256-d linear output
        self.head = nn.Sequential(conv(128, 512, 1), nn.PReLU(), nn.Conv2d(512, 512, 8, groups=512),
                                  nn.Conv2d(512, DIM, 1, bias=False))
        self.projection = nn.Linear(DIM, head_dim, bias=False) if head_dim else None

    @property
    def dim(self) -> int:
        return self.head_dim or DIM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.blocks(self.stem(self.input_norm(x)))).flatten(1)
        return self.projection(out) if self.projection is not None else out


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Aligned faces → unit vectors (the product's and the evaluation's single definition of an embedding)."""
    return F.normalize(model(x), dim=1)
