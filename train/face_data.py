"""Training faces: the aligned-crop caches of `train.crops`, identity splits, P×K batches, teacher vectors.

Validation people are held out by *group* (a CelebA identity, or a whole FIW family) so relatives of a
validation person never appear in training, which would flatter the calibration.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRAIN_SETS = ("celeba", "fiw")


@dataclass
class FaceSet:
    images: np.ndarray        # (N, 112, 112, 3) uint8, memory-mapped or in RAM
    labels: np.ndarray        # (N,) int64 person index
    teacher: np.ndarray       # (N, 128) float32 centred + normalised dlib vector (zeros where missing)
    has_teacher: np.ndarray   # (N,) bool
    people: list[str]         # person index → identity string
    rows: np.ndarray          # (N,) index of each photo among all faces of both sets (celeba then fiw, has_face)


def _group_of(identity: str) -> str:
    """FIW identities are `fiw:F0001_MID1`: the family `F0001` is the group; CelebA people are their own group."""
    dataset, name = identity.split(":", 1)
    return f"{dataset}:{name.split('_')[0]}" if dataset == "fiw" else identity


def centre_teacher(vectors: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """dlib vectors as distillation targets: minus the training people's mean, L2-normalised (a vector equal to
    the mean, used for photos dlib missed, becomes zeros)."""
    centred = vectors - mean
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return (centred / np.maximum(norms, 1e-6)).astype(np.float32)


def load_training_faces(cache: Path, val_fraction: float = 0.1, seed: int = 0) -> tuple[FaceSet, FaceSet, np.ndarray]:
    """Both training sets, split into (train, validation) by group; also returns the dlib mean used for centring."""
    images, identities, teacher = [], [], []
    for name in TRAIN_SETS:
        meta = json.loads((cache / f"{name}.json").read_text())
        keep = np.array(meta["has_face"], dtype=bool)
        arr = np.load(cache / f"{name}.npy", mmap_mode="r")
        images.append(np.ascontiguousarray(arr[keep]))
        identities += [i for i, k in zip(meta["identities"], keep) if k]
        teacher.append(np.load(cache / f"{name}.dlib.npy").astype(np.float32)[keep])
    all_images = np.concatenate(images)
    all_teacher = np.concatenate(teacher)
    has_teacher = ~np.isnan(all_teacher).any(axis=1)

    groups = sorted({_group_of(i) for i in identities})
    rng = np.random.default_rng(seed)
    val_groups = set(rng.choice(groups, size=int(len(groups) * val_fraction), replace=False).tolist())
    is_val = np.array([_group_of(i) in val_groups for i in identities])

    # dlib's vectors share a large mean (random pairs have cosine ≈ 0.84): centre on the *training* people only.
    mean = all_teacher[has_teacher & ~is_val].mean(axis=0)
    centred = centre_teacher(np.where(has_teacher[:, None], all_teacher, mean), mean)

    def subset(mask: np.ndarray) -> FaceSet:
        ids = [i for i, m in zip(identities, mask) if m]
        people = sorted(set(ids))
        index = {p: k for k, p in enumerate(people)}
        return FaceSet(
            images=all_images[mask],
            labels=np.array([index[i] for i in ids], dtype=np.int64),
            teacher=centred[mask],
            has_teacher=has_teacher[mask],
            people=people,
            rows=np.flatnonzero(mask),
        )

    return subset(~is_val), subset(is_val), mean


class PKSampler:
    """Yields batches of P people × K photos each (people with fewer photos are sampled with repetition).

    With `groups` (each person's family, from `family_groups`) and `relatives` > 0, about that share of the P
    people come in whole families: batch-hard mining can only pick an impostor that is in the batch, and a random
    batch almost never holds two relatives, while at a real door siblings and parents are the impostors that
    look most alike (FIW's families are there for this)."""

    def __init__(self, labels: np.ndarray, p: int, k: int, seed: int,
                 groups: np.ndarray | None = None, relatives: float = 0.0) -> None:
        self.p, self.k = p, k
        self.rng = np.random.default_rng(seed)
        order = np.argsort(labels, kind="stable")
        bounds = np.flatnonzero(np.diff(labels[order])) + 1
        self.by_person = [g for g in np.split(order, bounds) if len(g) >= 2]
        person_label = np.array([int(labels[g[0]]) for g in self.by_person])
        self.families: list[np.ndarray] = []
        if groups is not None and relatives > 0:
            group_of = groups[person_label]
            self.families = [np.flatnonzero(group_of == g) for g in np.unique(group_of)]
            self.families = [f for f in self.families if len(f) >= 2]
        # never more than the families hold, or the loop below could not finish
        self.in_families = min(relatives * p, sum(len(f) for f in self.families))

    def batch(self) -> np.ndarray:
        chosen: list[int] = []
        while len(chosen) < self.in_families:
            family = self.families[self.rng.integers(len(self.families))]
            members = [m for m in self.rng.permutation(family).tolist() if m not in chosen]
            chosen += members[: self.p - len(chosen)]
        rest = np.setdiff1d(np.arange(len(self.by_person)), chosen)
        people = chosen + self.rng.choice(rest, size=self.p - len(chosen), replace=False).tolist()
        out = []
        for person in people:
            photos = self.by_person[person]
            out.append(self.rng.choice(photos, size=self.k, replace=len(photos) < self.k))
        return np.concatenate(out)


def family_groups(faces: FaceSet) -> np.ndarray:
    """Person index → family number: FIW people share their family's number, every CelebA person has their own."""
    names = [_group_of(person) for person in faces.people]
    index = {name: i for i, name in enumerate(sorted(set(names)))}
    return np.array([index[name] for name in names], dtype=np.int64)
