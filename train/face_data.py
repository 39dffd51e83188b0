"""Training faces: the aligned-crop caches of `train.crops`, the held-out split, P×K batches.

Training people: CelebA, FIW and the celeba-wild photos of people who are also in CelebA (their whole photos,
aligned by the product's own face finder, are the kind users take). celeba-wild's other 122 people are never read
here: they are the real-photo benchmark's (`benchmarks/real_photos.py`).

Validation people are held out by *group* (a CelebA identity, or a whole FIW family) so relatives of a
validation person never appear in training, which would flatter the comparison and the calibration.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRAIN_SETS = ("celeba", "fiw", "celeba-wild")


@dataclass
class FaceSet:
    images: np.ndarray        # (N, 128, 128, 3) uint8 RGB aligned crops
    labels: np.ndarray        # (N,) int64 person index
    people: list[str]         # person index → identity string
    groups: np.ndarray        # person index → resampling group (a FIW family; a CelebA person alone)
    real: np.ndarray          # (N,) bool: a whole photo with background (celeba-wild), the kind users take


def group_of(identity: str) -> str:
    """FIW identities are `fiw:F0001_MID1`: the family `F0001` is the group; CelebA people are their own group."""
    dataset, name = identity.split(":", 1)
    return f"{dataset}:{name.split('_')[0]}" if dataset == "fiw" else identity


def load_training_faces(cache: Path, val_fraction: float = 0.1, seed: int = 0) -> tuple[FaceSet, FaceSet]:
    """All training photos with a face, split into (train, held-out validation) by group."""
    images, identities, real = [], [], []
    for name in TRAIN_SETS:
        meta = json.loads((cache / f"{name}.json").read_text())
        # celeba-wild's validation people (in no training folder) never enter training or this split
        keep = np.array([bool(s) and t for s, t in zip(meta["source"], meta["in_training_folder"])], dtype=bool)
        arr = np.load(cache / f"{name}.npy", mmap_mode="r")
        images.append(np.ascontiguousarray(arr[keep]))
        identities += [i for i, k in zip(meta["identities"], keep) if k]
        real += [name == "celeba-wild"] * int(keep.sum())
    all_images = np.concatenate(images)
    groups = sorted({group_of(i) for i in identities})
    rng = np.random.default_rng(seed)
    val_groups = set(rng.choice(groups, size=int(len(groups) * val_fraction), replace=False).tolist())
    is_val = np.array([group_of(i) in val_groups for i in identities])
    is_real = np.array(real, dtype=bool)
    return (subset(all_images, identities, is_real, ~is_val), subset(all_images, identities, is_real, is_val))


def subset(images: np.ndarray, identities: list[str], real: np.ndarray, mask: np.ndarray) -> FaceSet:
    ids = [i for i, m in zip(identities, mask) if m]
    people = sorted(set(ids))
    index = {p: k for k, p in enumerate(people)}
    group_names = [group_of(p) for p in people]
    group_index = {g: k for k, g in enumerate(sorted(set(group_names)))}
    return FaceSet(images=images[mask], labels=np.array([index[i] for i in ids], dtype=np.int64), people=people,
                   groups=np.array([group_index[g] for g in group_names], dtype=np.int64), real=real[mask])


class PKSampler:
    """Batches of P people × K photos each (people with fewer photos are sampled with repetition); with
    `relatives` > 0, about that share of the P people come in whole families (FIW), so batch-hard mining meets the
    impostors that look most alike at a real door: siblings and parents. With `real_share` > 0 (and `real` given,
    one flag per photo), that share of the P people are people with whole photos with background, and half of each
    such person's K photos are those: the positives a door sees, a studio-like crop against a real photo."""

    def __init__(self, labels: np.ndarray, groups: np.ndarray, p: int, k: int, seed: int,
                 relatives: float = 0.0, real: np.ndarray | None = None, real_share: float = 0.0) -> None:
        self.p, self.k = p, k
        self.rng = np.random.default_rng(seed)
        order = np.argsort(labels, kind="stable")
        bounds = np.flatnonzero(np.diff(labels[order])) + 1
        self.by_person = [g for g in np.split(order, bounds) if len(g) >= 2]
        group_of_person = groups[np.array([int(labels[g[0]]) for g in self.by_person])]
        families = [np.flatnonzero(group_of_person == g) for g in np.unique(group_of_person)]
        self.families = [f for f in families if len(f) >= 2]
        # never more than the families hold, or the loop below could not finish
        self.in_families = min(relatives * p, sum(len(f) for f in self.families))
        is_real = np.zeros(len(labels), bool) if real is None else real
        self.real_rows = {person: rows[is_real[rows]] for person, rows in enumerate(self.by_person)
                          if is_real[rows].any()}
        self.with_real = np.array(sorted(self.real_rows), dtype=np.int64)
        self.in_real = int(round(min(real_share * p, len(self.with_real), p - self.in_families)))

    def batch(self) -> np.ndarray:
        chosen: list[int] = []
        while len(chosen) < self.in_families:
            family = self.families[self.rng.integers(len(self.families))]
            members = [m for m in self.rng.permutation(family).tolist() if m not in chosen]
            chosen += members[: self.p - len(chosen)]
        if self.in_real:
            candidates = np.setdiff1d(self.with_real, chosen)
            real_people = self.rng.choice(candidates, size=min(self.in_real, len(candidates), self.p - len(chosen)),
                                         replace=False)
            chosen += real_people.tolist()
        rest = np.setdiff1d(np.arange(len(self.by_person)), chosen)
        people = chosen + self.rng.choice(rest, size=self.p - len(chosen), replace=False).tolist()
        return np.concatenate([self._photos(person) for person in people])

    def _photos(self, person: int) -> np.ndarray:
        rows = self.by_person[person]
        real = self.real_rows.get(person) if self.in_real else None
        if real is None:
            return self.rng.choice(rows, size=self.k, replace=len(rows) < self.k)
        half = self.k // 2
        return np.concatenate([self.rng.choice(real, size=half, replace=len(real) < half),
                               self.rng.choice(rows, size=self.k - half, replace=len(rows) < self.k - half)])
