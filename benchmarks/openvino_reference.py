"""The reference pipeline: Intel's three Open Model Zoo networks run as they ship, through the `openvino` runtime.

    python -m benchmarks.openvino_reference PHOTO [PHOTO ...]    # prints each photo's main face and vector norm

This is what the torch port in `embedder/` is compared against (benchmarks/real_photos.py, benchmarks/lfw.py): the
IR files in `../shared/teachers` (see its README), run in float32 (`INFERENCE_PRECISION_HINT: f32`; the CPU plugin
would otherwise pick bf16 on CPUs that have it, and the reference should be the plain network), with the Open
Model Zoo demo's conventions:

- detector face-detection-retail-0004 on the whole photo resized to 300×300 (BGR, 0–255); boxes with confidence
  ≥ 0.5; the **largest** box is the main face (the demo's rule — unlike the product's `main_face_first`);
- landmarks-regression-retail-0009 on that box enlarged 1.15× about its centre, clipped to the photo, resized to
  48×48; its 5 points are fractions of that crop;
- similarity alignment onto the 128×128 template (`embedder.align.align_face`, the product's own function, so the
  crops are byte-identical when the landmarks are);
- face-reidentification-retail-0095 → 256-d vector, L2-normalised.

Resizing uses Pillow's bilinear filter, as the product's port does (the demo uses OpenCV's, which does not
antialias when shrinking; OpenCV is not a dependency here). `openvino` is a benchmark-only dependency.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from embedder.align import align_face
from embedder.detector import landmark_region
from embedder.photo import load_photo
from train.data_paths import teachers_root

DETECTOR = "face-detection-retail-0004"
LANDMARKS = "landmarks-regression-retail-0009"
EMBEDDER = "face-reidentification-retail-0095"
DETECTOR_SIZE = 300
LANDMARK_SIZE = 48
MIN_CONFIDENCE = 0.5

Box = tuple[float, float, float, float]


def bgr_batch(images: Sequence[Image.Image]) -> np.ndarray:
    """RGB images of one size → the networks' (N, 3, H, W) BGR 0–255 input (`embedder.layers.bgr_tensor`), as the
    contiguous float32 array openvino takes."""
    from embedder.layers import bgr_tensor

    pixels = np.stack([np.asarray(image.convert("RGB"), dtype=np.uint8) for image in images])
    return np.ascontiguousarray(bgr_tensor(pixels).numpy())


def largest(boxes: Sequence[Box]) -> Box | None:
    """The Open Model Zoo demo's main face: the box with the largest area (None when there is none)."""
    if not boxes:
        return None
    return max(boxes, key=lambda b: max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]))


class OpenVinoReference:
    """Photo → main face → 256-d unit vector, through the unmodified IR networks.

    `threads` pins the CPU plugin's thread count (1 for per-face timing); None lets openvino choose.
    """

    def __init__(self, teachers: Path | None = None, threads: int | None = None) -> None:
        import openvino as ov

        root = teachers if teachers is not None else teachers_root()
        if root is None:
            raise FileNotFoundError("no teachers folder: set $ONESHOT_TEACHERS or put it in ../shared/teachers")
        core = ov.Core()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads

        def compile_net(name: str, dynamic_batch: bool = False) -> Any:
            model = core.read_model(root / name / f"{name}.xml")
            if dynamic_batch:
                # Batches of aligned crops make the bulk LFW embedding several times faster than one by one.
                shape = model.inputs[0].get_partial_shape()
                shape[0] = -1
                model.reshape({model.inputs[0]: shape})
            return core.compile_model(model, "CPU", config)

        self.detector = compile_net(DETECTOR)
        self.landmark_net = compile_net(LANDMARKS)
        self.embedder = compile_net(EMBEDDER, dynamic_batch=True)

    # -- the three networks ----------------------------------------------------------------------------------

    def detect(self, image: Image.Image) -> list[tuple[Box, float]]:
        """Every box with confidence ≥ MIN_CONFIDENCE, in photo pixels clipped to the photo, with its confidence."""
        w, h = image.size
        resized = image.convert("RGB").resize((DETECTOR_SIZE, DETECTOR_SIZE), Image.Resampling.BILINEAR)
        rows = self.detector(bgr_batch([resized]))[self.detector.output(0)].reshape(-1, 7)
        faces = []
        for image_id, _label, confidence, x1, y1, x2, y2 in rows:
            if image_id < 0:            # the SSD output's end marker
                break
            if confidence < MIN_CONFIDENCE:
                continue
            box = (float(np.clip(x1, 0, 1) * w), float(np.clip(y1, 0, 1) * h),
                   float(np.clip(x2, 0, 1) * w), float(np.clip(y2, 0, 1) * h))
            if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
                faces.append((box, float(confidence)))
        return faces

    def landmarks(self, image: Image.Image, box: Box) -> np.ndarray:
        """(5, 2) landmarks in photo pixels for the face in `box`."""
        region = landmark_region(np.asarray(box), image.size)      # the IR's 1.15× crop, as the product
        crop = image.convert("RGB").crop(region).resize((LANDMARK_SIZE, LANDMARK_SIZE), Image.Resampling.BILINEAR)
        fractions = self.landmark_net(bgr_batch([crop]))[self.landmark_net.output(0)].reshape(5, 2)
        left, top, right, bottom = region
        return np.array([left, top], np.float64) + fractions.astype(np.float64) * [right - left, bottom - top]

    def embed_aligned(self, crop: Image.Image) -> np.ndarray:
        """One aligned 128×128 crop → (256,) unit vector."""
        return self.embed_aligned_batch([crop])[0]

    def embed_aligned_batch(self, crops: Sequence[Image.Image]) -> np.ndarray:
        """Aligned 128×128 crops → (n, 256) float32 unit vectors."""
        if not crops:
            return np.zeros((0, 256), np.float32)
        raw = self.embedder(bgr_batch(crops))[self.embedder.output(0)].reshape(len(crops), -1)
        return (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)

    # -- the pipeline ----------------------------------------------------------------------------------------

    def main_face_landmarks(self, image: Image.Image) -> np.ndarray | None:
        """The largest face's 5 landmarks, or None when the detector finds no face."""
        box = largest([b for b, _ in self.detect(image)])
        return None if box is None else self.landmarks(image, box)

    def aligned_crop(self, image: Image.Image, landmarks: np.ndarray | None = None) -> Image.Image | None:
        """The main face aligned onto the 128×128 template; `landmarks` given (e.g. LFW's landmarks.csv) skip
        detection. None when no face is found."""
        points = self.main_face_landmarks(image) if landmarks is None else landmarks
        return None if points is None else align_face(image, points)

    def embed_photo(self, path: str | Path, landmarks: np.ndarray | None = None) -> np.ndarray | None:
        """The photo's main face as a unit vector, None when no face is found. With `landmarks` (5×2 pixels) the
        detector and landmark networks are skipped: the variant for LFW's landmarks.csv."""
        crop = self.aligned_crop(load_photo(path), landmarks)
        return None if crop is None else self.embed_aligned(crop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="+", type=Path)
    args = parser.parse_args()
    reference = OpenVinoReference()
    for path in args.photos:
        image = load_photo(path)
        faces = reference.detect(image)
        vector = reference.embed_photo(path)
        main_box = largest([b for b, _ in faces])
        shown = "no face" if main_box is None else f"main face {[round(v, 1) for v in main_box]}"
        norm = "" if vector is None else f", vector norm {np.linalg.norm(vector):.4f}"
        print(f"{path}: {len(faces)} face(s), {shown}{norm}")


if __name__ == "__main__":
    main()
