"""Training machinery: losses, P×K sampling, augmentation, a tiny end-to-end training run and the export.

None of this needs the real datasets: the tiny run trains on a synthetic crop cache with the same layout as
`train.crops` writes, so it checks the plumbing (shapes, checkpoint, resume, calibration, model card), not accuracy.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train.augment import augment
from train.evaluate import best_accuracy, roc, tar_at_far
from train.face_data import PKSampler
from train.losses import contrastive_loss, distillation_loss, relational_loss, triplet_loss


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


@pytest.mark.parametrize("mining", ["hard", "semihard"])
def test_memory_adds_harder_negatives_but_never_positives(mining: str) -> None:
    emb, labels = clusters(8, 4, spread=0.01, seed=2)
    plain = triplet_loss(emb, labels, 0.3, mining)
    # An impostor from an earlier batch just beside person 0 (farther than their own photos, well within the
    # margin): a negative that no batch of well-separated people shows.
    near = F.normalize(emb[:1] + 0.05 * torch.randn(1, emb.shape[1], generator=torch.Generator().manual_seed(6)))
    impostor = (near, torch.tensor([99]))
    assert triplet_loss(emb, labels, 0.3, mining, memory=impostor) > plain + 0.01
    # The same vector filed under person 0 is a (stale) positive: the memory must ignore it, not pull towards it.
    same_person = (emb[:1].clone(), torch.tensor([0]))
    assert triplet_loss(emb, labels, 0.3, mining, memory=same_person) == pytest.approx(float(plain))
    empty = (torch.empty(0, emb.shape[1]), torch.empty(0, dtype=torch.long))
    assert triplet_loss(emb, labels, 0.3, mining, memory=empty) == pytest.approx(float(plain))


def test_relational_loss_sees_geometry_not_coordinates() -> None:
    emb, _ = clusters(6, 3, spread=0.5, seed=3)
    valid = torch.ones(len(emb), dtype=torch.bool)
    rotation, _ = torch.linalg.qr(torch.randn(emb.shape[1], emb.shape[1], generator=torch.Generator().manual_seed(4)))
    rotated = emb @ rotation
    assert relational_loss(emb, rotated, valid) < 1e-10       # same geometry, other coordinates: nothing to learn
    assert distillation_loss(emb, rotated, valid) > 0.5       # whereas per-vector distillation penalises it
    other, _ = clusters(6, 3, spread=0.5, seed=5)
    assert relational_loss(emb, other, valid) > 0.01
    only_one = torch.zeros_like(valid)
    only_one[0] = True
    assert relational_loss(emb, other, only_one) == 0         # a single vector has no pairs


def test_pk_sampler_gives_p_people_with_k_photos() -> None:
    labels = np.repeat(np.arange(20), [1 + i % 5 for i in range(20)])
    batch = PKSampler(labels, p=6, k=4, seed=0).batch()
    people, counts = np.unique(labels[batch], return_counts=True)
    assert len(batch) == 24 and len(people) == 6 and set(counts) == {4}


def test_pk_sampler_puts_relatives_together_when_asked() -> None:
    labels = np.repeat(np.arange(40), 3)
    groups = np.concatenate([np.repeat(np.arange(10), 2), np.arange(10, 30)])  # 10 pairs of siblings, 20 loners

    def with_a_relative(sampler: PKSampler) -> list[int]:
        counts = []
        for _ in range(50):
            batch = sampler.batch()
            people, per = np.unique(labels[batch], return_counts=True)
            assert len(people) == 8 and set(per) == {2}
            families, size = np.unique(groups[people], return_counts=True)
            counts.append(int(size[size >= 2].sum()))
        return counts

    mixed = with_a_relative(PKSampler(labels, p=8, k=2, seed=0, groups=groups, relatives=0.5))
    plain = with_a_relative(PKSampler(labels, p=8, k=2, seed=0, groups=groups))
    assert min(mixed) >= 4 and np.mean(mixed) > np.mean(plain) + 2
    one_pair = np.concatenate([[0, 0], np.arange(1, 39)])                 # families too small to fill the share
    batch = PKSampler(labels, p=8, k=2, seed=0, groups=one_pair, relatives=1.0).batch()
    assert len(np.unique(labels[batch])) == 8 and {0, 1} <= set(labels[batch].tolist())


def test_family_groups_join_fiw_relatives_only() -> None:
    from train.face_data import FaceSet, family_groups

    people = ["celeba:7", "celeba:8", "fiw:F0001_MID1", "fiw:F0001_MID2", "fiw:F0002_MID1"]
    faces = FaceSet(np.zeros((0, 112, 112, 3), np.uint8), np.zeros(0, np.int64), np.zeros((0, 128), np.float32),
                    np.zeros(0, bool), people, np.zeros(0, np.int64))
    g = family_groups(faces)
    assert g[2] == g[3] and len(set(g.tolist())) == 4


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
    # the int8 ranges ship beside the weights, made for them, and the card says which precision it describes
    from embedder import api, int8
    from embedder.model import from_saved

    ranges = torch.load(int8.ranges_path(weights), weights_only=True)
    assert ranges["model_id"] == card["model_id"] and api.product_precision() in card["precision"]
    int8.quantize(from_saved(saved).eval(), ranges["ranges"])

    # recalibration keeps the weights (and so enrolled vectors) and the card's recipe, and redoes the ROC
    before = weights.read_bytes()
    card_path.write_text(json.dumps({**card, "roc": {"distance": [1.0], "far": [0.5], "tar": [0.5]}}))
    export.main(["--recalibrate", "--cache", str(cache), "--weights", str(weights), "--card", str(card_path)])
    again = json.loads(card_path.read_text())
    assert weights.read_bytes() == before and again["model_id"] == card["model_id"]
    assert again["roc"] == card["roc"] and again["train_command"] == card["train_command"]
    assert "--recalibrate" in again["recalibrate_command"]
    with pytest.raises(SystemExit, match="model ids differ"):
        card_path.write_text(json.dumps({**card, "model_id": "someone-else"}))
        export.main(["--recalibrate", "--cache", str(cache), "--weights", str(weights), "--card", str(card_path)])


def test_erase_blanks_one_flat_rectangle_per_chosen_photo() -> None:
    x = torch.rand(16, 3, 112, 112)
    plain = augment(x, 64, torch.Generator().manual_seed(3))
    erased = augment(x, 64, torch.Generator().manual_seed(3), erase=1.0)
    changed = (plain != erased).any(dim=1)                       # (N, H, W)
    share = changed.float().mean(dim=(1, 2))
    assert bool((share > 0.01).all()) and bool((share < 0.3).all())
    for img, mask in zip(erased, changed):
        values = img[:, mask]
        assert torch.allclose(values, values[:, :1].expand_as(values))  # one flat grey
        rows, cols = mask.nonzero(as_tuple=True)
        box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.float().mean() > 0.8                         # a rectangle, not scattered pixels


def test_weight_average_moves_towards_the_model() -> None:
    from embedder.model import EmbedderConfig, EmbeddingNet
    from train.train_embedder import update_ema

    model, ema = EmbeddingNet(EmbedderConfig(input_size=32)), EmbeddingNet(EmbedderConfig(input_size=32))
    before = ema.head[3].weight.clone()
    update_ema(ema, model, 0.75)
    expected = 0.75 * before + 0.25 * model.head[3].weight
    assert torch.allclose(ema.head[3].weight, expected, atol=1e-6)


def test_blend_bank_maps_training_rows_and_refuses_held_out_people(tmp_path: Path) -> None:
    from train.face_data import load_training_faces
    from train.teacher_mixes import save
    from train.train_embedder import blend_batch, load_blends

    cache = tmp_path / "cache"
    make_synthetic_cache(cache, people=20)
    train_set, val_set, mean = load_training_faces(cache)
    a, b = train_set.rows[:3].tolist(), train_set.rows[-3:].tolist()
    vectors = np.random.default_rng(0).normal(size=(3, 128)).astype(np.float32)
    bank = tmp_path / "mixes"
    bank.mkdir()
    save(bank / "mixes-0.npz", a, b, [0.25, 0.5, 0.75], [vectors])
    blends = load_blends(bank, train_set, mean)
    assert blends["a"].tolist() == [0, 1, 2] and np.allclose(np.linalg.norm(blends["teacher"], axis=1), 1)
    x, target = blend_batch(blends, train_set.images, 5, np.random.default_rng(0))
    assert x.shape == (5, 3, 112, 112) and target.shape == (5, 128)
    first = 0.25 * train_set.images[0].astype(np.float32) + 0.75 * train_set.images[len(train_set.rows) - 3]
    one = blend_batch({k: v[:1] for k, v in blends.items()}, train_set.images, 1, np.random.default_rng(0))[0]
    assert np.allclose(one[0].permute(1, 2, 0).numpy() * 255, first, atol=1e-3)

    save(bank / "mixes-1.npz", [int(val_set.rows[0])], [a[0]], [0.5], [vectors[:1]])
    with pytest.raises(SystemExit, match="outside the training people"):
        load_blends(bank, train_set, mean)


@pytest.mark.slow
def test_training_with_blends_erasing_and_weight_average_exports_the_better_candidate(tmp_path: Path) -> None:
    from train import export, train_embedder
    from train.face_data import load_training_faces
    from train.teacher_mixes import save

    cache = tmp_path / "cache"
    make_synthetic_cache(cache)
    train_set, _, _ = load_training_faces(cache)
    bank = tmp_path / "mixes"
    bank.mkdir()
    save(bank / "mixes-0.npz", train_set.rows[:4].tolist(), train_set.rows[-4:].tolist(), [0.5] * 4,
         [np.random.default_rng(1).normal(size=(4, 128)).astype(np.float32)])
    run = tmp_path / "run"
    train_embedder.main(["--out", str(run), "--cache", str(cache), "--p", "4", "--k", "2", "--eval-every", "2",
                         "--warmup", "1", "--threads", "1", "--input-size", "64", "--steps", "2",
                         "--mixes", str(bank), "--mix-batch", "3", "--erase", "0.5", "--ema", "0.5",
                         "--relational", "1", "--memory", "16", "--relatives", "0.5", "--centres", "0.5"])
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert not torch.equal(ckpt["ema"]["head.3.weight"], ckpt["model"]["head.3.weight"])
    seen = ckpt["centres"].norm(dim=1) > 0                      # a person's centre is zeros until first seen
    assert int(seen.sum()) >= 4 and torch.allclose(ckpt["centres"][seen].norm(dim=1), torch.ones(int(seen.sum())))
    # the bank grows after the run started (a teacher_mixes job beside it): the card reports what the run used
    save(bank / "mixes-1.npz", train_set.rows[:2].tolist(), train_set.rows[-2:].tolist(), [0.5] * 2,
         [np.random.default_rng(2).normal(size=(2, 128)).astype(np.float32)])
    weights = tmp_path / "embedder.pt"
    export.main(["--checkpoint", str(run / "last.pt"), "--cache", str(cache), "--weights", str(weights),
                 "--card", str(tmp_path / "embedder.json")])
    shipped = torch.load(weights, weights_only=True)["model"]["head.3.weight"]
    _, val_set, _ = load_training_faces(cache)
    _, which = export.shipped_model(ckpt, val_set)
    card = json.loads((tmp_path / "embedder.json").read_text())
    assert card["distillation"]["blends"].startswith("plus dlib's vectors of 4 blends")
    assert card["distillation"]["relational_weight"] == 1.0 and "16 most recent" in card["cross_batch_memory"]
    assert card["relatives"].startswith("50% of each batch's people")
    assert card["centre_softmax"].startswith("weight 0.5")
    assert card["weights"].startswith({"average": "the run's weight average", "last": "the run's last"}[which])
    assert torch.equal(shipped, ckpt["ema" if which == "average" else "model"]["head.3.weight"].half())


def test_resize_input_keeps_the_head_response_to_a_uniform_feature_map() -> None:
    """Starting a larger-input run from trained weights: every weight but the head's linear layer carries over,
    and a head whose weights are uniform over positions answers a uniform feature map exactly as before."""
    from embedder.model import EmbedderConfig, EmbeddingNet, from_saved
    from train.train_embedder import resize_input

    torch.manual_seed(0)
    small = EmbeddingNet(EmbedderConfig(input_size=64, widths=(8, 8, 8, 16), depths=(1, 1, 1, 1), dim=4))
    linear = small.head[3]
    per_channel = torch.randn(4, 16, 1, 1)
    linear.weight.data = per_channel.expand(4, 16, 4, 4).reshape(4, -1).clone()
    saved = {"config": small.config.to_dict(), "model": small.state_dict()}

    large = from_saved(resize_input(saved, 80))
    assert large.config.input_size == 80 and large.head[3].weight.shape == (4, 16 * 5 * 5)
    assert torch.equal(large.stem[0].weight, small.stem[0].weight)
    level = torch.rand(16)                     # one value per channel, the same at every position
    uniform_small, uniform_large = level.repeat_interleave(16), level.repeat_interleave(25)
    assert torch.allclose(large.head[3].weight @ uniform_large, linear.weight @ uniform_small, atol=1e-5)
    assert resize_input(saved, 64) is saved
    assert large(torch.rand(2, 3, 112, 112)).shape == (2, 4)


def test_set_depths_adds_blocks_that_leave_the_trained_function_unchanged() -> None:
    """Deepening trained weights: the same embeddings before any training step, the new blocks trainable."""
    from embedder.model import EmbedderConfig, EmbeddingNet, from_saved
    from train.train_embedder import set_depths

    torch.manual_seed(0)
    small = EmbeddingNet(EmbedderConfig(input_size=64, widths=(8, 8, 8, 16), depths=(1, 2, 1, 1), dim=4))
    for module in small.modules():  # trained-looking BatchNorm statistics, so an identity is not an accident
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    saved = {"config": small.config.to_dict(), "model": small.state_dict()}
    grown = from_saved(set_depths(saved, (1, 3, 2, 2))).eval()
    assert grown.config.depths == (1, 3, 2, 2) and len(grown.stages) == 8
    x = torch.rand(3, 3, 112, 112)
    assert torch.allclose(grown(x), small.eval()(x), atol=1e-6)
    assert float(grown.stages[3].bn2.weight.detach().abs().sum()) == 0.0  # stage 2's new block starts as an identity
    assert float(grown.stages[3].conv1.weight.detach().abs().sum()) > 0.0  # ...with weights to grow from
    assert torch.equal(grown.stages[4].conv1.weight, small.stages[3].conv1.weight)  # stage 3's trained block moved
    assert set_depths(saved, (1, 2, 1, 1)) is saved
    with pytest.raises(ValueError, match="at least one block"):
        set_depths(saved, (1, 0, 1, 1))


def test_set_depths_shrinks_by_keeping_each_stages_first_blocks() -> None:
    """A shallower network from trained weights: stage by stage, the first blocks' weights, the rest dropped."""
    from embedder.model import EmbedderConfig, EmbeddingNet, from_saved
    from train.train_embedder import set_depths

    torch.manual_seed(0)
    deep = EmbeddingNet(EmbedderConfig(input_size=64, widths=(8, 8, 8, 16), depths=(2, 3, 2, 1), dim=4))
    saved = {"config": deep.config.to_dict(), "model": deep.state_dict()}
    shallow = from_saved(set_depths(saved, (1, 2, 1, 1))).eval()
    assert shallow.config.depths == (1, 2, 1, 1) and len(shallow.stages) == 5
    for new, old in {0: 0, 1: 2, 2: 3, 3: 5, 4: 7}.items():
        assert torch.equal(shallow.stages[new].conv1.weight, deep.stages[old].conv1.weight)
    assert torch.equal(shallow.head[3].weight, deep.head[3].weight)
    assert shallow(torch.rand(2, 3, 112, 112)).shape == (2, 4)


def test_lineage_follows_a_run_started_from_another_runs_checkpoint(tmp_path: Path) -> None:
    """A run continued from an unexported checkpoint keeps that run's command and steps in the card."""
    from train.export import earlier_runs

    first = tmp_path / "first.pt"
    torch.save({"args": {"out": "runs/a", "input_size": 80, "p": 4, "k": 2}, "step": 7}, first)
    lineage = earlier_runs({"init": str(first)})
    assert len(lineage) == 1 and lineage[0]["steps"] == 7 and lineage[0]["images_seen"] == 56
    assert "--out runs/a" in lineage[0]["train_command"] and "--input-size 80" in lineage[0]["train_command"]
    assert earlier_runs({"init": str(tmp_path / "gone.pt")})[0]["weights"].endswith("gone.pt")


def test_lineage_reads_the_card_beside_exported_weights_wherever_they_are(tmp_path: Path) -> None:
    """Weights exported outside the package (e.g. a candidate in /tmp) keep their lineage; a stale card is ignored."""
    from embedder.api import weights_digest
    from train.export import earlier_runs

    weights = tmp_path / "candidate.pt"
    torch.save({"state": {}}, weights)
    card = {"model_id": weights_digest(weights), "train_command": "python -m train.train_embedder --out runs/x",
            "export_command": "python -m train.export", "steps": 5, "images_seen": 40,
            "initialised_from": [{"model_id": "older", "steps": 3}]}
    (tmp_path / "candidate.json").write_text(json.dumps(card))
    lineage = earlier_runs({"init": str(weights)})
    assert [step["model_id"] for step in lineage] == ["older", card["model_id"]] and lineage[1]["steps"] == 5
    (tmp_path / "candidate.json").write_text(json.dumps({**card, "model_id": "another-model"}))
    assert "note" in earlier_runs({"init": str(weights)})[0]


def test_relatives_accepted_counts_only_pairs_of_different_people_of_one_family() -> None:
    from benchmarks.fit_gap import relatives_accepted

    family = np.array([0, 0, 1, 2])               # persons 0 and 1 are relatives; 2 and 3 are not anyone's
    labels = np.array([0, 0, 1, 2, 3])
    emb = np.eye(5, 8, dtype=np.float32)
    emb[2] = emb[0]                               # person 1 looks exactly like person 0's first photo
    report = relatives_accepted(emb, labels, family, threshold=0.5)
    assert report["pairs"] == 2 and report["accepted"] == 0.5   # (photo 0, photo 2) yes, (photo 1, photo 2) no


def test_centre_softmax_prefers_the_own_centre_and_ignores_unseen_people() -> None:
    from train.losses import centre_softmax_loss, update_centres

    centres = torch.zeros(3, 4)
    update_centres(centres, torch.eye(4)[[0, 0, 1]], torch.tensor([0, 0, 1]))
    assert (centres.norm(dim=1) > 0).tolist() == [True, True, False]
    assert torch.allclose(centres[0], torch.eye(4)[0]) and torch.allclose(centres[1], torch.eye(4)[1])
    near = F.normalize(torch.tensor([[1.0, 0.2, 0, 0]]), dim=1)
    far = F.normalize(torch.tensor([[0.2, 1.0, 0, 0]]), dim=1)
    own = torch.tensor([0])
    assert centre_softmax_loss(near, own, centres) < centre_softmax_loss(far, own, centres)
    # a person without a centre is neither an anchor nor an impostor; the margin makes a tie cost more than ln 2
    assert float(centre_softmax_loss(near, torch.tensor([2]), centres)) == 0.0
    tie = F.normalize(torch.tensor([[1.0, 1.0, 0, 0]]), dim=1)
    assert float(centre_softmax_loss(tie, own, centres, 24.0, 0.2)) > math.log(2)
    # the running mean moves half way, and stays a unit vector
    update_centres(centres, torch.eye(4)[[1]], torch.tensor([0]))
    assert torch.allclose(centres[0], F.normalize(torch.tensor([0.5, 0.5, 0, 0]), dim=0))


def synthetic_cache_and_start(tmp_path: Path) -> tuple[Path, Path, torch.nn.Module]:
    """A synthetic crop cache and a fresh 64 px network saved as the --init weights of a run."""
    from embedder.model import EmbedderConfig, EmbeddingNet

    cache = tmp_path / "cache"
    make_synthetic_cache(cache)
    torch.manual_seed(0)
    net = EmbeddingNet(EmbedderConfig(input_size=64))
    start = tmp_path / "start.pt"
    torch.save({"config": net.config.to_dict(), "model": net.state_dict()}, start)
    return cache, start, net


@pytest.mark.slow
def test_mirror_distillation_trains_from_frozen_starting_weights_and_needs_them(tmp_path: Path) -> None:
    from train import train_embedder

    cache, start, net = synthetic_cache_and_start(tmp_path)
    run = tmp_path / "run"
    common = ["--out", str(run), "--cache", str(cache), "--p", "4", "--k", "2", "--eval-every", "100",
              "--warmup", "1", "--threads", "1", "--input-size", "64", "--steps", "25", "--mirror-distill", "1"]
    with pytest.raises(SystemExit, match="needs --init"):
        train_embedder.main(common)
    train_embedder.main(common + ["--init", str(start)])
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss" in r]
    assert len(losses) == 1 and 0 < losses[0]["mirror"] <= 4       # squared distance between unit vectors
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert ckpt["step"] == 25 and float(ckpt["args"]["mirror_distill"]) == 1.0
    assert not torch.equal(ckpt["model"]["head.3.weight"], net.state_dict()["head.3.weight"])


def test_relighting_changes_the_light_not_the_face() -> None:
    side = torch.linspace(0, 6.28, 112)
    stripes = 0.5 + 0.4 * torch.sin(side.view(1, 112) * 3 + side.view(112, 1))  # structure the eye would follow
    x = stripes.expand(16, 3, 112, 112) * (0.6 + 0.4 * torch.rand(16, 3, 1, 1))
    plain = augment(x, 64, torch.Generator().manual_seed(5))
    lit = augment(x, 64, torch.Generator().manual_seed(5), lighting=True)
    assert lit.shape == plain.shape and lit.min() >= 0 and lit.max() <= 1
    assert (lit - plain).abs().mean() > 0.02                      # every image relit by a visible amount
    for a, b in zip(plain.mean(dim=1).flatten(1), lit.mean(dim=1).flatten(1)):
        assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.6    # the same pixels where they were


def test_dropout_and_lighting_continue_trained_weights_and_are_saved(tmp_path: Path) -> None:
    from train import train_embedder

    cache, start, net = synthetic_cache_and_start(tmp_path)
    run = tmp_path / "run"
    train_embedder.main(["--out", str(run), "--cache", str(cache), "--p", "4", "--k", "2", "--eval-every", "100",
                         "--warmup", "1", "--threads", "1", "--input-size", "64", "--steps", "3", "--init",
                         str(start), "--lighting", "--dropout", "0.4"])
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert ckpt["config"]["dropout"] == 0.4 and ckpt["args"]["lighting"] is True
    assert net.config.dropout != 0.4 and train_embedder.from_saved(ckpt).head[1].p == 0.4


def test_sharpness_aware_gradients_are_taken_uphill_and_leave_weights_and_statistics_alone() -> None:
    from train.sam import sharpness_aware_gradients

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    x, y = torch.randn(16, 3), torch.randn(16, 1)

    def loss() -> torch.Tensor:
        return (net(x) - y).pow(2).mean()

    loss().backward()
    plain = [p.grad.clone() for p in net.parameters()]
    weights = [p.detach().clone() for p in net.parameters()]
    stats = net[1].running_mean.clone()
    rho = 0.1
    sharpness_aware_gradients(net, rho, loss)
    assert all(torch.equal(p, w) for p, w in zip(net.parameters(), weights))    # back at w
    assert torch.equal(net[1].running_mean, stats)                              # the second pass not counted
    assert net[1].momentum == 0.1
    # the gradient now is the one at w + rho * g / |g|, computed by hand
    norm = torch.norm(torch.stack([g.norm() for g in plain]))
    uphill = copy.deepcopy(net)
    with torch.no_grad():
        for p, g in zip(uphill.parameters(), plain):
            p.add_(rho * g / norm)
    uphill.zero_grad()
    (uphill(x) - y).pow(2).mean().backward()
    assert all(torch.allclose(p.grad, q.grad, atol=1e-6) for p, q in zip(net.parameters(), uphill.parameters()))
    assert not all(torch.allclose(p.grad, g) for p, g in zip(net.parameters(), plain))


def test_sharpness_aware_run_trains_and_is_saved(tmp_path: Path) -> None:
    from train import train_embedder

    cache, start, net = synthetic_cache_and_start(tmp_path)
    run = tmp_path / "run"
    train_embedder.main(["--out", str(run), "--cache", str(cache), "--p", "4", "--k", "2", "--eval-every", "100",
                         "--warmup", "1", "--threads", "1", "--input-size", "64", "--steps", "3", "--init",
                         str(start), "--sam", "0.05"])
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert ckpt["step"] == 3 and float(ckpt["args"]["sam"]) == 0.05
    assert not torch.equal(ckpt["model"]["head.3.weight"], net.state_dict()["head.3.weight"])


def test_mirror_loss_trains_the_two_pass_embedding_and_is_saved(tmp_path: Path) -> None:
    from embedder.model import embed
    from train import train_embedder

    cache, start, net = synthetic_cache_and_start(tmp_path)
    x = torch.rand(3, 3, 64, 64)
    net.eval()
    with torch.no_grad():
        assert torch.allclose(train_embedder.training_embedding(net, x, True), embed(net, x, mirror=True), atol=1e-6)
        assert torch.allclose(train_embedder.training_embedding(net, x, False), embed(net, x, mirror=False),
                              atol=1e-6)
        assert not torch.allclose(train_embedder.training_embedding(net, x, True), embed(net, x, mirror=False),
                                  atol=1e-3)
    run = tmp_path / "run"
    train_embedder.main(["--out", str(run), "--cache", str(cache), "--p", "4", "--k", "2", "--eval-every", "100",
                         "--warmup", "1", "--threads", "1", "--input-size", "64", "--steps", "3", "--init",
                         str(start), "--mirror-loss"])
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert ckpt["step"] == 3 and ckpt["args"]["mirror_loss"] is True
    assert not torch.equal(ckpt["model"]["head.3.weight"], net.state_dict()["head.3.weight"])
