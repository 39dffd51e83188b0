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
    """In float32 the product runs the network channels-last with BatchNorm folded (faster on CPU); the evaluation
    runs the plain NCHW network of `train.evaluate`. Both must give the same vectors."""
    import torch

    from embedder.model import from_saved
    from train.evaluate import embed_array

    crops = [synthetic_crop(6), synthetic_crop(7)]
    product = api.face_embeddings(crops, precision="float32")
    plain = from_saved(torch.load(api.EMBEDDER_WEIGHTS, weights_only=True)).eval()
    measured = embed_array(plain, np.stack([np.asarray(c) for c in crops]))
    assert np.allclose(product, measured, atol=1e-4)


def test_the_product_runs_int8_where_torch_has_the_kernels() -> None:
    from embedder import int8

    assert api.product_precision() == ("int8" if int8.supported() else "float32")
    crops = [synthetic_crop(8)]
    assert np.allclose(api.face_embeddings(crops), api.face_embeddings(crops, precision=api.product_precision()))


def test_shipped_int8_ranges_belong_to_the_shipped_weights() -> None:
    """The ranges are measured per set of weights (`train.export` writes both); stale ones must not load."""
    import torch

    from embedder import int8

    shipped = torch.load(int8.ranges_path(api.EMBEDDER_WEIGHTS), weights_only=True)
    assert shipped["model_id"] == api.weights_digest()
    low = {k: v for k, v in shipped["ranges"].items() if k.endswith("min_val")}
    assert low and all(float(v) < float(shipped["ranges"][k.replace("min_val", "max_val")]) for k, v in low.items())


def test_int8_ranges_of_other_weights_are_refused(monkeypatch) -> None:
    """New weights exported without new ranges must fail loudly, not quantise with another network's ranges."""
    import pytest

    from embedder import int8

    if not int8.supported():
        pytest.skip("this torch build has no x86 int8 kernels")
    monkeypatch.setattr(api, "weights_digest", lambda path=api.EMBEDDER_WEIGHTS: "0123456789abcdef")
    with pytest.raises(RuntimeError, match="measured for other weights"):
        api._embedder.__wrapped__("int8")


def test_int8_and_float32_give_nearly_the_same_vectors() -> None:
    """int8 moves each vector a little (cosine ≥ 0.997 to float32 on held-out faces, benchmarks/int8.py); these
    blocky synthetic crops are far from any face the ranges saw, so they get a looser bar, and still a real one:
    two different crops sit at cosine < 0.9 in either precision."""
    crops = [synthetic_crop(4), synthetic_crop(5)]
    exact, fast = api.face_embeddings(crops, precision="float32"), api.face_embeddings(crops, precision="int8")
    assert fast.dtype == np.float32 and np.allclose(np.linalg.norm(fast, axis=1), 1, atol=1e-5)
    assert np.all((exact * fast).sum(1) > 0.98)
    assert float(exact[0] @ exact[1]) < 0.9 and float(fast[0] @ fast[1]) < 0.9


def test_int8_ranges_round_trip_and_refuse_another_network() -> None:
    """Calibrate → save → load → quantise gives the network calibrated in memory; ranges of a differently shaped
    network are refused instead of loading half-right."""
    import io

    import torch

    from embedder import int8
    from embedder.model import embed

    small = EmbeddingNet(EmbedderConfig(input_size=32, widths=(8, 16), depths=(1, 1), dim=16)).eval()
    crops = np.random.default_rng(0).integers(0, 256, size=(8, 112, 112, 3), dtype=np.uint8)
    ranges = int8.calibrate(small, crops)
    buffer = io.BytesIO()
    torch.save({"ranges": ranges}, buffer)
    buffer.seek(0)
    loaded = int8.quantize(small, torch.load(buffer, weights_only=True)["ranges"])
    x = torch.from_numpy(crops[:2]).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        exact, fast = embed(small, x), embed(loaded, x)
    assert fast.shape == (2, 16) and torch.all((exact * fast).sum(1) > 0.95)
    import pytest

    deeper = EmbeddingNet(EmbedderConfig(input_size=32, widths=(8, 16), depths=(2, 1), dim=16)).eval()
    with pytest.raises(ValueError, match="do not fit"):
        int8.quantize(deeper, ranges)
    with pytest.raises(ValueError, match="do not fit"):      # measured with stem and head in float32
        int8.quantize(small, ranges, int8.Scheme(keep_float=()))


def test_network_output_is_normalised_for_any_batch() -> None:
    import torch

    model = EmbeddingNet(EmbedderConfig(input_size=64)).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 112, 112))
    assert out.shape == (2, 128) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_config_round_trips_through_json() -> None:
    config = EmbedderConfig(input_size=80, widths=(8, 16, 32, 64), depths=(1, 1, 1, 1), dim=64)
    assert EmbedderConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
