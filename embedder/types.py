"""Types shared by detection, alignment and the application, kept free of torch so they import fast."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Face:
    """One detected face, in the pixel coordinates of the (EXIF-transposed) photo.

    Landmarks follow the order of the MTCNN teacher's labels: image-left eye, image-right eye, nose tip,
    image-left mouth corner, image-right mouth corner.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...]

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)
