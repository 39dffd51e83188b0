"""Batch augmentation on tensors (no per-image PIL work): the only affordable kind on 2 CPU cores.

One random affine warp per image (small rotation, scale, shift, horizontal flip) that also resamples the 112×112
crop to the network's input size, then photometric jitter, occasional grayscale and low-resolution blur
(CelebA's small crops and door cameras are both blurry), and optionally (`lighting`) the light a door meets that
the training photos rarely show: exposure curves, colour casts, light from one side and sensor noise.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F


def augment(images: torch.Tensor, out_size: int, generator: torch.Generator, erase: float = 0.0,
            lighting: bool = False) -> torch.Tensor:
    """images: (N, 3, 112, 112) float in [0, 1] → (N, 3, out, out) augmented.

    `erase`: the share of images that get one random rectangle (4–25 % of the area) painted a flat grey, as a
    hand, a scarf or a door-frame would hide part of a face. The distillation target stays the teacher's vector of
    the whole face, so the network must infer identity from what remains instead of memorising one patch.
    `lighting`: also `_relight` every image (off by default, so earlier recipes replay exactly).
    """
    n = images.shape[0]

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        """One draw per image (of `shape` values each) from [lo, hi)."""
        return lo + (hi - lo) * torch.rand(n, *shape, generator=generator)

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
    if lighting:
        x = _relight(x, uniform, generator)
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


def _relight(x: torch.Tensor, uniform: Callable[..., torch.Tensor], generator: torch.Generator) -> torch.Tensor:
    """Light the training photos rarely show: CelebA and FIW are mostly frontally lit, well exposed snapshots, while a
    door camera sees backlight, a lamp to one side, tungsten or fluorescent white balance and dark-frame noise. The
    identity is unchanged, so the triplet and distillation targets stay those of the clean photo.

    Per image: a gamma curve (exposure, exp(±0.4)), per-channel gains (colour cast, ±12 %), for 40 % a brightness
    ramp along a random direction (side light, up to ±50 % across the face), for 25 % Gaussian noise (σ 1–5 %)."""
    n, _, h, w = x.shape
    x = x.clamp(0.0, 1.0) ** torch.exp(uniform(-0.4, 0.4)).view(n, 1, 1, 1)
    x = x * uniform(0.88, 1.12, 3).view(n, 3, 1, 1)
    direction = uniform(0.0, 2 * math.pi).view(n, 1, 1)
    strength = uniform(0.0, 0.5) * (torch.rand(n, generator=generator) < 0.4)
    rows = torch.linspace(-1.0, 1.0, h).view(1, h, 1)
    cols = torch.linspace(-1.0, 1.0, w).view(1, 1, w)
    ramp = torch.cos(direction) * cols + torch.sin(direction) * rows            # (N, H, W), −1.4 … 1.4
    x = x * (1 + strength.view(n, 1, 1) * ramp).unsqueeze(1)
    sigma = uniform(0.01, 0.05) * (torch.rand(n, generator=generator) < 0.25)
    return x + sigma.view(n, 1, 1, 1) * torch.randn(x.shape, generator=generator)
