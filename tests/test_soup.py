"""Weight soups (`train.soup`): the mean of runs that started from the same weights, exported like one run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from embedder.model import EmbedderConfig, EmbeddingNet
from tests.test_train import make_synthetic_cache
from train.soup import average_state, make_soup

TINY = EmbedderConfig(input_size=64, widths=(8, 8, 8, 16), depths=(1, 1, 1, 1), dim=4)


def tiny_checkpoint(seed: int, init: str = "start.pt") -> dict:
    torch.manual_seed(seed)
    net = EmbeddingNet(TINY)
    net.head[4].num_batches_tracked += seed + 1
    return {"config": TINY.to_dict(), "args": {"init": init, "p": 4, "k": 2, "out": f"runs/{seed}"}, "step": 5,
            "model": net.state_dict(), "ema": net.state_dict()}


def test_average_state_is_the_element_wise_mean_and_keeps_counters() -> None:
    a, b = tiny_checkpoint(0)["model"], tiny_checkpoint(1)["model"]
    mean = average_state([a, b])
    key = "head.3.weight"
    assert torch.allclose(mean[key], (a[key] + b[key]) / 2)
    assert not torch.equal(mean[key], a[key])
    assert torch.allclose(mean["head.4.running_var"], (a["head.4.running_var"] + b["head.4.running_var"]) / 2)
    assert mean["head.4.num_batches_tracked"] == a["head.4.num_batches_tracked"]


def test_soup_refuses_different_networks_or_starting_points() -> None:
    a, b = tiny_checkpoint(0), tiny_checkpoint(1)
    with pytest.raises(ValueError, match="same weights"):
        make_soup([a, tiny_checkpoint(1, init="other.pt")], ["a", "b"])
    with pytest.raises(ValueError, match="at least two"):
        make_soup([a], ["a"])
    wider = {**b, "config": {**b["config"], "dim": 8}}
    with pytest.raises(ValueError, match="network configs"):
        make_soup([a, wider], ["a", "b"])
    soup = make_soup([a, b], ["a.pt", "b.pt"])
    assert soup["step"] == 10 and [r["checkpoint"] for r in soup["soup_of"]] == ["a.pt", "b.pt"]
    assert soup["soup_of"][1]["images_seen"] == 40 and "--out runs/1" in soup["soup_of"][1]["train_command"]


@pytest.mark.slow
def test_two_tiny_runs_from_one_start_make_a_soup_that_exports(tmp_path: Path) -> None:
    from train import export, soup, train_embedder

    cache = tmp_path / "cache"
    make_synthetic_cache(cache)
    start = tmp_path / "start.pt"
    small = EmbedderConfig(input_size=64, widths=(8, 8, 8, 16), depths=(1, 1, 1, 1), dim=128)  # dlib's 128-d
    torch.save({"config": small.to_dict(), "model": EmbeddingNet(small).state_dict()}, start)
    runs = []
    for seed in (1, 2):
        run = tmp_path / f"run{seed}"
        train_embedder.main(["--out", str(run), "--cache", str(cache), "--p", "4", "--k", "2", "--eval-every", "9",
                             "--warmup", "1", "--threads", "1", "--input-size", "64", "--steps", "2",
                             "--seed", str(seed), "--init", str(start), "--ema", "0.5"])
        runs.append(run / "last.pt")
    soup_path = tmp_path / "soup.pt"
    soup.main(["--out", str(soup_path), *map(str, runs)])
    weights, card_path = tmp_path / "embedder.pt", tmp_path / "embedder.json"
    export.main(["--checkpoint", str(soup_path), "--cache", str(cache), "--weights", str(weights),
                 "--card", str(card_path)])
    card = json.loads(card_path.read_text())
    assert card["steps"] == 4 and card["images_seen"] == 32
    assert len(card["weight_soup"]["runs"]) == 2 and card["weight_soup"]["command"].startswith("python -m train.soup")
    assert card["weights"].startswith("the mean of 2 runs'")
    assert card["train_command"].count("python -m train.train_embedder") == 2
    ckpts = [torch.load(r, weights_only=False) for r in runs]
    which = "ema" if "weight averages" in card["weights"] else "model"
    expected = (ckpts[0][which]["head.3.weight"] + ckpts[1][which]["head.3.weight"]) / 2
    shipped = torch.load(weights, weights_only=True)["model"]["head.3.weight"]
    assert torch.allclose(shipped.float(), expected, atol=1e-3)
