"""Embedding evaluation shared by training (validation people), calibration and the LFW benchmark.

Everything is measured on Euclidean distances between unit vectors, the quantity the product thresholds.
"""
from __future__ import annotations

import numpy as np
import torch

from embedder.api import distance, distance_from_cosine
from embedder.layers import bgr_tensor
from embedder.model import embed

__all__ = ["distance", "embed_array", "every_pair", "roc", "far_upper_bound", "tar_at_far", "verification_report",
           "PairTable", "paired_bootstrap"]


@torch.no_grad()
def embed_array(model: torch.nn.Module, images: np.ndarray, batch: int = 256, mirror: bool = False) -> np.ndarray:
    """(N, 128, 128, 3) uint8 RGB crops → (N, dim) unit vectors, exactly as the product embeds a crop; with
    `mirror`, the normalised sum of the crop's and its mirror image's vectors (an option judged on held-out
    people, not the product's default)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch):
        x = bgr_tensor(np.asarray(images[start:start + batch]))
        vectors = embed(model, x)
        if mirror:
            vectors = torch.nn.functional.normalize(vectors + embed(model, x.flip(3)), dim=1)
        out.append(vectors.numpy())
    return np.concatenate(out).astype(np.float32)


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


def every_pair(emb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Distances and same-person flags of every pair of photos (i < j), and the pairs' (i, j) indices: from one
    Gram matrix, so ~2,600 photos (3.5 M pairs) cost ~28 MB rather than two gathered copies of the vectors."""
    i, j = np.triu_indices(len(labels), k=1)
    gram = emb @ emb.T
    dist = distance_from_cosine(gram[i, j]).astype(np.float32)
    return dist, labels[i] == labels[j], (i, j)


def roc(dist: np.ndarray, same: np.ndarray, points: int = 400) -> dict:
    """FAR and TAR as functions of the distance threshold (accept when distance < threshold).

    Thresholds are spaced by the quantiles of the impostor distances at the low end (where FAR is small and the
    product operates) plus a uniform grid, so a lookup at FAR 1e-5 is as precise as one at 1e-1.
    """
    neg = np.sort(dist[~same])
    pos = np.sort(dist[same])
    low = neg[np.unique(np.geomspace(1, len(neg), points).astype(int) - 1)]
    grid = np.unique(np.concatenate([low, np.linspace(0.0, 2.0, points)]).round(5))
    passed = np.searchsorted(neg, grid, side="left")
    far = passed / len(neg)
    tar = np.searchsorted(pos, grid, side="left") / max(len(pos), 1)
    return {"distance": grid.tolist(), "far": far.tolist(), "tar": tar.tolist(),
            # an upper bound everywhere, also where no impostor got through (then the rule-of-three bound ≈ 3/n):
            # a count of 0 from n pairs says the rate is below ~3/n, not that it is 0
            "far_upper": far_upper_bound(passed, len(neg)).tolist(),
            "impostor_pairs": int(len(neg)), "genuine_pairs": int(len(pos))}


def far_upper_bound(passed: np.ndarray, impostors: int, confidence: float = 0.95) -> np.ndarray:
    """One-sided upper confidence bound on the false accept rate when `passed` of `impostors` pairs got through.

    Why: a large gallery needs a per-comparison FAR of a few in a million, where even 3 M held-out impostor pairs
    hold only a handful below the threshold, and the count of a handful is noisy (12 observed is consistent with a
    true rate 1.6x higher). Reading the threshold at the bound rather than at the count errs towards `unknown`,
    the safe side at a door; where many impostors pass, bound and count agree. Exact for a Poisson count:
    the rate λ at which P(X ≤ passed) = 1 − confidence, found by bisection on the regularised incomplete gamma
    (P(X ≤ k; λ) = Q(k + 1, λ))."""
    k = torch.as_tensor(np.asarray(passed), dtype=torch.float64)
    lo = k.clone()
    hi = k + 10.0 * torch.sqrt(k + 1.0) + 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        too_likely = torch.special.gammaincc(k + 1.0, mid) > 1.0 - confidence   # λ still consistent with k
        lo = torch.where(too_likely, mid, lo)
        hi = torch.where(too_likely, hi, mid)
    return np.minimum(hi.numpy() / impostors, 1.0)


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


class PairTable:
    """Every pair of photos of a labelled set, sorted by distance, with who is in each: what a bootstrap over
    people reweights. ~2,600 held-out photos make 3.5 M pairs, so nothing here is sampled."""

    def __init__(self, emb: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> None:
        """`labels`: photo → person; `groups`: person → resampling unit (a FIW family, or a CelebA person alone),
        so that relatives, whose photos are not independent, are drawn together."""
        dist, same, (i, j) = every_pair(emb, labels)
        order = np.argsort(dist, kind="stable")
        self.dist = dist[order]
        self.same = same[order]
        self.group_i = groups[labels[i]][order]
        self.group_j = groups[labels[j]][order]
        self.n_groups = int(groups.max()) + 1

    def weights(self, counts: np.ndarray) -> np.ndarray:
        """Pair weights for one bootstrap draw: `counts[g]` copies of group g. A pair within one group counts once
        per copy of it, a pair across two groups once per combination of their copies."""
        w = counts[self.group_i].astype(np.float64)
        across = self.group_i != self.group_j
        w[across] *= counts[self.group_j[across]]
        return w

    def metrics(self, w: np.ndarray | None = None, fars: tuple[float, ...] = (1e-3, 1e-4)) -> dict[str, float]:
        """Balanced accuracy at the best threshold and TAR at each FAR, with pair weights `w` (None = all 1)."""
        w = np.ones(len(self.dist)) if w is None else w
        genuine = np.cumsum(np.where(self.same, w, 0.0))
        impostor = np.cumsum(np.where(self.same, 0.0, w))
        # a bootstrap draw of a tiny set can hold no genuine (or no impostor) pair: count it as chance, not NaN
        n_gen, n_imp = max(genuine[-1], 1e-12), max(impostor[-1], 1e-12)
        # accept the first k pairs (distance below a threshold between pair k-1 and k)
        accuracy = 0.5 * (genuine / n_gen + 1.0 - impostor / n_imp)
        out = {"accuracy": float(max(0.5, accuracy.max()))}
        for far in fars:
            # the largest threshold that lets at most `far` of the impostor weight through
            k = int(np.searchsorted(impostor, far * n_imp, side="right"))
            out[f"tar@far{far:.0e}".replace("e-0", "e-")] = float(genuine[k - 1] / n_gen) if k > 0 else 0.0
        return out


def paired_bootstrap(tables: dict[str, PairTable], baseline: str, draws: int = 300,
                     seed: int = 0) -> dict[str, dict]:
    """Each model's metrics, and for every other model its difference from `baseline` under a bootstrap over the
    held-out groups (the same draws for all models, so shared luck cancels): the difference, its 90 % interval and the
    probability that the model is better. Releases now differ by about one standard error on these people, so a
    single number no longer says which is better; the interval does."""
    rng = np.random.default_rng(seed)
    n_groups = next(iter(tables.values())).n_groups
    point = {name: t.metrics() for name, t in tables.items()}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in tables}
    for _ in range(draws):
        counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups))
        for name, t in tables.items():
            samples[name].append(t.metrics(t.weights(counts)))
    out: dict[str, dict] = {}
    for name in tables:
        entry: dict = {"metrics": point[name]}
        if name != baseline:
            entry["vs_" + baseline] = {}
            for key in point[name]:
                delta = np.array([s[key] - b[key] for s, b in zip(samples[name], samples[baseline])])
                entry["vs_" + baseline][key] = {
                    "difference": point[name][key] - point[baseline][key],
                    "interval_90": [float(np.quantile(delta, 0.05)), float(np.quantile(delta, 0.95))],
                    "p_better": float(np.mean(delta > 0)),
                }
        out[name] = entry
    return out


def open_set(emb: np.ndarray, identities: list[str], strangers: set[str]) -> dict[str, float]:
    """One-shot open-set identification on a labelled set: every non-stranger enrolled from their first photo and
    probed with the rest; every stranger photo probes too. Rank-1 (nearest enrolled person right), and DIR (named
    correctly) at the threshold where 1 % / 5 % of the stranger probes would be named."""
    first: dict[str, int] = {}
    for row, person in enumerate(identities):
        if person not in strangers:
            first.setdefault(person, row)
    enrolled = list(first)
    gallery = emb[[first[p] for p in enrolled]]
    probes = [r for r, p in enumerate(identities) if p not in strangers and first[p] != r]
    stranger_rows = [r for r, p in enumerate(identities) if p in strangers]

    def nearest(rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        dist = distance(emb[rows][:, None, :], gallery[None, :, :])
        return dist.argmin(1), dist.min(1)

    who, dist = nearest(probes)
    right = np.array([enrolled[w] == identities[r] for w, r in zip(who, probes)])
    _, stranger_dist = nearest(stranger_rows)
    ordered = np.sort(stranger_dist)
    out = {"enrolled": len(enrolled), "probes": len(probes), "stranger_probes": len(stranger_rows),
           "rank1": float(right.mean())}
    for fpir in (0.01, 0.05):
        threshold = ordered[int(np.floor(fpir * len(ordered)))]          # names at most fpir of the strangers
        out[f"dir@fpir{fpir:g}"] = float(np.mean(right & (dist < threshold)))
    return out
