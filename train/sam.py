"""Sharpness-aware minimisation (SAM; Foret et al., ICLR 2021): step with the gradient taken at the worst nearby
weights instead of at the weights themselves.

Why here: every longer or harder fine-tune since session 19 overfitted the 4,813 training people (held-out TAR
falls while training loss keeps dropping). SAM looks for weights whose whole neighbourhood has low loss — flat
minima, which generalise better from few examples — at the price of a second forward and backward pass per step.

One step:  g = ∇L(w);  ε = ρ·g/‖g‖;  g' = ∇L(w + ε);  w ← optimiser(w, g').
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch


@contextmanager
def frozen_batchnorm_statistics(model: torch.nn.Module) -> Iterator[None]:
    """BatchNorm layers keep normalising with the batch but stop updating their running statistics: the second
    (perturbed) pass sees the same batch again, and counting it twice would skew the statistics inference uses."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(layers, saved):
            m.momentum = momentum


def sharpness_aware_gradients(model: torch.nn.Module, rho: float,
                              loss_at_current_weights: Callable[[], torch.Tensor]) -> None:
    """Replace the gradients already in `model` (∇L at w) with ∇L at w + ρ·∇L/‖∇L‖, and leave the weights at w.

    `loss_at_current_weights` recomputes the same batch's loss (same inputs, same augmentation) with whatever
    weights the model holds when it is called."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.norm(torch.stack([p.grad.detach().norm() for p in params]))
    scale = rho / (float(norm) + 1e-12)
    originals = [p.detach().clone() for p in params]  # restored exactly: w + ε − ε is not w in floating point
    with torch.no_grad():
        for p in params:
            p.add_(p.grad, alpha=scale)
    for p in params:
        p.grad = None
    with frozen_batchnorm_statistics(model):
        loss_at_current_weights().backward()
    with torch.no_grad():
        for p, w in zip(params, originals):
            p.copy_(w)
