"""Thresholds from the model card's ROC: stricter for bigger galleries, never looser than the card's."""
from __future__ import annotations

from dataclasses import dataclass

import math

import pytest

from enroll.decision import (
    backed_gallery_size, decide, far_floor, impostor_pairs, per_comparison_far, threshold_for_gallery,
)

CARD = {
    "threshold": 0.9,
    "roc": {
        "distance": [0.2, 0.4, 0.6, 0.8, 1.0, 1.2],
        "far": [0.0, 0.0, 0.0001, 0.001, 0.01, 0.1],
        "tar": [0.1, 0.5, 0.8, 0.9, 0.95, 0.99],
    },
}


@dataclass(frozen=True)
class M:
    name: str
    distance: float


def test_per_comparison_far() -> None:
    assert per_comparison_far(1, 0.01) == pytest.approx(0.01)
    assert per_comparison_far(0, 0.01) == pytest.approx(0.01)       # empty gallery counts as one
    assert per_comparison_far(100, 0.01) == pytest.approx(1 - 0.99 ** 0.01)
    assert per_comparison_far(10**9, 0.01) == pytest.approx(0.01 / 10**9, rel=1e-2)
    with pytest.raises(ValueError):
        per_comparison_far(10, 0.0)


def test_small_gallery_is_capped_at_the_card_threshold() -> None:
    # FAR 0.01 is reached at distance 1.0, above the card's 0.9: the card's threshold wins.
    assert threshold_for_gallery(CARD, 1) == pytest.approx(0.9)


def test_interpolates_between_roc_points() -> None:
    # N=10 → FAR ≈ 0.001005, just past the 0.8 point.
    target = per_comparison_far(10)
    expected = 0.8 + (target - 0.001) * (1.0 - 0.8) / (0.01 - 0.001)
    assert threshold_for_gallery(CARD, 10) == pytest.approx(expected)


def test_bigger_gallery_gets_a_stricter_threshold() -> None:
    sizes = [1, 2, 10, 100, 1000, 10_000, 1_000_000]
    thresholds = [threshold_for_gallery(CARD, n) for n in sizes]
    assert all(a >= b for a, b in zip(thresholds, thresholds[1:]))
    assert thresholds[-1] < thresholds[0]


def test_target_below_resolution_stays_within_the_zero_far_range() -> None:
    # Beyond the ROC's resolution the threshold sits where FAR was measured as 0 (≤ 0.4), never looser.
    assert 0.4 <= threshold_for_gallery(CARD, 10**8) < 0.41


def test_roc_starting_above_target_extrapolates_towards_zero() -> None:
    card = {"threshold": 1.0, "roc": {"distance": [0.5, 1.0], "far": [0.1, 0.5], "tar": [0.5, 1.0]}}
    assert threshold_for_gallery(card, 1, fpir=0.05) == pytest.approx(0.25)


def test_card_without_roc_uses_its_threshold() -> None:
    assert threshold_for_gallery({"threshold": 0.77}, 1000) == 0.77


def test_decide() -> None:
    assert decide([], 0.9) is None
    assert decide([M("alice", 0.41), M("bob", 0.6)], 0.83) == "alice"
    assert decide([M("alice", 0.83)], 0.83) is None                  # strictly below the threshold
    assert decide([M("bob", 0.95), M("alice", 0.5)], 0.83) == "alice"  # nearest wins whatever the order


def test_upper_bound_of_the_far_makes_large_galleries_stricter_only() -> None:
    # The same ROC with an upper confidence bound on each FAR: where the bound sits above the count (the thin tail),
    # the threshold for a large gallery moves closer; small galleries, capped at the card's threshold, do not move.
    bounded = {**CARD, "roc": {**CARD["roc"], "far_upper": [3e-6, 5e-6, 0.0003, 0.0012, 0.0105, 0.1]}}
    assert threshold_for_gallery(bounded, 1) == threshold_for_gallery(CARD, 1) == 0.9
    for n in (100, 1000, 10_000):
        assert threshold_for_gallery(bounded, n) < threshold_for_gallery(CARD, n)


# -- the rule of three: a FAR of 0 counted on n impostor pairs is only "below 3/n" --------------------------------

# 100,000 impostor pairs: none closer than 0.8, one at 0.85, ten at 0.9, a hundred at 0.95, a thousand at 1.0.
TAILED = {
    "threshold": 1.0,
    "roc": {
        "distance": [0.2, 0.4, 0.6, 0.8, 0.85, 0.9, 0.95, 1.0, 1.2],
        "far": [0.0, 0.0, 0.0, 0.0, 1e-5, 1e-4, 1e-3, 1e-2, 0.1],
        "far_upper": [0.0, 0.0, 0.0, 0.0, 4.7e-5, 1.8e-4, 1.2e-3, 1.1e-2, 0.105],
        "tar": [0.1, 0.3, 0.5, 0.7, 0.75, 0.8, 0.85, 0.9, 0.99],
        "impostor_pairs": 100_000,
    },
}
OLD_STYLE = {**TAILED, "roc": {k: v for k, v in TAILED["roc"].items() if k != "impostor_pairs"}}


def test_backed_gallery_size_by_hand() -> None:
    # 3 / 100,000 = 3e-5; N ≤ ln(0.99) / ln(1 − 3e-5) = 0.0100503 / 0.0000300005 = 335.01 → 335.
    assert far_floor(TAILED) == pytest.approx(3e-5)
    assert backed_gallery_size(TAILED) == 335
    assert per_comparison_far(335) >= 3e-5 > per_comparison_far(336)
    # FPIR 10 %: ln(0.9) / ln(1 − 3e-5) = 0.1053605 / 0.0000300005 = 3511.96 → 3511.
    assert backed_gallery_size(TAILED, fpir=0.1) == 3511
    # 300 pairs back a FAR of 1 % at best: not even a single comparison at FPIR 0.5 %.
    few = {**TAILED, "roc": {**TAILED["roc"], "impostor_pairs": 300}}
    assert backed_gallery_size(few, fpir=0.01) == 1 and backed_gallery_size(few, fpir=0.005) == 0
    assert backed_gallery_size(OLD_STYLE) is None and impostor_pairs(OLD_STYLE) is None
    for bad in (0, -5, "many", True, float("nan")):
        assert impostor_pairs({"roc": {"impostor_pairs": bad}}) is None


def test_threshold_keeps_tightening_past_the_backed_size() -> None:
    backed = backed_gallery_size(TAILED)
    assert backed is not None and backed < 1_000
    sizes = [1_000, 100_000, 10_000_000]
    taus = [threshold_for_gallery(TAILED, n) for n in sizes]
    assert taus[0] > taus[1] > taus[2] > 0.0
    # The old reading froze at the end of the zero-FAR stretch (0.8) for every huge gallery.
    frozen = [threshold_for_gallery(OLD_STYLE, n) for n in sizes]
    assert all(0.8 <= tau < 0.811 for tau in frozen) and frozen[1] - frozen[2] < 1e-3
    assert taus[1] - taus[2] > 0.1
    assert all(new < old for new, old in zip(taus, frozen))


def test_extrapolated_tail_by_hand() -> None:
    # Anchor: the bound first exceeds 3e-5 after 0.8; the first point with ≥ 30 impostor pairs (FAR ≥ 3e-4) is
    # 0.95 at FAR 1e-3. Slope of ln FAR: ln(1e-3 / 3e-5) / 0.15; N = 1e5 → target ≈ 1.005e-7.
    target = per_comparison_far(100_000)
    slope = math.log(1e-3 / 3e-5) / 0.15
    assert threshold_for_gallery(TAILED, 100_000) == pytest.approx(0.8 - math.log(3e-5 / target) / slope)
    # Continuous at the backed size: both sides give the anchor.
    assert threshold_for_gallery(TAILED, 335) == pytest.approx(0.8, abs=1e-3)
    assert threshold_for_gallery(TAILED, 336) == pytest.approx(0.8, abs=1e-3)
    # Enormous galleries reach distance 0, never below.
    assert threshold_for_gallery(TAILED, 10**15) == 0.0


def test_never_above_the_cards_threshold_and_monotone() -> None:
    sizes = [1, 2, 10, 100, 335, 336, 1_000, 10**4, 10**5, 10**6, 10**7, 10**9]
    for card in (TAILED, OLD_STYLE, {**TAILED, "threshold": 0.7}):
        taus = [threshold_for_gallery(card, n) for n in sizes]
        assert all(tau <= card["threshold"] for tau in taus)
        assert all(a >= b for a, b in zip(taus, taus[1:]))


def test_backed_range_reads_the_bound_raised_to_three_over_n() -> None:
    # Within the backed range only points whose bound is below 3/n move, and only towards strict.
    for n in (1, 10, 100, 335):
        assert threshold_for_gallery(TAILED, n) <= threshold_for_gallery(OLD_STYLE, n)
    # Here N = 10 → target ≈ 1.005e-3, between the bounds at 0.9 (1.8e-4) and 0.95 (1.2e-3): unaffected.
    assert threshold_for_gallery(TAILED, 10) == pytest.approx(threshold_for_gallery(OLD_STYLE, 10))


def test_tail_without_a_well_measured_point_scales_towards_zero() -> None:
    # Only 1,000 pairs and the ROC never reaches 30 of them: τ = anchor · target / (3/n).
    card = {"threshold": 1.0, "roc": {"distance": [0.5, 1.0], "far": [0.0, 0.02], "far_upper": [0.0, 0.03],
                                      "impostor_pairs": 1_000}}
    target = per_comparison_far(10)
    assert target < 3e-3
    assert threshold_for_gallery(card, 10) == pytest.approx(0.5 * target / 3e-3)
