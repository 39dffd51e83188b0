"""Batch augmentation on tensors (no per-image PIL work): the only affordable kind on 2 CPU cores.

One random affine warp per image (small rotation, scale, shift, horizontal flip) that also resamples the 112×112
crop to the network's input size, then photometric jitter, occasional grayscale and low-resolution blur
(CelebA's small crops and door cameras are both blurry).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment(images: torch.Tensor, out_size: int, generator: torch.Generator, erase: float = 0.0) -> torch.Tensor:
    """images: (N, 3, 112, 112) float in [0, 1] → (N, 3, out, out) augmented.

    `erase`: the share of images that get one random rectangle (4–25 % of the area) painted a flat grey, as a
    hand, a scarf or a door-frame would hide part of a face. The distillation target stays the teacher's vector of
    the whole face, so the network must infer identity from what remains instead of memorising one patch.
    """
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
    if erase > 0:
        x = _erase(x, torch.rand(n, generator=generator) < erase, generator)
    return x.clamp_(0.0, 1.0)


def _erase(x: torch.Tensor, chosen: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Paint one rectangle per chosen image a random flat grey (vectorised: a mask from coordinate comparisons)."""
    n, _, h, w = x.shape
    area = 0.04 + 0.21 * torch.rand(n, generator=generator)
    aspect = torch.exp((torch.rand(n, generator=generator) - 0.5) * 2 * math.log(2.0))  # 1/2 … 2
    eh = (area * aspect).sqrt().clamp(max=1.0) * h
    ew = (area / aspect).sqrt().clamp(max=1.0) * w
    top = torch.rand(n, generator=generator) * (h - eh)
    left = torch.rand(n, generator=generator) * (w - ew)
    rows = torch.arange(h, dtype=x.dtype).view(1, h, 1)
    cols = torch.arange(w, dtype=x.dtype).view(1, 1, w)
    inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
              & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1)) & chosen.view(n, 1, 1))
    grey = torch.rand(n, generator=generator).view(n, 1, 1, 1)
    return torch.where(inside.unsqueeze(1), grey, x)
