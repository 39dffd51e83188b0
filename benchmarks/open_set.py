"""Metrics shared by the benchmarks (real_photos, lfw): one-shot open-set identification and pair verification.

Pure numpy, no data and no models, so tests/test_benchmarks_small.py checks them on synthetic numbers.

Conventions, the same for every system so they compare fairly:
- a face is named when its distance to the nearest enrolled person is strictly below the threshold;
- a photo in which a system found no face has distance +inf: it is never named, but it stays in every
  denominator (a probe it missed is a probe not named; a stranger it missed is a stranger not named);
- FPIR (false-positive identification rate) = the fraction of stranger probes given any name;
  DIR (detection and identification rate) = the fraction of enrolled people's probes named correctly.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    """Who is enrolled from which photo, which photos probe them, and which photos are strangers (row indices)."""

    enrol_rows: list[int]           # one photo per enrolled person
    enrolled: list[str]             # their identities, in the same order
    probe_rows: list[int]           # the enrolled people's other photos
    probe_people: list[str]         # whose each probe is
    stranger_rows: list[int]        # every photo of the people who are not enrolled


def one_shot_split(identities: Sequence[str], is_stranger: Callable[[str, list[int]], bool]) -> Split:
    """Enrol each non-stranger from their first photo (row order), probe with the rest; strangers' photos are
    all probes. `is_stranger(identity, rows)` decides; identities are visited in first-appearance order."""
    rows_of: dict[str, list[int]] = {}
    for row, person in enumerate(identities):
        rows_of.setdefault(person, []).append(row)
    enrol_rows, enrolled, probe_rows, probe_people, stranger_rows = [], [], [], [], []
    for person, rows in rows_of.items():
        if is_stranger(person, rows):
            stranger_rows += rows
            continue
        enrol_rows.append(rows[0])
        enrolled.append(person)
        probe_rows += rows[1:]
        probe_people += [person] * (len(rows) - 1)
    return Split(enrol_rows, enrolled, probe_rows, probe_people, stranger_rows)


def every_third_stranger(identities: Sequence[str]) -> set[str]:
    """Sorted by identity number, every third identity (index % 3 == 2) is a stranger: a fixed, label-blind split."""
    ordered = sorted(set(identities), key=int)
    return {person for i, person in enumerate(ordered) if i % 3 == 2}


def nearest(queries: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the index of the nearest gallery row and the Euclidean distance to it.

    Rows with NaN (no face found) — in queries or gallery — take no part: such a query gets index -1 and distance
    +inf; such a gallery row (a person whose enrolment photo had no face) is never anyone's nearest.
    """
    queries = np.asarray(queries, np.float64)
    gallery = np.asarray(gallery, np.float64)
    index = np.full(len(queries), -1)
    dist = np.full(len(queries), np.inf)
    q_ok = ~np.isnan(queries).any(axis=1) if queries.size else np.zeros(len(queries), bool)
    g_ok = ~np.isnan(gallery).any(axis=1) if gallery.size else np.zeros(len(gallery), bool)
    if not q_ok.any() or not g_ok.any():
        return index, dist
    q, g = queries[q_ok], gallery[g_ok]
    squared = (q * q).sum(1)[:, None] + (g * g).sum(1)[None, :] - 2 * q @ g.T
    d = np.sqrt(np.clip(squared, 0, None))
    best = d.argmin(axis=1)
    index[q_ok] = np.flatnonzero(g_ok)[best]
    dist[q_ok] = d[np.arange(len(q)), best]
    return index, dist


def threshold_at_fpir(stranger_dists: np.ndarray, fpir: float) -> float:
    """The largest threshold that names at most floor(fpir · strangers) stranger probes (names: distance < τ).

    That is the (k+1)-th smallest stranger distance, k = floor(fpir · n): exactly k strangers lie strictly below
    it (fewer with ties). +inf when fewer than k+1 strangers have a face at all (every face may then be named).
    """
    dists = np.sort(np.asarray(stranger_dists, np.float64))
    if len(dists) == 0:
        return float("inf")
    k = int(np.floor(fpir * len(dists) + 1e-9))
    return float(dists[k]) if k < len(dists) else float("inf")


def outcomes(dist_to_nearest: np.ndarray, nearest_is_right: np.ndarray, stranger_dists: np.ndarray,
             threshold: float) -> dict[str, float]:
    """Fractions at one threshold: enrolled people's probes named correctly / wrongly / unknown, and strangers
    named (FPIR)."""
    dist = np.asarray(dist_to_nearest, np.float64)
    right = np.asarray(nearest_is_right, bool)
    named = dist < threshold
    strangers = np.asarray(stranger_dists, np.float64)
    return {
        "threshold": float(threshold),
        "named_correctly": _mean(named & right),
        "named_wrongly": _mean(named & ~right),
        "unknown": _mean(~named),
        "strangers_named": _mean(strangers < threshold),
    }


def named_at_fpir(dist_to_nearest: np.ndarray, nearest_is_right: np.ndarray, stranger_dists: np.ndarray,
                  fpir: float) -> dict[str, float]:
    """`outcomes` at the threshold where `fpir` of the stranger probes are named (`threshold_at_fpir`): compares
    systems at the same false-identification rate instead of at each one's own threshold. `named_correctly` is
    the DIR at that FPIR; `strangers_named` is the FPIR actually reached (≤ the target; the steps are 1/strangers)."""
    threshold = threshold_at_fpir(stranger_dists, fpir)
    return {"fpir_target": float(fpir), **outcomes(dist_to_nearest, nearest_is_right, stranger_dists, threshold)}


def rank1(dist_to_nearest: np.ndarray, nearest_is_right: np.ndarray) -> float:
    """Among probes in which a face was found, the fraction whose nearest enrolled person is the right one."""
    found = np.isfinite(np.asarray(dist_to_nearest, np.float64))
    return _mean(np.asarray(nearest_is_right, bool)[found])


def pair_distances(vectors: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Euclidean distance of each (row a, row b) pair."""
    return np.linalg.norm(vectors[pairs[:, 0]] - vectors[pairs[:, 1]], axis=1)


def best_threshold(dist: np.ndarray, same: np.ndarray) -> float:
    """The threshold with the highest pair accuracy (same ⇔ distance < τ), midway between neighbouring distances.

    Exact over every candidate: sorted by distance, a cut after position i calls the first i+1 pairs "same", so
    its accuracy is (same pairs up to i + different pairs after i) / n, one cumulative sum for all cuts.
    """
    order = np.argsort(dist, kind="stable")
    d, s = np.asarray(dist, np.float64)[order], np.asarray(same, bool)[order]
    same_below = np.cumsum(s)                       # same pairs among the first i+1
    diff_above = (~s).sum() - np.cumsum(~s)         # different pairs after position i
    correct = np.concatenate([[(~s).sum()], same_below + diff_above])  # cut before everything, then after each i
    cut = int(np.argmax(correct))
    if cut == 0:
        return float(d[0])
    if cut == len(d):
        return float(d[-1]) + 1e-6
    return float((d[cut - 1] + d[cut]) / 2)


def ten_fold_accuracy(dist: np.ndarray, same: np.ndarray, fold: np.ndarray) -> dict[str, object]:
    """LFW's View 2 protocol: for each fold, the threshold fitted on the other folds, accuracy on this one.
    Returns the mean, the standard deviation over folds, and each fold's accuracy and threshold."""
    accs, thresholds = [], []
    for k in np.unique(fold):
        train = fold != k
        tau = best_threshold(dist[train], same[train])
        accs.append(float(np.mean((dist[~train] < tau) == same[~train])))
        thresholds.append(tau)
    return {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "folds": accs, "thresholds": thresholds}


def tar_at_far(dist: np.ndarray, same: np.ndarray, far: float) -> dict[str, float]:
    """True-accept rate at the threshold where at most `far` of the different-person pairs are accepted."""
    threshold = threshold_at_fpir(dist[~same], far)
    return {"tar": _mean(dist[same] < threshold), "far": _mean(dist[~same] < threshold), "threshold": threshold}


def _mean(flags: np.ndarray) -> float:
    return float(np.mean(flags)) if np.size(flags) else float("nan")
