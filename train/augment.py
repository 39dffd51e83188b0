"""Batch augmentation on tensors (no per-image PIL work): the only affordable kind on 2 CPU cores.

One random affine warp per image (small rotation, scale, shift, horizontal flip) that also resamples the 112×112
crop to the network's input size, then photometric jitter, occasional grayscale and low-resolution blur
(CelebA's small crops and door cameras are both blurry).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment(images: torch.Tensor, out_size: int, generator: torch.Generator) -> torch.Tensor:
    """images: (N, 3, 112, 112) float in [0, 1] → (N, 3, out, out) augmented."""
    n = images.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    angle = uniform(-10, 10) * math.pi / 180
    scale = uniform(0.9, 1.1)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    tx, ty = uniform(-0.06, 0.06), uniform(-0.06, 0.06)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    )
    grid = F.affine_grid(theta, [n, 3, out_size, out_size], align_corners=False)
    x = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    # Low resolution: shrink to 35–70 % and back for a quarter of the batch.
    low = torch.rand(n, generator=generator) < 0.25
    if low.any():
        factor = float(uniform(0.35, 0.7)[0])
        small = F.interpolate(x[low], scale_factor=factor, mode="bilinear", antialias=True, align_corners=False)
        x[low] = F.interpolate(small, size=(out_size, out_size), mode="bilinear", align_corners=False)

    # Brightness, contrast, saturation.
    gray = x.mean(dim=1, keepdim=True)
    sat = uniform(0.6, 1.4).view(n, 1, 1, 1)
    x = gray + (x - gray) * sat
    contrast = uniform(0.7, 1.3).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * contrast
    x = x * uniform(0.7, 1.3).view(n, 1, 1, 1)
    to_gray = torch.rand(n, generator=generator) < 0.1
    x[to_gray] = x[to_gray].mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    return x.clamp_(0.0, 1.0)
