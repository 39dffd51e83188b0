"""Landmark network (issue #4): shapes and budget, crop geometry round trips, the training sampler's labels follow
its pixels, a tiny training run + export on drawn faces (all without data), the detector's use of the network.
The shipped detector + landmark network's error against the teacher on LFW is `test_detector.test_recall_on_lfw_photos`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from embedder.detector import DEFAULT_INFERENCE, landmark_net_refine, run_detector
from embedder.detector_net import FaceDetectorNet
from embedder.landmark_net import (LandmarkConfig, LandmarkNet, count_parameters, crop_region,
                                   to_crop, to_photo)
from train.landmark_crops import load_cache, write_cache
from train.scenes import DrawnFaces
from train.train_landmarks import crop_transforms, cut_crops, landmarks_in_crop

WEIGHTS = Path(__file__).resolve().parent.parent / "embedder" / "weights"


pytestmark = pytest.mark.usefixtures("one_thread")


def drawn_items(n: int, seed: int = 0) -> list[tuple[Image.Image, np.ndarray, np.ndarray, str]]:
    rng = np.random.default_rng(seed)
    source = DrawnFaces(size=int(rng.integers(60, 100)))
    return [(*source.face(rng), f"drawn{i}") for i in range(n)]


@pytest.fixture(scope="module")
def drawn_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("landmark_cache")
    for split, n, seed in (("train", 24, 0), ("val", 8, 1)):
        write_cache(drawn_items(n, seed), n, folder, split, margin=2.2, size=64, progress_every=0)
    return folder


def test_network_shapes_and_budget() -> None:
    config = LandmarkConfig()
    model = LandmarkNet(config).eval()
    with torch.no_grad():
        out = model(torch.rand(3, 3, config.input_size, config.input_size))
    assert out.shape == (3, 5, 2)
    assert count_parameters(model) <= 500_000
    # Before training it answers "a typical face", inside the crop, image-left eye left of the image-right one.
    assert ((out > 0.2) & (out < 0.8)).all() and (out[:, 0, 0] < out[:, 1, 0]).all()
    assert LandmarkConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_crop_region_and_back_mapping_round_trip() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        x1, y1 = rng.uniform(-50, 500, 2)
        box = np.array([x1, y1, x1 + rng.uniform(10, 300), y1 + rng.uniform(10, 300)])
        margin = rng.uniform(1.2, 2.0)
        region = crop_region(box, margin)
        side = margin * max(box[2] - box[0], box[3] - box[1])
        assert region[2] == pytest.approx(side)
        assert region[:2] + side / 2 == pytest.approx([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        points = rng.uniform(box[:2], box[2:], (5, 2))
        units = to_crop(points, region)
        assert ((units > 0) & (units < 1)).all()  # a face inside its box is inside its crop
        assert np.allclose(to_photo(units, region), points)
        t = torch.tensor(units)[None]
        assert torch.allclose(to_photo(t, torch.tensor(region)[None]), torch.tensor(points)[None])


def test_training_crops_labels_follow_the_pixels(drawn_cache: Path) -> None:
    """Drawn eyes are dark: after the jittered, rotated, mirrored crop the eye labels must sit on dark pixels, and the
    image-left eye stays left of the image-right one. The un-jittered crop is exactly the `crop_region` square."""
    images, boxes, marks = load_cache(drawn_cache, "train")
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float() / 255
    size = images.shape[1]
    gen = torch.Generator().manual_seed(0)
    for g in (None, gen, gen):
        theta = crop_transforms(torch.from_numpy(boxes), 1.4, size, g)
        crops = cut_crops(x, theta, 64)
        lm = landmarks_in_crop(theta, torch.from_numpy(marks), size)
        assert (lm[:, 0, 0] < lm[:, 1, 0]).all() and (lm[:, 3, 0] < lm[:, 4, 0]).all()
        for crop, points in zip(crops, lm):
            for u, v in points[:2].tolist():
                assert crop[:, int(v * 64), int(u * 64)].mean() < 0.35
        if g is None:
            expected = to_crop(marks.astype(np.float64), crop_region(boxes, 1.4))
            assert np.allclose(lm.numpy(), expected, atol=1e-5)


def test_tiny_training_run_resume_and_export(drawn_cache: Path, tmp_path: Path) -> None:
    from train.export_landmarks import export
    from train.train_landmarks import main

    out = tmp_path / "run"
    common = ["--cache", str(drawn_cache), "--out", str(out), "--minutes", "0", "--batch", "4", "--warmup", "1",
              "--eval-every", "2", "--precision", "fp32"]
    main(common + ["--steps", "3"])
    assert torch.load(out / "last.pt", map_location="cpu", weights_only=False)["step"] == 3
    main(common + ["--steps", "4", "--resume"])
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert ck["step"] == 4 and 0 < ck["val"]["nme_plain"] < 10
    info = export(out / "last.pt", out=tmp_path / "l.pt", card=tmp_path / "l.json")
    assert info["steps"] == 4 and "train_landmarks" in info["training_command"]
    saved = torch.load(tmp_path / "l.pt", map_location="cpu", weights_only=True)
    model = LandmarkNet(LandmarkConfig.from_dict(saved["config"]))
    model.load_state_dict({k: v.float() for k, v in saved["model"].items()})
    assert json.loads((tmp_path / "l.json").read_text())["steps"] == 4


class FixedAnswer(torch.nn.Module):
    """A stand-in landmark network whose answer, on every crop, is one left/right-symmetric template."""

    def __init__(self) -> None:
        super().__init__()
        self.config = LandmarkConfig()
        self.template = torch.tensor([[0.38, 0.42], [0.62, 0.42], [0.5, 0.57], [0.4, 0.68], [0.6, 0.68]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.template.expand(x.shape[0], 5, 2)


def test_landmark_refinement_maps_crop_units_to_photo_pixels() -> None:
    """Including boxes reaching beyond the photo; mirror-averaging leaves a symmetric answer unchanged."""
    net = FixedAnswer()
    boxes = torch.tensor([[100.0, 50.0, 180.0, 150.0], [-30.0, -20.0, 40.0, 60.0], [600.0, 400.0, 700.0, 520.0]])
    marks = landmark_net_refine(net, Image.new("RGB", (640, 480), (90, 120, 40)), boxes)  # type: ignore[arg-type]
    expected = to_photo(net.template.double().numpy()[None], crop_region(boxes.numpy(), net.config.margin))
    assert marks.shape == (3, 5, 2)
    assert np.abs(marks.numpy() - expected).max() <= 0.6  # the region is snapped to whole pixels


def test_run_detector_refines_with_the_landmark_network() -> None:
    torch.manual_seed(0)
    model = FaceDetectorNet().eval()
    with torch.no_grad():
        model.out.bias[0] = 5.0  # everything is a face
    settings = {**DEFAULT_INFERENCE, "score_threshold": 0.5, "max_faces": 5}
    faces = run_detector(model, settings, Image.new("RGB", (300, 200), (90, 120, 40)))
    assert 1 <= len(faces) <= 5
    assert all(np.isfinite(np.array(f.landmarks)).all() and len(f.landmarks) == 5 for f in faces)


def test_landmark_weights_ship_and_load_safely() -> None:
    assert (WEIGHTS / "landmarks.pt").is_file(), "embedder/weights/landmarks.pt must ship with the package"
    saved = torch.load(WEIGHTS / "landmarks.pt", map_location="cpu", weights_only=True)
    model = LandmarkNet(LandmarkConfig.from_dict(saved["config"]))
    model.load_state_dict({k: v.float() for k, v in saved["model"].items()})
    assert count_parameters(model) <= 500_000
    card = json.loads((WEIGHTS / "landmarks.json").read_text())
    assert card["validation"]["nme_plain"] <= 0.06
