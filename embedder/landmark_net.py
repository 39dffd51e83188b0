"""The landmark network: a square crop around one detected face → its 5 landmarks (like MTCNN's O-Net stage).

Why a separate network: the detector predicts landmarks for every cell of a whole photo, so its landmark error
carries wherever the face fell on the grid and whatever size it had, and refining by re-running the detector on
crops costs two full detector passes per face. A dedicated net sees every face at one canonical size, centred by
the detector's box, and only has to answer one question; at 64 px it costs a fraction of a millisecond per crop.

Conventions (same as `embedder.types.Face` and the teacher's `landmarks.csv`): landmark order image-left eye,
image-right eye, nose, image-left mouth corner, image-right mouth corner. Coordinates are continuous (pixel i
covers [i, i+1)); "crop units" put the crop's left/top edge at 0 and its right/bottom edge at 1, so they do not
depend on the crop's pixel size.

The crop region (`crop_region`) is a square centred on the box with side `margin × max(w, h)`: square so the
face keeps its shape whatever the box's aspect, with a margin so a box that is a little off still contains the
whole face. `to_photo` / `to_crop` map points between crop units and photo pixels; training
(`train.train_landmarks`) and inference (`embedder.detector`) use the same conventions and helpers.

This module imports torch: import it lazily from code on the CLI's start-up path.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from embedder.model import count_parameters  # noqa: F401  (re-exported for train/ and tests)

FLIP_ORDER = [1, 0, 2, 4, 3]  # mirror: image-left ↔ image-right eye and mouth corner

# Mean landmark positions in crop units for margin 1.4 (measured on the training crops): the head's output bias
# starts there, so the first steps learn corrections instead of where a face is.
MEAN_LANDMARKS_AT_1_4 = ((0.375, 0.424), (0.625, 0.424), (0.500, 0.570), (0.387, 0.679), (0.613, 0.679))

Points = TypeVar("Points", np.ndarray, torch.Tensor)


@dataclass
class LandmarkConfig:
    """Everything needed to rebuild the network and to cut its crops; saved beside the weights."""

    input_size: int = 64                       # crop side in pixels
    widths: tuple[int, ...] = (16, 32, 48, 96)  # one stride-2 stage per width: 64 → 32 → 16 → 8 → 4
    hidden: int = 128                          # width of the head's hidden layer
    margin: float = 1.4                        # crop side / max(box w, box h)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LandmarkConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LandmarkNet(nn.Module):
    """Crops (N, 3, S, S) float in [0, 1] → landmarks (N, 5, 2) in crop units.

    Plain conv-BN-ReLU stages (a stride-2 conv, then a stride-1 conv), because on one CPU thread at 64 px full 3×3
    convolutions are cheap and precise; the head flattens the last 4×4 map instead of pooling it, since *where* a
    feature is is exactly what a landmark regressor needs.
    """

    def __init__(self, config: LandmarkConfig | None = None) -> None:
        super().__init__()
        self.config = config or LandmarkConfig()
        c = self.config
        layers: list[nn.Module] = []
        cin = 3
        for width in c.widths:
            layers += [conv_bn_relu(cin, width, 2), conv_bn_relu(width, width, 1)]
            cin = width
        self.features = nn.Sequential(*layers)
        side = c.input_size // 2 ** len(c.widths)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(cin * side * side, c.hidden), nn.ReLU(inplace=True), nn.Linear(c.hidden, 10)
        )
        out = self.head[-1]
        assert isinstance(out, nn.Linear)
        nn.init.normal_(out.weight, std=1e-3)
        with torch.no_grad():
            out.bias.copy_(self.mean_landmarks().flatten())

    def mean_landmarks(self) -> torch.Tensor:
        """A typical face's landmarks in crop units for this config's margin (5, 2)."""
        mean = torch.tensor(MEAN_LANDMARKS_AT_1_4)
        return 0.5 + (mean - 0.5) * 1.4 / self.config.margin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x - 0.5)).view(-1, 5, 2)



# ------------------------------------------------------------------------------------------------ geometry

def crop_region(box: np.ndarray | torch.Tensor | tuple[float, ...] | list[float], margin: float) -> np.ndarray:
    """Box(es) (..., 4) x1 y1 x2 y2 → square crop region(s) (..., 3): left x, top y, side, in photo pixels.

    Centred on the box's centre with side `margin × max(w, h)`: a detector box is centred on the face but its
    size and aspect vary, so the square keeps the face undistorted and the margin keeps it whole."""
    b = np.asarray(box, dtype=np.float64)
    side = margin * np.maximum(b[..., 2] - b[..., 0], b[..., 3] - b[..., 1])
    return np.stack([(b[..., 0] + b[..., 2] - side) / 2, (b[..., 1] + b[..., 3] - side) / 2, side], -1)


def to_photo(points: Points, region: Points) -> Points:
    """Crop-unit points (..., 5, 2) of crop region(s) (..., 3) → photo pixels. Works on numpy and torch alike."""
    return points * region[..., None, 2:3] + region[..., None, 0:2]


def to_crop(points: Points, region: Points) -> Points:
    """Photo-pixel points (..., 5, 2) → crop units of region(s) (..., 3); the inverse of `to_photo`."""
    return (points - region[..., None, 0:2]) / region[..., None, 2:3]


def inter_ocular(points: Points) -> Points:
    """Distance between the two eyes (...,): the normaliser of the landmark error (NME)."""
    d = points[..., 0, :] - points[..., 1, :]
    return (d**2).sum(-1) ** 0.5
