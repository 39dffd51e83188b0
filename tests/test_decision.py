"""Thresholds from the model card's ROC: stricter for bigger galleries, never looser than the card's."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from enroll.decision import decide, per_comparison_far, threshold_for_gallery

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
