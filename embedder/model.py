"""The face embedding network: aligned 112×112 RGB crop → L2-normalised vector.

A small ResNet chosen for 2 CPU cores. Faces are aligned, so position carries identity information: the head
flattens the last feature map (instead of global pooling) into a linear layer, as face-recognition ResNets do.
The head ends in BatchNorm before the L2 normalisation: batch-hard triplet loss from scratch otherwise collapses
every embedding to one point within a few steps, and the BatchNorm keeps the output spread out per dimension.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class EmbedderConfig:
    """Everything needed to rebuild the network; saved beside the weights."""

    input_size: int = 96           # the network resizes the 112×112 aligned crop to this first (CPU budget)
    widths: tuple[int, ...] = (32, 64, 128, 256)
    depths: tuple[int, ...] = (2, 3, 3, 2)
    dim: int = 128
    dropout: float = 0.2

    @property
    def feature_side(self) -> int:
        """Side of the last feature map, which the head reads position by position (stem and each later stage
        halve the input)."""
        return self.input_size // 2 // (2 ** (len(self.widths) - 1))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "EmbedderConfig":
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**fields)


class BasicBlock(nn.Module):
    """Pre-activation-free residual block (conv-BN-ReLU-conv-BN + shortcut), as in ResNet-18."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class EmbeddingNet(nn.Module):
    """uint8-range or [0, 1] RGB crops (N, 3, H, W) → (N, dim) unit vectors."""

    def __init__(self, config: EmbedderConfig | None = None) -> None:
        super().__init__()
        self.config = config or EmbedderConfig()
        c = self.config
        self.stem = nn.Sequential(
            nn.Conv2d(3, c.widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(c.widths[0]), nn.ReLU(inplace=True)
        )
        stages = []
        cin = c.widths[0]
        for i, (width, depth) in enumerate(zip(c.widths, c.depths)):
            for j in range(depth):
                stride = 2 if (j == 0 and i > 0) else 1
                stages.append(BasicBlock(cin, width, stride))
                cin = width
        self.stages = nn.Sequential(*stages)
        side = c.feature_side
        self.head = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.Dropout(c.dropout),
            nn.Flatten(),
            nn.Linear(cin * side * side, c.dim, bias=False),
            nn.BatchNorm1d(c.dim),
        )
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The head's output before normalisation (used by distillation)."""
        return self.trunk(to_input_size(x, self.config.input_size))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Crops already at the input size → head output: the part without shape-dependent steps, which
        `embedder.int8` traces and quantises."""
        x = (x - self.mean) / self.std
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(x), dim=1)


def to_input_size(x: torch.Tensor, size: int) -> torch.Tensor:
    """112×112 aligned crops → the network's input size (bilinear, as in training)."""
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=False, align_corners=False)


def embed(model: nn.Module, x: torch.Tensor, mirror: bool = True) -> torch.Tensor:
    """(N, 3, H, W) crops in [0, 1] → (N, dim) float32 unit vectors, as the product computes them: with `mirror`,
    the normalised sum of each crop's and its mirror image's embeddings (insensitive to which side of the face the
    light came from), crops and mirrors in one batch, which on one CPU thread costs ~1.3× a single pass rather
    than 2×. `model` is an `EmbeddingNet` or its int8 form (`embedder.int8.Int8EmbeddingNet`). One function for
    the product and the evaluation, so held-out numbers measure exactly what users get."""
    out = model(torch.cat([x, torch.flip(x, dims=[3])]) if mirror else x).float()
    return mirror_sum(out) if mirror else out


def mirror_sum(out: torch.Tensor) -> torch.Tensor:
    """(2N, dim) unit vectors of N crops followed by their N mirror images → (N, dim): the normalised sum of each
    pair. The product's rule, shared with training (`--mirror-loss`) so both combine the two passes alike."""
    n = len(out) // 2
    return F.normalize(out[:n] + out[n:], dim=1)


def from_saved(saved: dict) -> EmbeddingNet:
    """A saved model — the shipped float16 weights or a training checkpoint, both {"config", "model", ...} — as a
    float32 network (eval mode is the caller's choice: training continues from it too)."""
    model = EmbeddingNet(EmbedderConfig.from_dict(saved["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in saved["model"].items()})
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
