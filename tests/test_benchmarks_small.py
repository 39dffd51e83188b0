"""The benchmarks' metric functions on synthetic numbers: no data, no models, never skipped.

The benchmarks' verdicts (oneshot vs dlib vs the openvino reference) rest on these few functions, so their edge
cases — photos without a face, ties, thresholds tuned to a strangers-named rate — are pinned down here.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
import math

import numpy as np
import pytest

from benchmarks.lfw import open_set, read_pairs, subset
from benchmarks.open_set import (
    best_threshold, every_third_stranger, named_at_fpir, nearest, one_shot_split, outcomes, rank1, tar_at_far,
    ten_fold_accuracy, threshold_at_fpir,
)
from benchmarks.real_photos import Answers, evaluate, own_outcomes, split_photos

INF = math.inf


def test_threshold_at_fpir_names_at_most_that_fraction_of_strangers() -> None:
    strangers = np.linspace(0.1, 1.0, 10)
    assert threshold_at_fpir(strangers, 0.0) == pytest.approx(0.1)     # nobody below the smallest
    assert threshold_at_fpir(strangers, 0.05) == pytest.approx(0.1)    # floor(0.5) = 0 strangers
    assert threshold_at_fpir(strangers, 0.1) == pytest.approx(0.2)     # exactly 1 stranger (0.1) below
    assert np.mean(strangers < threshold_at_fpir(strangers, 0.3)) == pytest.approx(0.3)


def test_strangers_without_a_face_count_in_the_denominator_and_are_never_named() -> None:
    strangers = np.array([0.5, INF, INF, INF])
    assert threshold_at_fpir(strangers, 0.25) == INF                   # one of four may be named: all with a face
    result = named_at_fpir(np.array([0.3, INF]), np.array([True, False]), strangers, 0.25)
    assert result["strangers_named"] == pytest.approx(0.25)
    assert result["named_correctly"] == pytest.approx(0.5)             # the faceless probe is not named
    assert result["unknown"] == pytest.approx(0.5)


def test_outcomes_split_probes_into_right_wrong_unknown() -> None:
    dist = np.array([0.1, 0.2, 0.9, INF])
    right = np.array([True, False, True, False])
    result = outcomes(dist, right, np.array([0.3, 0.8]), 0.5)
    assert (result["named_correctly"], result["named_wrongly"], result["unknown"]) == (0.25, 0.25, 0.5)
    assert result["strangers_named"] == 0.5
    assert rank1(dist, right) == pytest.approx(2 / 3)                  # among the 3 probes with a face


def test_named_at_fpir_matches_a_direct_count() -> None:
    rng = np.random.default_rng(0)
    probes, strangers = rng.uniform(0, 1, 200), rng.uniform(0.5, 1.5, 100)
    right = rng.uniform(size=200) < 0.8
    result = named_at_fpir(probes, right, strangers, 0.05)
    tau = result["threshold"]
    assert np.sum(strangers < tau) == 5
    assert result["named_correctly"] == pytest.approx(np.mean((probes < tau) & right))


def test_nearest_skips_rows_without_a_face() -> None:
    gallery = np.array([[1.0, 0.0], [np.nan, np.nan], [0.0, 1.0]])
    queries = np.array([[0.9, 0.1], [np.nan, np.nan], [0.1, 0.9]])
    index, dist = nearest(queries, gallery)
    assert index.tolist() == [0, -1, 2]
    assert dist[1] == INF and dist[0] == pytest.approx(np.hypot(0.1, 0.1))


def test_one_shot_split_enrols_first_photo_and_every_third_identity_is_a_stranger() -> None:
    identities = ["7", "7", "7", "3", "3", "12", "12", "5"]       # by number: 3, 5, 7, 12 → 7 is the stranger
    assert every_third_stranger(identities) == {"7"}
    split = split_photos(identities)
    assert split.stranger_rows == [0, 1, 2]
    assert split.enrolled == ["3", "12", "5"] and split.enrol_rows == [3, 5, 7]
    assert split.probe_rows == [4, 6] and split.probe_people == ["3", "12"]
    lfw_style = one_shot_split(identities, lambda _person, rows: len(rows) < 2)
    assert lfw_style.stranger_rows == [7] and lfw_style.enrolled == ["7", "3", "12"]


def test_ten_fold_accuracy_on_separable_pairs_is_perfect() -> None:
    rng = np.random.default_rng(1)
    same = np.tile([True] * 30 + [False] * 30, 10)
    fold = np.repeat(np.arange(10), 60)
    dist = np.where(same, rng.uniform(0.2, 0.6, 600), rng.uniform(0.8, 1.4, 600))
    result = ten_fold_accuracy(dist, same, fold)
    assert result["mean"] == 1.0 and result["std"] == 0.0
    assert all(0.6 <= t <= 0.8 for t in result["thresholds"])


def test_best_threshold_maximises_accuracy() -> None:
    dist = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    same = np.array([True, True, False, True, False, False])
    tau = best_threshold(dist, same)
    assert np.mean((dist < tau) == same) == pytest.approx(5 / 6)
    assert best_threshold(np.array([0.5, 0.6]), np.array([False, False])) <= 0.5   # name nothing


def test_tar_at_far() -> None:
    same = np.array([True] * 4 + [False] * 10)
    dist = np.concatenate([[0.1, 0.2, 0.3, 0.9], np.linspace(0.25, 1.6, 10)])
    result = tar_at_far(dist, same, 0.1)                           # 1 of 10 impostors may pass
    assert result["far"] == pytest.approx(0.1)
    assert result["tar"] == pytest.approx(0.75)


def _clustered(people: int, per_person: int, noise: float, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, 64))
    vectors = np.repeat(centres, per_person, axis=0) + noise * rng.normal(size=(people * per_person, 64))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, [str(i) for i in np.repeat(np.arange(people), per_person)]


def test_lfw_open_set_on_well_separated_synthetic_vectors() -> None:
    vectors, identities = _clustered(20, 3, 0.05)
    single, single_ids = _clustered(10, 1, 0.0, seed=1)
    result = open_set(np.vstack([vectors, single]), identities + [f"s{i}" for i in single_ids],
                      product_threshold=lambda n: 0.5)
    assert (result["enrolled"], result["probes"], result["strangers"]) == (20, 40, 10)
    assert result["rank1"] == 1.0 and result["at_fpir_1%"]["named_correctly"] == 1.0
    assert result["product_threshold"]["people"] == 20 and result["product_threshold"]["strangers_named"] == 0.0


def test_lfw_pairs_and_subset(tmp_path) -> None:
    (tmp_path / "protocol").mkdir()
    (tmp_path / "protocol" / "pairs.txt").write_text("2\t1\nA\t1\t2\nA\t1\tB\t1\nB\t1\t2\nA\t2\tB\t2\n")
    names = ["images/A/A_0001.jpg", "images/A/A_0002.jpg", "images/B/B_0001.jpg", "images/B/B_0002.jpg"]
    pairs, same, fold = read_pairs(tmp_path, {n: i for i, n in enumerate(names)})
    assert pairs.tolist() == [[0, 1], [0, 2], [2, 3], [1, 3]]
    assert same.tolist() == [True, False, True, False] and fold.tolist() == [0, 0, 1, 1]
    photos, kept, kept_same, kept_fold = subset(names, pairs, same, fold, every=2)   # pairs 0 and 2
    assert photos == names and kept.tolist() == [[0, 1], [2, 3]] and kept_same.all()


def _answers(system: str, probe_dist: list[float], right: list[bool], stranger_dist: list[float],
             **own: object) -> Answers:
    return Answers(system, 5, 6, 2, np.array(probe_dist), np.array(right), np.array(stranger_dist), **own)


def test_real_photos_operating_points_tie_thresholds_across_systems() -> None:
    split = split_photos(["1", "1", "1", "2", "2", "3", "3"])      # 3 is the stranger: enrol 1 and 2
    assert split.probe_people == ["1", "1", "2"] and len(split.stranger_rows) == 2
    ours = _answers("oneshot", [0.3, 0.6, 0.4], [True, True, False], [0.5, 0.9], own_threshold=0.55,
                    own_probe_names=["1", None, "1"], own_stranger_names=["1", None])
    dlib = _answers("dlib", [0.5, 0.7, INF], [True, True, False], [0.55, 0.65])
    reference = _answers("openvino_reference", [0.2, 0.3, 0.4], [True, True, True], [0.35, 1.0])
    own = own_outcomes(ours, split)
    assert own["named_correctly"] == pytest.approx(1 / 3) and own["named_wrongly"] == pytest.approx(1 / 3)
    assert own["strangers_named"] == 0.5
    report = evaluate({"oneshot": ours, "dlib": dlib, "openvino_reference": reference}, split)
    assert report["dlib"]["standard_0.6"]["strangers_named"] == 0.5           # 0.55 < 0.6
    assert report["dlib"]["at_oneshot_strangers_named"]["strangers_named"] == 0.5
    reference_point = report["openvino_reference"]["at_oneshot_strangers_named"]   # 1 of 2 strangers: τ = 1.0
    assert reference_point["threshold"] == 1.0 and reference_point["named_correctly"] == 1.0
    assert report["oneshot"]["at_dlib_0.6_strangers_named"]["threshold"] == pytest.approx(0.9)
    assert report["dlib"]["rank1"] == 1.0 and report["dlib"]["face_found"] == pytest.approx(5 / 6)


def test_gallery_scale_prints_the_issues_keys(tmp_path: Path) -> None:
    """`python -m benchmarks.gallery_scale --people N --json` end to end at a small N (synthetic vectors, so it
    needs no dataset): one JSON object with every key issue 32 names, and exact recall below the IVF size; then
    benchmarks.gallery_tradeoff on the gallery it kept."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "benchmarks.gallery_scale", "--people", "3000", "--json",
                           "--synthetic", "--keep", "--home", str(tmp_path / "g")], cwd=root, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for key in ("people", "search_p50_ms", "search_p99_ms", "recall_at_1", "enrol_ms", "remove_ms", "open_ms",
                "peak_rss_mb", "disk_bytes_per_person"):
        assert key in result, key
    assert result["people"] == 3000 and result["recall_at_1"] == 1.0 and result["real_vectors"] == 0
    swept = subprocess.run([sys.executable, "-m", "benchmarks.gallery_tradeoff", "--home", str(tmp_path / "g"),
                            "600000:512:8", "600000:512:32"], cwd=root, capture_output=True, text=True, timeout=600)
    assert swept.returncode == 0, swept.stderr
    lines = swept.stdout.splitlines()
    assert len(lines) == 2 and all(line.endswith("recall@1 1.000") for line in lines), lines
