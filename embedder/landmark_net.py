"""Five facial landmarks from a face crop: a torch port of Intel's landmarks-regression-retail-0009.

Source: Open Model Zoo, `landmarks-regression-retail-0009` (Apache-2.0; licence and notice in
`embedder/weights/LICENSE` and `NOTICE`). `train/convert_openvino.py` reads the IR files into this module's state
dict; tests/test_port.py checks it against the openvino runtime.

Input: (N, 3, 48, 48) BGR in 0–255, the detector's box enlarged 1.15× about its centre and resized. Output:
(N, 5, 2) landmark positions as fractions of that crop: image-left eye, image-right eye, nose tip, image-left
mouth corner, image-right mouth corner (the order of `embedder.types.Face.landmarks`).
"""
from __future__ import annotations

import torch
from torch import nn

from embedder.layers import ChannelAffine

INPUT_SIZE = 48
BOX_ENLARGE = 1.15     # the crop the network was trained on: the detector's box, 1.15× about its centre


class ConvPReLU(nn.Sequential):
    """folded BatchNorm → conv → PReLU with one shared slope, the network's repeated unit."""

    def __init__(self, cin: int, cout: int, kernel: int, padding: int = 1, groups: int = 1) -> None:
        super().__init__(ChannelAffine(cin), nn.Conv2d(cin, cout, kernel, padding=padding, groups=groups), nn.PReLU())


class LandmarkNet(nn.Module):
    """48×48 face crop → 5 landmarks (fractions of the crop)."""

    def __init__(self) -> None:
        super().__init__()
        pool = nn.MaxPool2d(2)
        self.features = nn.Sequential(
            ConvPReLU(3, 16, 3), pool,                 # 48 → 24
            ConvPReLU(16, 32, 3), pool,                # 24 → 12
            ConvPReLU(32, 64, 3), pool,                # 12 → 6
            ConvPReLU(64, 64, 3),
            ConvPReLU(64, 128, 3),
            ConvPReLU(128, 128, 6, padding=0, groups=128),   # depthwise 6×6: one value per channel
            ConvPReLU(128, 256, 1, padding=0),
            ConvPReLU(256, 64, 1, padding=0),
        )
        self.out = nn.Conv2d(64, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.features(x))).view(-1, 5, 2)
