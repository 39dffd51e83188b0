"""What the three ported networks (detector, landmarks, embedder) share: building blocks, their input convention
(`bgr_tensor`) and how their shipped weights load (`load_weights`).

The Open Model Zoo networks were exported with their BatchNorms folded: into the convolution that precedes them
(a bias), or, where a BatchNorm precedes a convolution, into a per-channel scale and shift. That scale and shift
cannot be folded into the next convolution exactly (its zero padding would then see the shift), so it stays a
layer of its own here.
"""
from __future__ import annotations

from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn


class ChannelAffine(nn.Module):
    """x · scale + shift, per channel: a folded BatchNorm (or the input normalisation) that sits before a conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


def conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = True) -> nn.Conv2d:
    """A convolution padded to keep the size (at stride 1): padding kernel // 2, as every layer of the IR files."""
    return nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def bgr_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB → (N, 3, H, W) float BGR in 0–255: the input convention of all three networks.

    The tensor keeps the pixels' NHWC memory (a channels-last view of NCHW), the layout the loaded networks use."""
    return torch.from_numpy(np.ascontiguousarray(pixels[..., ::-1])).permute(0, 3, 1, 2).float()


def load_weights(build: Callable[..., nn.Module], path: Path) -> nn.Module:
    """A shipped weights file (`train.convert_openvino` / `train.export`: float16 tensors, and the constructor's
    arguments under "config" where the network has any) → `build(**config)` with them, in eval mode, float32,
    channels-last: oneDNN's CPU convolutions run these networks ~1.4× faster on one thread in that layout
    (benchmarks/speed.py), and `bgr_tensor`'s pixels are laid out that way already. The file is read once."""
    saved: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    module = build(**saved.get("config", {}))
    module.load_state_dict({k: v.float() for k, v in saved["model"].items()})
    return module.eval().to(memory_format=torch.channels_last)
