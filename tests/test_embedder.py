"""The shipped embedder: loads from the package, gives unit vectors, and its model card matches its weights.

These need no datasets (the weights ship in git), so they never skip. Accuracy is measured in benchmarks/lfw.py.
"""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from embedder import api
from embedder.model import EmbedderConfig, EmbeddingNet


def synthetic_crop(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.kron(rng.integers(0, 256, size=(14, 14, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    return Image.fromarray(base)


def test_shipped_weights_and_card_agree() -> None:
    card = api.model_card()
    assert card["model_id"] == api.weights_digest()
    assert card["loss"] in {"triplet", "contrastive"} and card["margin"] > 0
    assert 0 < card["threshold"] < 2
    far, tar = np.array(card["roc"]["far"]), np.array(card["roc"]["tar"])
    assert np.all(np.diff(card["roc"]["distance"]) > 0) and np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0)
    upper = np.array(card["roc"]["far_upper"])                 # what identify reads for large galleries
    assert upper.shape == far.shape and np.all(upper >= far) and np.all(np.diff(upper) >= 0)
    assert api.EMBEDDER_WEIGHTS.stat().st_size <= 30 * 2**20


def test_embeddings_are_unit_vectors_of_the_card_dimension() -> None:
    emb = api.face_embeddings([synthetic_crop(0), synthetic_crop(1), synthetic_crop(0)])
    assert emb.shape == (3, api.model_card()["dim"]) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert np.allclose(emb[0], emb[2], atol=1e-5)          # deterministic (eval mode, no dropout)
    assert not np.allclose(emb[0], emb[1], atol=1e-3)
    assert api.face_embeddings([]).shape == (0, api.model_card()["dim"])


def test_mirror_image_gets_the_same_vector() -> None:
    """The product embeds a crop and its mirror together, so a mirrored photo gives the same vector."""
    crop = synthetic_crop(3)
    a, b = api.face_embeddings([crop, crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    assert np.allclose(a, b, atol=1e-4)


def test_the_product_layout_gives_the_vectors_the_evaluation_measured() -> None:
    """The product runs the network channels-last (faster on CPU); held-out and LFW numbers come from the plain
    NCHW network of `train.evaluate`. Both must give the same vectors, or the benchmarks would not describe it."""
    import torch

    from embedder.model import from_saved
    from train.evaluate import embed_array

    crops = [synthetic_crop(6), synthetic_crop(7)]
    product = api.face_embeddings(crops, bf16=False)
    plain = from_saved(torch.load(api.EMBEDDER_WEIGHTS, weights_only=True)).eval()
    measured = embed_array(plain, np.stack([np.asarray(c) for c in crops]))
    assert np.allclose(product, measured, atol=1e-4)


def test_bf16_and_float32_give_the_same_vectors() -> None:
    """Where the CPU has native bf16 the product embeds under bf16 autocast; that must not move the vectors
    enough to change a decision (thresholds sit ~0.5–1.0 apart in distance; this allows 0.01 of cosine)."""
    crops = [synthetic_crop(4), synthetic_crop(5)]
    exact, fast = api.face_embeddings(crops, bf16=False), api.face_embeddings(crops, bf16=True)
    assert fast.dtype == np.float32 and np.allclose(np.linalg.norm(fast, axis=1), 1, atol=1e-5)
    assert np.all((exact * fast).sum(1) > 0.99)
    assert isinstance(api.native_bf16(), bool)
    assert api.use_bf16() in (False, api.native_bf16())     # never bf16 where it would be emulated


def test_the_product_precision_is_whichever_ran_faster() -> None:
    """A CPU flag does not say whether bf16 is faster (it was 1.6x slower on one CPU that has it), so the product
    times both; the timing decides, not the order of the calls."""
    import time

    def slow_when(slow_bf16: bool):
        return lambda bf16: time.sleep(0.02 if bf16 == slow_bf16 else 0.0)

    assert api.bf16_is_faster(slow_when(slow_bf16=False)) is True
    assert api.bf16_is_faster(slow_when(slow_bf16=True)) is False

    def bf16_a_little_faster(bf16: bool) -> None:
        time.sleep(0.018 if bf16 else 0.02)

    assert api.bf16_is_faster(bf16_a_little_faster) is False    # within timing noise: float32 stays


def test_network_output_is_normalised_for_any_batch() -> None:
    import torch

    model = EmbeddingNet(EmbedderConfig(input_size=64)).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 112, 112))
    assert out.shape == (2, 128) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_config_round_trips_through_json() -> None:
    config = EmbedderConfig(input_size=80, widths=(8, 16, 32, 64), depths=(1, 1, 1, 1), dim=64)
    assert EmbedderConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
