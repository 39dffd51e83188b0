"""Small building blocks shared by the three ported networks (detector, landmarks, embedder).

The Open Model Zoo networks were exported with their BatchNorms folded: into the convolution that precedes them
(a bias), or, where a BatchNorm precedes a convolution, into a per-channel scale and shift. That scale and shift
cannot be folded into the next convolution exactly (its zero padding would then see the shift), so it stays a
layer of its own here.
"""
from __future__ import annotations

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
