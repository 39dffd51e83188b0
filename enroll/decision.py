"""Who is this? The nearest enrolled person, accepted only when close enough for the size of the gallery.

One comparison at the card's threshold falsely accepts a stranger with probability FAR. Identifying against N
people makes N comparisons, so a stranger is falsely named with probability FPIR ≈ 1 − (1 − FAR)^N, which grows
with N. To keep FPIR (the false-positive identification rate) at a fixed target, each comparison must be
stricter: FAR = 1 − (1 − FPIR)^(1/N), and the threshold is the distance at which the model's measured ROC reaches
that FAR. So a bigger gallery gets a stricter (smaller) threshold.

The threshold never rises above the card's calibrated `threshold`: that is the operating point the model was
validated at (and what `verify` uses for one comparison). A small gallery therefore behaves exactly like
verification, and a large one only ever gets stricter.

A FAR measured on a finite number of impostor pairs is never trusted to be 0: with n pairs and none closer than
a distance, the 95 % one-sided upper bound of the FAR there is still 3/n (the rule of three). So where the card
records `roc.impostor_pairs`, the FAR bound used is max(far_upper, 3/n) everywhere, and a gallery so large that
its per-comparison target is below 3/n is beyond what the held-out data can back (`backed_gallery_size`): its
threshold comes from a conservative extrapolation of the impostor tail (see `threshold_for_gallery`) and keeps
tightening with N instead of freezing where the measured FAR happens to run out.

Pure Python (no numpy) so it is cheap to import and easy to test.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

DEFAULT_FPIR = 0.01
# Rule of three: with no event in n trials, 3/n is the 95 % one-sided upper confidence bound of the rate.
ZERO_EVENT_BOUND = 3.0
# The impostor tail beyond the data is extrapolated towards the first ROC point with at least this many impostor
# pairs closer than it (its FAR is then known to about 1/sqrt(30) ≈ 18 %); fewer make the slope mostly noise.
WELL_MEASURED_PAIRS = 30


class _MatchLike(Protocol):
    name: str
    distance: float


def per_comparison_far(n_people: int, fpir: float = DEFAULT_FPIR) -> float:
    """The FAR one comparison may have so that N comparisons together falsely name a stranger with prob. `fpir`."""
    if not 0.0 < fpir < 1.0:
        raise ValueError(f"fpir must be between 0 and 1, got {fpir}")
    n = max(1, int(n_people))
    # expm1/log1p keep precision when fpir/N is tiny (1 - (1-1e-2)**1e-6 loses digits in plain floats).
    return -math.expm1(math.log1p(-fpir) / n)


def impostor_pairs(card: Mapping[str, Any]) -> int | None:
    """How many impostor pairs the card's ROC was measured on (`roc.impostor_pairs`); None when not recorded.

    Older cards lack it; a value that is not a finite count ≥ 1 is treated as not recorded, so a damaged card
    falls back to the behaviour of those cards rather than stopping identification.
    """
    value = (card.get("roc") or {}).get("impostor_pairs")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value < 1:
        return None
    return int(value)


def far_floor(card: Mapping[str, Any]) -> float | None:
    """The smallest FAR bound the card's data can support: 3 / impostor_pairs (None when the card lacks the count)."""
    pairs = impostor_pairs(card)
    return None if pairs is None else min(1.0, ZERO_EVENT_BOUND / pairs)


def backed_gallery_size(card: Mapping[str, Any], fpir: float = DEFAULT_FPIR) -> int | None:
    """The largest N whose per-comparison target FAR is still ≥ 3 / impostor_pairs: up to this many enrolled
    people, τ(N) is read off FARs the held-out data can vouch for; beyond it τ(N) is extrapolated.

    1 − (1 − fpir)^(1/N) ≥ f  ⇔  N ≤ ln(1 − fpir) / ln(1 − f). Returns 0 when not even N = 1 is backed, and None
    when the card does not record `roc.impostor_pairs`.
    """
    floor = far_floor(card)
    if floor is None:
        return None
    if floor >= 1.0 or per_comparison_far(1, fpir) < floor:
        return 0
    n = max(1, int(math.log1p(-fpir) / math.log1p(-floor)))
    # The closed form is exact in real numbers; step over float rounding at the boundary.
    while n > 1 and per_comparison_far(n, fpir) < floor:
        n -= 1
    while per_comparison_far(n + 1, fpir) >= floor:
        n += 1
    return n


def threshold_for_gallery(card: Mapping[str, Any], n_people: int, fpir: float = DEFAULT_FPIR) -> float:
    """The distance threshold for identifying against `n_people` enrolled people at false-identification `fpir`.

    Read off the card's ROC (`roc.distance` ascending, `roc.far_upper` — else `roc.far` — non-decreasing): the
    largest distance whose FAR bound ≤ the per-comparison target, interpolated linearly between ROC points. Capped
    at the card's `threshold`. An empty gallery is treated as N = 1.

    With `roc.impostor_pairs` = n on the card, the FAR bound is max(far_upper, 3/n) everywhere: a FAR of 0 counted
    on n pairs only says the FAR is below 3/n. A target below 3/n (N beyond `backed_gallery_size`) is then met by
    extrapolating the impostor tail: log FAR is taken as linear in distance through the anchor (d₀, 3/n), d₀ the
    largest distance the data back at 3/n, and the first ROC point whose measured FAR rests on at least
    `WELL_MEASURED_PAIRS` impostor pairs; so τ = d₀ − ln(3/n ÷ target) / slope, which falls with every N, down to
    0. This is conservative: the anchor's FAR is an upper bound, which makes the line flatter than the data between
    the two points, and impostor tails fall off faster than exponentially towards distance 0 (log FAR is concave,
    as for any Gaussian-like tail), so the line overstates FAR below d₀ and the threshold errs strict. A card
    whose ROC never reaches a well-measured FAR scales the threshold down linearly instead: τ = d₀ · target ÷ (3/n).

    Without `roc.impostor_pairs` (older cards), the curve below the ROC's first point is taken to start at
    (distance 0, FAR 0) — no stranger is at distance 0 — which keeps very large galleries strict rather than
    failing, though τ(N) then stops tightening once the target is below the ROC's resolution.
    """
    default = float(card["threshold"])
    curve = _far_curve(card)
    if curve is None:
        return default
    distances, bounds, measured = curve
    target = per_comparison_far(n_people, fpir)
    pairs = impostor_pairs(card)
    floor = far_floor(card)
    if pairs is not None and floor is not None and target < floor:
        threshold = _extrapolated(distances, bounds, measured, floor, WELL_MEASURED_PAIRS / pairs, target)
    else:
        threshold = _read_off(distances, bounds, target)
    return min(threshold, default)


def _far_curve(card: Mapping[str, Any]) -> tuple[list[float], list[float], list[float]] | None:
    """(distances, FAR bounds, measured FARs) from the card's ROC, starting at distance 0; None when unusable.

    The bound is `far_upper` where the card has it — at the few-in-a-million rates of large galleries the measured
    count is a handful of impostors, and the bound errs towards unknown — raised to 3 / impostor_pairs where the
    card records that count. The measured FAR (`far`) is kept for fitting the tail beyond the data.
    """
    roc = card.get("roc") or {}
    distances = [float(d) for d in roc.get("distance", [])]
    bounds = [float(f) for f in roc.get("far_upper", roc.get("far", []))]
    if not distances or len(distances) != len(bounds):
        return None
    measured = [float(f) for f in roc.get("far", [])]
    if len(measured) != len(distances):
        measured = list(bounds)
    floor = far_floor(card) or 0.0
    bounds = [max(f, floor) for f in bounds]
    if distances[0] > 0.0:
        distances.insert(0, 0.0)
        bounds.insert(0, floor)
        measured.insert(0, 0.0)
    return distances, bounds, measured


def _read_off(distances: Sequence[float], fars: Sequence[float], target: float) -> float:
    """The largest distance at which the (non-decreasing, piecewise linear) FAR curve is ≤ `target`."""
    # First ROC point whose FAR exceeds the target; FAR is non-decreasing, so everything before it is within.
    first_over = bisect.bisect_right(fars, target)
    if first_over == 0:
        return distances[0]                      # even the closest measured pairs are too often strangers
    if first_over == len(fars):
        return distances[-1]                     # the target is never exceeded on the measured range
    d0, f0 = distances[first_over - 1], fars[first_over - 1]
    d1, f1 = distances[first_over], fars[first_over]
    return d0 + (target - f0) * (d1 - d0) / (f1 - f0)   # f1 > target ≥ f0, so f1 > f0


def _extrapolated(distances: Sequence[float], bounds: Sequence[float], measured: Sequence[float], floor: float,
                  well_measured: float, target: float) -> float:
    """τ for a target below `floor` (3 / impostor pairs), from the log-linear tail described in
    `threshold_for_gallery`; `well_measured` is the FAR of `WELL_MEASURED_PAIRS` impostor pairs."""
    anchor = _read_off(distances, bounds, floor)
    well = bisect.bisect_left(measured, well_measured)
    if well < len(measured) and distances[well] > anchor and measured[well] > floor:
        slope = math.log(measured[well] / floor) / (distances[well] - anchor)
        threshold = anchor - math.log(floor / target) / slope
    else:
        threshold = anchor * target / floor
    return max(0.0, threshold)


def decide(matches: Sequence[_MatchLike], threshold: float) -> str | None:
    """The nearest person's name when strictly closer than `threshold`, else None (unknown).

    `matches` are one face's nearest people in ascending distance (as `Gallery.search` returns them).
    """
    if not matches:
        return None
    best = min(matches, key=lambda match: match.distance)
    return best.name if best.distance < threshold else None
