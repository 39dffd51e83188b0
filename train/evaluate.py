"""Embedding evaluation shared by training (validation people), calibration and the LFW benchmark.

Everything is measured on Euclidean distances between unit vectors, the quantity the product thresholds.
"""
from __future__ import annotations

import numpy as np
import torch

from embedder.model import EmbeddingNet, embed


@torch.no_grad()
def embed_array(model: EmbeddingNet, images: np.ndarray, batch: int = 256, flip: bool = True,
                bf16: bool = False) -> np.ndarray:
    """(N, 112, 112, 3) uint8 crops → (N, dim) unit vectors; with `flip`, the mean of the photo and its mirror;
    with `bf16`, under the bf16 autocast the product uses on CPUs with native bf16."""
    model.eval()
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch])).permute(0, 3, 1, 2).float() / 255
        out.append(embed(model, x, mirror=flip, bf16=bf16).numpy())
    return np.concatenate(out).astype(np.float32)


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Euclidean distance of unit vectors."""
    return np.sqrt(np.clip(2.0 - 2.0 * np.sum(a * b, axis=1), 0.0, None))


def all_pairs(labels: np.ndarray, max_negatives: int = 500_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every same-person pair and a random sample of different-person pairs, as (index pairs, same flags)."""
    rng = np.random.default_rng(seed)
    pos = []
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for group in np.split(order, bounds):
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                pos.append((group[i], group[j]))
    n = len(labels)
    a = rng.integers(0, n, size=max_negatives * 2)
    b = rng.integers(0, n, size=max_negatives * 2)
    keep = labels[a] != labels[b]
    neg = np.stack([a[keep], b[keep]], axis=1)[:max_negatives]
    pairs = np.concatenate([np.array(pos, dtype=np.int64).reshape(-1, 2), neg])
    same = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
    return pairs, same


def roc(dist: np.ndarray, same: np.ndarray, points: int = 400) -> dict[str, list[float]]:
    """FAR and TAR as functions of the distance threshold (accept when distance < threshold).

    Thresholds are spaced by the quantiles of the impostor distances at the low end (where FAR is small and the
    product operates) plus a uniform grid, so a lookup at FAR 1e-5 is as precise as one at 1e-1.
    """
    neg = np.sort(dist[~same])
    pos = np.sort(dist[same])
    low = neg[np.unique(np.geomspace(1, len(neg), points).astype(int) - 1)]
    grid = np.unique(np.concatenate([low, np.linspace(0.0, 2.0, points)]).round(5))
    far = np.searchsorted(neg, grid, side="left") / len(neg)
    tar = np.searchsorted(pos, grid, side="left") / max(len(pos), 1)
    return {"distance": grid.tolist(), "far": far.tolist(), "tar": tar.tolist()}


def tar_at_far(dist: np.ndarray, same: np.ndarray, far: float) -> tuple[float, float]:
    """(TAR, threshold) at the largest threshold whose false accept rate is ≤ `far`."""
    neg = np.sort(dist[~same])
    k = int(np.floor(far * len(neg)))
    threshold = neg[k] if k < len(neg) else 2.0
    return float(np.mean(dist[same] < threshold)), float(threshold)


def best_accuracy(dist: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(accuracy, threshold) of the best single threshold on these pairs."""
    order = np.argsort(dist)
    d, s = dist[order], same[order]
    # accept the first i pairs: correct = positives among them + negatives after them
    correct = np.concatenate([[0], np.cumsum(s)]) + np.concatenate([[(~s).sum()], (~s).sum() - np.cumsum(~s)])
    i = int(np.argmax(correct))
    threshold = d[i - 1] if i > 0 else 0.0
    threshold = (threshold + d[i]) / 2 if 0 < i < len(d) else threshold
    return float(correct[i] / len(d)), float(threshold)


def verification_report(emb: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Pair metrics on a labelled set: best accuracy, TAR at FAR 1e-3 and 1e-4, mean genuine/impostor distance."""
    pairs, same = all_pairs(labels)
    dist = distance(emb[pairs[:, 0]], emb[pairs[:, 1]])
    # accuracy on a balanced subset (all genuine pairs, as many impostors), like LFW's 50/50 folds
    balanced = np.concatenate([np.flatnonzero(same), np.flatnonzero(~same)[: int(same.sum())]])
    acc, thr = best_accuracy(dist[balanced], same[balanced])
    tar3, thr3 = tar_at_far(dist, same, 1e-3)
    tar4, _ = tar_at_far(dist, same, 1e-4)
    return {
        "accuracy": acc, "accuracy_threshold": thr, "tar@far1e-3": tar3, "threshold@far1e-3": thr3,
        "tar@far1e-4": tar4, "genuine_mean": float(dist[same].mean()), "impostor_mean": float(dist[~same].mean()),
        "pairs_genuine": int(same.sum()), "pairs_impostor": int((~same).sum()),
    }
