"""Training machinery: losses, P×K sampling, augmentation, a tiny end-to-end training run and the export.

None of this needs the real datasets: the tiny run trains on a synthetic crop cache with the same layout as
`train.crops` writes, so it checks the plumbing (shapes, checkpoint, resume, calibration, model card), not accuracy.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train.augment import augment
from train.evaluate import best_accuracy, roc, tar_at_far
from train.face_data import PKSampler
from train.losses import contrastive_loss, distillation_loss, triplet_loss


def clusters(people: int, per: int, spread: float, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(people, dim, generator=gen), dim=1)
    labels = torch.arange(people).repeat_interleave(per)
    emb = F.normalize(centres[labels] + spread * torch.randn(len(labels), dim, generator=gen), dim=1)
    return emb, labels


@pytest.mark.parametrize("mining", ["hard", "semihard"])
def test_triplet_loss_is_zero_for_separated_people_and_positive_for_mixed(mining: str) -> None:
    tight, labels = clusters(8, 4, spread=0.01)
    assert triplet_loss(tight, labels, margin=0.3, mining=mining) == 0
    mixed, labels = clusters(8, 4, spread=3.0)
    assert triplet_loss(mixed, labels, margin=0.3, mining=mining) > 0.1


def test_batch_hard_is_at_least_semi_hard() -> None:
    emb, labels = clusters(8, 4, spread=0.6)
    assert triplet_loss(emb, labels, 0.3, "hard") >= triplet_loss(emb, labels, 0.3, "semihard") - 1e-6


def test_minimising_triplet_loss_separates_people_by_the_margin() -> None:
    emb, labels = clusters(6, 4, spread=2.0, seed=1)
    free = emb.clone().requires_grad_(True)
    opt = torch.optim.SGD([free], lr=0.5)
    first = float(triplet_loss(F.normalize(free, dim=1), labels, 0.3).detach())
    for _ in range(300):
        opt.zero_grad()
        triplet_loss(F.normalize(free, dim=1), labels, 0.3).backward()
        opt.step()
    out = F.normalize(free.detach(), dim=1)
    dist = torch.cdist(out, out)
    same = labels[:, None] == labels[None, :]
    hardest_pos = torch.where(same, dist, torch.zeros_like(dist)).max(dim=1).values
    hardest_neg = torch.where(same, torch.full_like(dist, 9.0), dist).min(dim=1).values
    assert first > 0.3
    assert bool(torch.all(hardest_pos + 0.3 <= hardest_neg + 1e-2))  # every anchor satisfies the margin


def test_contrastive_and_distillation_losses() -> None:
    tight, labels = clusters(6, 3, spread=0.01)
    assert contrastive_loss(tight, labels, margin=1.0) < 0.01
    assert contrastive_loss(clusters(6, 3, spread=3.0)[0], labels, margin=1.0) > 0.1
    valid = torch.ones(len(tight), dtype=torch.bool)
    assert distillation_loss(tight, tight, valid) == 0
    assert distillation_loss(tight, -tight, valid) == pytest.approx(4.0)
    assert distillation_loss(tight, -tight, torch.zeros_like(valid)) == 0


def test_pk_sampler_gives_p_people_with_k_photos() -> None:
    labels = np.repeat(np.arange(20), [1 + i % 5 for i in range(20)])
    batch = PKSampler(labels, p=6, k=4, seed=0).batch()
    people, counts = np.unique(labels[batch], return_counts=True)
    assert len(batch) == 24 and len(people) == 6 and set(counts) == {4}


def test_augment_keeps_range_and_changes_pixels() -> None:
    x = torch.rand(8, 3, 112, 112)
    y = augment(x, 96, torch.Generator().manual_seed(0))
    assert y.shape == (8, 3, 96, 96) and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(y, F.interpolate(x, size=(96, 96), mode="bilinear", align_corners=False))


def test_roc_and_operating_points() -> None:
    rng = np.random.default_rng(0)
    dist = np.concatenate([rng.normal(0.7, 0.1, 1000), rng.normal(1.3, 0.1, 100_000)])
    same = np.arange(len(dist)) < 1000
    curve = roc(dist, same)
    assert np.all(np.diff(curve["distance"]) > 0) and np.all(np.diff(curve["far"]) >= 0)
    tar, threshold = tar_at_far(dist, same, 1e-3)
    assert np.mean(dist[~same] < threshold) <= 1e-3 and tar > 0.95
    acc, _ = best_accuracy(dist[:2000], same[:2000])
    assert acc > 0.99


def make_synthetic_cache(folder: Path, people: int = 12, per: int = 3) -> None:
    """Random 'crops' in the layout `train.crops` writes, for both training sets."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name, ident in (("celeba", lambda i: str(i)), ("fiw", lambda i: f"F{i:04d}_MID1")):
        n = people * per
        np.save(folder / f"{name}.npy", rng.integers(0, 256, size=(n, 112, 112, 3), dtype=np.uint8))
        np.save(folder / f"{name}.dlib.npy", rng.normal(size=(n, 128)).astype(np.float32))
        meta = {"paths": [f"{i}.jpg" for i in range(n)],
                "identities": [f"{name}:{ident(i // per)}" for i in range(n)],
                "has_face": [True] * n, "faces": [1] * n}
        (folder / f"{name}.json").write_text(json.dumps(meta))


@pytest.mark.slow
def test_tiny_training_run_resume_and_export(tmp_path: Path) -> None:
    from train import export, train_embedder

    cache = tmp_path / "cache"
    make_synthetic_cache(cache)
    run = tmp_path / "run"
    common = ["--out", str(run), "--cache", str(cache), "--p", "4", "--k", "2", "--eval-every", "2",
              "--warmup", "1", "--threads", "1", "--input-size", "64"]
    train_embedder.main(common + ["--steps", "2"])
    assert torch.load(run / "last.pt", weights_only=False)["step"] == 2
    train_embedder.main(common + ["--steps", "3", "--resume"])
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert ckpt["step"] == 3
    weights, card_path = tmp_path / "embedder.pt", tmp_path / "embedder.json"
    export.main(["--checkpoint", str(run / "last.pt"), "--cache", str(cache), "--weights", str(weights),
                 "--card", str(card_path)])
    card = json.loads(card_path.read_text())
    assert card["loss"] == "triplet" and card["margin"] == 0.3 and card["steps"] == 3
    assert 0 < card["threshold"] <= 2 and len(card["roc"]["far"]) == len(card["roc"]["distance"])
    assert "--steps 3" in card["train_command"]
    saved = torch.load(weights, weights_only=True)
    assert all(v.dtype == torch.float16 for v in saved["model"].values() if v.is_floating_point())
