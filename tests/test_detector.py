"""The face finder: prior boxes and decoding (no data needed), the main-face rule, landmarks, and real photos.

The real-photo tests read celeba-wild (skipping, saying why, without the datasets); the accuracy and speed numbers
themselves are benchmarks/detector.py's.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from embedder.detector import detect_faces, landmark_region, main_face_first
from embedder.detector_net import GRID, decode_detections, prior_boxes
from embedder.types import Face
from tests.data import wild_rows

pytestmark = pytest.mark.usefixtures("one_thread")


def face(box: tuple[float, float, float, float], score: float) -> Face:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    marks = ((x1 + 0.3 * w, y1 + 0.4 * h), (x1 + 0.7 * w, y1 + 0.4 * h), (x1 + 0.5 * w, y1 + 0.6 * h),
             (x1 + 0.35 * w, y1 + 0.8 * h), (x1 + 0.65 * w, y1 + 0.8 * h))
    return Face(box=box, score=score, landmarks=marks)


def test_priors_tile_the_grid_row_by_row_with_nine_shapes_per_cell() -> None:
    priors = prior_boxes()
    assert priors.shape == (GRID * GRID * 9, 4)
    assert torch.allclose(priors[0, :2], torch.tensor([8 / 300, 8 / 300]))
    assert torch.allclose(priors[9, :2], torch.tensor([24 / 300, 8 / 300]))        # next cell: one step right
    assert torch.allclose(priors[GRID * 9, :2], torch.tensor([8 / 300, 24 / 300]))  # next row: one step down
    assert len(set(priors[:9, 2].tolist())) == 9


def test_zero_offsets_decode_to_the_priors_and_overlaps_are_suppressed() -> None:
    priors = prior_boxes()
    loc = torch.zeros(len(priors), 4)
    scores = torch.zeros(len(priors))
    scores[100], scores[109], scores[2000] = 0.9, 0.8, 0.7      # 100 and 109: same shape, neighbouring cells
    boxes, kept = decode_detections(loc, scores, priors, min_score=0.5)
    p = priors[100]
    assert torch.allclose(boxes[0], torch.stack([p[0] - p[2] / 2, p[1] - p[3] / 2, p[0] + p[2] / 2, p[1] + p[3] / 2]))
    assert kept.tolist() == pytest.approx([0.9, 0.8, 0.7]) or kept.tolist() == pytest.approx([0.9, 0.7])
    loc[100, 2:] = torch.log(torch.tensor(2.0)) / 0.2                # width and height doubled
    boxes, _ = decode_detections(loc, scores, priors, min_score=0.85)
    assert torch.allclose(boxes[0, 2] - boxes[0, 0], 2 * priors[100, 2])


def test_a_large_half_believed_box_never_beats_a_confident_face() -> None:
    bag = face((0, 0, 300, 300), 0.55)
    person = face((400, 100, 480, 200), 0.99)
    bystander = face((10, 10, 40, 50), 0.97)
    ordered = main_face_first([bag, bystander, person])
    assert ordered[0] is person and ordered[1:] == [bag, bystander]


def test_of_two_confident_faces_the_nearer_one_is_the_subject() -> None:
    near, far = face((100, 100, 300, 320), 0.93), face((400, 50, 450, 110), 0.999)
    assert main_face_first([far, near])[0] is near
    assert main_face_first([]) == []


def test_landmark_crop_is_the_enlarged_box_clipped_to_the_photo() -> None:
    assert landmark_region(np.array([100.0, 100.0, 200.0, 200.0]), (640, 480)) == (92, 92, 208, 208)
    assert landmark_region(np.array([0.0, 0.0, 100.0, 100.0]), (80, 60)) == (0, 0, 80, 60)


def test_no_face_in_a_blank_or_noise_photo() -> None:
    assert detect_faces(Image.new("RGB", (640, 480), (128, 128, 128))) == []
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert detect_faces(Image.fromarray(noise)) == []


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


@pytest.mark.slow
def test_finds_the_main_face_and_its_landmarks_in_real_photos() -> None:
    import embedder

    rows = wild_rows(40)
    agree, errors = 0, []
    for row in rows:
        faces = embedder.detect_faces(embedder.load_photo(row["file"]))
        truth = [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
        if faces and iou(faces[0].box, truth) >= 0.5:
            agree += 1
            marks = np.array([[float(row[f"{m}_x"]), float(row[f"{m}_y"])]
                              for m in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")])
            ocular = np.linalg.norm(marks[1] - marks[0])
            errors.append(np.linalg.norm(np.array(faces[0].landmarks) - marks, axis=1).mean() / ocular)
    assert agree >= 0.95 * len(rows)
    assert np.mean(errors) < 0.12            # landmark order and scale right (MTCNN's are labels, not truth)


@pytest.mark.slow
def test_photos_of_several_people_give_several_faces() -> None:
    import embedder

    rows = wild_rows(20, multi_face=True)
    several = sum(len(embedder.detect_faces(embedder.load_photo(row["file"]))) > 1 for row in rows)
    assert several >= 0.5 * len(rows)     # measured: 12 of the first 20 (a frontal-face detector)


def test_suppression_keeps_what_torchvision_keeps() -> None:
    """The product's own NMS (no torchvision import at run time) against torchvision's, on random boxes."""
    from torchvision.ops import nms

    from embedder.detector_net import suppress_overlaps

    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        corner = torch.rand(200, 2, generator=gen) * 0.8
        boxes = torch.cat([corner, corner + torch.rand(200, 2, generator=gen) * 0.3 + 0.01], 1)
        scores = torch.rand(200, generator=gen)
        assert torch.equal(suppress_overlaps(boxes, scores, 0.45), nms(boxes, scores, 0.45))
