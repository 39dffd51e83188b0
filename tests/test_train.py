"""Training machinery: losses, P×K sampling, held-out split, ROC, a tiny fine-tuning run and the export.

The tiny run trains on a synthetic crop cache in the layout `train.crops` writes, so it checks the plumbing
(shapes, checkpoint, resume, judging, card), not accuracy; it starts from the port, so it needs ../shared/teachers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train.evaluate import best_accuracy, roc, tar_at_far
from train.face_data import PKSampler, group_of, load_training_faces
from train.losses import contrastive_loss, triplet_loss
from tests.data import teachers


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


def test_contrastive_loss_pulls_pairs_and_pushes_to_the_margin() -> None:
    tight, labels = clusters(8, 4, spread=0.01)
    assert contrastive_loss(tight, labels, margin=0.5) < 0.01
    mixed, labels = clusters(8, 4, spread=3.0)
    assert contrastive_loss(mixed, labels, margin=0.5) > contrastive_loss(tight, labels, margin=0.5) + 0.1


def test_pk_sampler_gives_p_people_with_k_photos() -> None:
    labels = np.repeat(np.arange(20), [1 + i % 5 for i in range(20)])
    batch = PKSampler(labels, np.arange(20), p=6, k=4, seed=0).batch()
    people, counts = np.unique(labels[batch], return_counts=True)
    assert len(batch) == 24 and len(people) == 6 and set(counts) == {4}


def test_pk_sampler_puts_relatives_together_when_asked() -> None:
    labels = np.repeat(np.arange(40), 3)
    groups = np.concatenate([np.repeat(np.arange(10), 2), np.arange(10, 30)])  # 10 pairs of siblings, 20 loners

    def with_a_relative(sampler: PKSampler) -> list[int]:
        counts = []
        for _ in range(50):
            batch = sampler.batch()
            people = np.unique(labels[batch])
            _, size = np.unique(groups[people], return_counts=True)
            counts.append(int(size[size >= 2].sum()))
        return counts

    mixed = with_a_relative(PKSampler(labels, groups, p=8, k=2, seed=0, relatives=0.5))
    plain = with_a_relative(PKSampler(labels, groups, p=8, k=2, seed=0))
    assert min(mixed) >= 4 and np.mean(mixed) > np.mean(plain) + 2


def test_pk_sampler_draws_people_with_real_photos_and_those_photos_when_asked() -> None:
    labels = np.repeat(np.arange(40), 6)
    real = np.zeros(len(labels), bool)
    real[(labels < 8) & (np.arange(len(labels)) % 6 < 2)] = True     # 8 people, 2 of their 6 photos each
    sampler = PKSampler(labels, np.arange(40), p=8, k=4, seed=0, real=real, real_share=0.5)
    for _ in range(20):
        batch = sampler.batch()
        people = np.unique(labels[batch])
        assert len(batch) == 32 and len(people) == 8
        assert (people < 8).sum() >= 4 and real[batch].sum() >= 8     # 4 such people, 2 real photos each
    plain = PKSampler(labels, np.arange(40), p=8, k=4, seed=0, real=real)
    assert np.mean([real[plain.batch()].sum() for _ in range(20)]) < 4


def test_groups_join_fiw_relatives_only() -> None:
    assert group_of("fiw:F0001_MID1") == group_of("fiw:F0001_MID2") == "fiw:F0001"
    assert group_of("celeba:7") == "celeba:7" != group_of("celeba:8")


def make_synthetic_cache(folder: Path, people: int = 12, per: int = 3) -> None:
    """Random 'crops' in the layout `train.crops` writes, for the three training sets; celeba-wild's people who
    are in no training folder must never reach training or the held-out split."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name, ident in (("celeba", str), ("fiw", lambda i: f"F{i // 2:04d}_MID{i % 2}"), ("celeba-wild", str)):
        n = people * per
        np.save(folder / f"{name}.npy", rng.integers(0, 256, size=(n, 128, 128, 3), dtype=np.uint8))
        prefix = "celeba" if name == "celeba-wild" else name
        meta = {"paths": [f"{i}.jpg" for i in range(n)],
                "identities": [f"{prefix}:{ident(i // per + (1000 if name == 'celeba-wild' else 0))}"
                               for i in range(n)],
                "source": ["product"] * (n - 1) + [""],
                "in_training_folder": [name != "celeba-wild" or i < n // 2 for i in range(n)]}
        (folder / f"{name}.json").write_text(json.dumps(meta))


def test_held_out_split_is_by_group_and_skips_validation_people(tmp_path: Path) -> None:
    make_synthetic_cache(tmp_path / "crops")
    train, val = load_training_faces(tmp_path / "crops", val_fraction=0.3)
    assert not set(train.people) & set(val.people)
    assert not {group_of(p) for p in train.people} & {group_of(p) for p in val.people}
    celeba = [int(p.split(":")[1]) for p in train.people + val.people if p.startswith("celeba:")]
    wild_people = {p for p in celeba if p >= 1000}
    assert wild_people and all(p < 1006 for p in wild_people)                        # only in_training_folder
    assert len(train.labels) + len(val.labels) == 3 * 36 - 18 - 2    # minus validation people, no-face rows
    assert train.real.sum() + val.real.sum() == 18 and len(train.real) == len(train.labels)   # celeba-wild


@pytest.mark.slow
def test_tiny_fine_tuning_run_resumes_and_exports_a_judged_card(tmp_path: Path) -> None:
    from train import export, finetune

    teachers()
    make_synthetic_cache(tmp_path / "crops")
    out = tmp_path / "run"
    common = ["--cache", str(tmp_path / "crops"), "--out", str(out), "--p", "4", "--k", "2", "--eval-every", "2",
              "--threads", "1", "--head-dim", "32", "--unfreeze", "1"]
    finetune.main([*common, "--steps", "2"])
    first = torch.load(out / "last.pt", weights_only=False)
    assert first["step"] == 2 and first["config"] == {"head_dim": 32}
    finetune.main([*common, "--steps", "4", "--resume"])
    saved = torch.load(out / "last.pt", weights_only=False)
    assert saved["step"] == 4
    assert not torch.equal(saved["model"]["projection.weight"], first["model"]["projection.weight"])
    assert torch.equal(saved["model"]["stem.0.weight"], first["model"]["stem.0.weight"])       # frozen front
    weights, card, comparison = tmp_path / "e.pt", tmp_path / "e.json", tmp_path / "c.json"
    export.main(["--candidate", str(out / "last.pt"), "--cache", str(tmp_path / "crops"), "--weights", str(weights),
                 "--card", str(card), "--comparison", str(comparison)])
    written, verdict = json.loads(card.read_text()), json.loads(comparison.read_text())
    candidate = str(out / "last.pt")
    assert verdict["ships"] in ("port", candidate) and "p_better" in json.dumps(verdict[candidate])
    assert written["dim"] == (32 if verdict["ships"] == candidate else 256)
    assert written["roc"]["impostor_pairs"] > 0 and written["threshold"] <= written["threshold_from_margin"]


def test_shipping_rule_needs_a_held_out_win_and_no_real_photo_loss() -> None:
    from train.export import choose

    def verdict(p_a: float, tar_a: float, real_a: tuple[float, float], p_b: float, tar_b: float,
                real_b: tuple[float, float]) -> dict:
        entry = lambda p, tar: {"metrics": {"tar@far1e-3": tar}, "vs_port": {"tar@far1e-3": {"p_better": p}}}
        real = lambda r: {"rank1": r[0], "dir@fpir0.01": r[1]}
        return {"a": entry(p_a, tar_a), "b": entry(p_b, tar_b),
                "real_photos_validation": {"port": real((0.90, 0.80)), "a": real(real_a), "b": real(real_b)}}

    fine = (0.90, 0.80)
    assert choose(verdict(0.95, 0.86, fine, 0.99, 0.88, fine), ["a", "b"]) == "b"            # both qualify: higher TAR
    assert choose(verdict(0.95, 0.86, fine, 0.99, 0.88, (0.85, 0.80)), ["a", "b"]) == "a"    # b loses rank-1
    assert choose(verdict(0.95, 0.86, fine, 0.99, 0.88, (0.90, 0.78)), ["a", "b"]) == "a"    # b loses at FPIR 1 %
    assert choose(verdict(0.80, 0.86, (0.95, 0.9), 0.50, 0.88, (0.95, 0.9)), ["a", "b"]) == "port"  # no held-out win


def test_mix_interpolates_weights_between_port_and_candidate() -> None:
    from embedder.model import FaceEmbeddingNet
    from train.export import mixed

    torch.manual_seed(0)
    a, b = FaceEmbeddingNet().eval(), FaceEmbeddingNet().eval()
    half = mixed(a, b, 0.5).state_dict()
    key = "stem.0.weight"
    assert torch.allclose(half[key], (a.state_dict()[key] + b.state_dict()[key]) / 2)
    assert torch.equal(mixed(a, b, 0.0).state_dict()[key], a.state_dict()[key])
    assert torch.equal(mixed(a, b, 1.0).state_dict()[key], b.state_dict()[key])
    with pytest.raises(ValueError):
        mixed(a, FaceEmbeddingNet(head_dim=32), 0.5)
    with pytest.raises(ValueError):
        mixed(a, b, 1.5)
