"""The shipped embedder and its alignment: loads from the package, gives unit vectors, its card matches its
weights, and on real faces the same person is closer than a stranger.

Everything but the last test needs no datasets (the weights ship in git), so it never skips. Accuracy is
measured in benchmarks/lfw.py and benchmarks/real_photos.py.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from embedder import api
from embedder.align import CROP_SIZE, TEMPLATE_128, align_face, similarity_transform
from tests.data import datasets

pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_crop(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(np.kron(rng.integers(0, 256, size=(16, 16, 3)), np.ones((8, 8, 1))).astype(np.uint8))


def test_shipped_weights_and_card_agree() -> None:
    card = api.model_card()
    assert card["model_id"] == hashlib.sha256(api.EMBEDDER_WEIGHTS.read_bytes()).hexdigest()[:16]
    assert card["dim"] == api.embedder_net().dim and card["input_size"] == CROP_SIZE
    assert card["base_network"]["licence"] == "Apache-2.0" and card["changes"]
    assert 0 < card["threshold"] <= card["threshold_from_margin"] < 2
    roc = card["roc"]
    far, tar, upper = np.array(roc["far"]), np.array(roc["tar"]), np.array(roc["far_upper"])
    assert np.all(np.diff(roc["distance"]) > 0) and np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0)
    assert np.all(upper >= far) and np.all(upper >= 2.9 / roc["impostor_pairs"])    # never a bound of 0
    weights = [api.EMBEDDER_WEIGHTS, api.WEIGHTS_DIR / "detector.pt", api.WEIGHTS_DIR / "landmarks.pt"]
    assert sum(p.stat().st_size for p in weights) <= 10 * 2**20


def test_embeddings_are_deterministic_unit_vectors() -> None:
    emb = api.face_embeddings([synthetic_crop(0), synthetic_crop(1), synthetic_crop(0)])
    assert emb.shape == (3, api.model_card()["dim"]) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert np.allclose(emb[0], emb[2], atol=1e-6) and not np.allclose(emb[0], emb[1], atol=1e-3)
    assert api.face_embeddings([]).shape == (0, api.model_card()["dim"])


def test_distance_is_euclidean_between_unit_vectors() -> None:
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert api.distance(a, b) == pytest.approx(np.sqrt(2))
    assert api.distance(np.stack([a, b]), a).tolist() == pytest.approx([0.0, np.sqrt(2)])


def test_similarity_transform_recovers_rotation_scale_and_shift() -> None:
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = TEMPLATE_128 @ rot.T + shift
    matrix = similarity_transform(TEMPLATE_128, moved)
    assert np.allclose(matrix[:, :2], rot) and np.allclose(matrix[:, 2], shift)


def test_alignment_puts_the_landmarks_on_the_template() -> None:
    """Dots drawn at 5 landmarks of a rotated, scaled face land on the 128×128 template's points."""
    marks = TEMPLATE_128 * 2.2 @ np.array([[0.96, 0.28], [-0.28, 0.96]]) + [60, 40]
    image = Image.new("RGB", (500, 500))
    draw = ImageDraw.Draw(image)
    for x, y in marks:
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=(255, 255, 255))
    crop = np.asarray(align_face(image, marks).convert("L"), dtype=np.float64)
    assert crop.shape == (CROP_SIZE, CROP_SIZE)
    for tx, ty in TEMPLATE_128:
        ys, xs = np.mgrid[int(ty) - 4:int(ty) + 6, int(tx) - 4:int(tx) + 6]
        window = crop[ys, xs]
        centre = (np.sum(xs * window) / window.sum(), np.sum(ys * window) / window.sum())
        assert np.hypot(centre[0] - tx, centre[1] - ty) < 1.0


@pytest.mark.slow
def test_the_same_person_is_closer_than_a_stranger_on_real_photos() -> None:
    import csv

    import embedder

    folder = datasets() / "celeba-wild"
    by_person: dict[str, list[str]] = {}
    for row in csv.DictReader((folder / "manifest.csv").open()):
        if row["in_celeba_training"] == "no":
            by_person.setdefault(row["identity"], []).append(row["path"])
    people = [photos[:2] for photos in by_person.values() if len(photos) >= 2][:12]
    vectors = []
    for pair in people:
        for path in pair:
            image = embedder.load_photo(folder / path)
            vectors.append(embedder.face_embeddings(embedder.aligned_faces(image, embedder.detect_faces(image)[:1]))[0])
    emb = np.array(vectors).reshape(len(people), 2, -1)
    gallery, probes = emb[:, 0], emb[:, 1]
    nearest = [int(np.argmin(api.distance(gallery, probe))) for probe in probes]
    assert np.mean(np.array(nearest) == np.arange(len(people))) >= 10 / 12       # rank-1 on photos years apart
    impostor = api.distance(gallery, np.roll(probes, 1, axis=0))
    assert np.all(impostor >= api.model_card()["threshold"])                    # no stranger accepted


def test_the_product_never_imports_openvino_or_torchvision() -> None:
    """openvino is only the ports' reference (a test extra); torchvision's import would cost every cold start."""
    import subprocess
    import sys

    code = ("import sys; from PIL import Image; import embedder; "
            "embedder.detect_faces(Image.new('RGB', (320, 240))); "
            "embedder.face_embeddings([Image.new('RGB', (128, 128))]); "
            "print(sorted(m for m in ('openvino', 'torchvision') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
