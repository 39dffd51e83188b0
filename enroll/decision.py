"""Who is this? The nearest enrolled person, accepted only when close enough for the size of the gallery.

One comparison at the card's threshold falsely accepts a stranger with probability FAR. Identifying against N
people makes N comparisons, so a stranger is falsely named with probability FPIR ≈ 1 − (1 − FAR)^N, which grows
with N. To keep FPIR (the false-positive identification rate) at a fixed target, each comparison must be
stricter: FAR = 1 − (1 − FPIR)^(1/N), and the threshold is the distance at which the model's measured ROC reaches
that FAR. So a bigger gallery gets a stricter (smaller) threshold.

The threshold never rises above the card's calibrated `threshold`: that is the operating point the model was
validated at (and what `verify` uses for one comparison). A small gallery therefore behaves exactly like
verification, and a large one only ever gets stricter.

Pure Python (no numpy) so it is cheap to import and easy to test.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

DEFAULT_FPIR = 0.01


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


def threshold_for_gallery(card: Mapping[str, Any], n_people: int, fpir: float = DEFAULT_FPIR) -> float:
    """The distance threshold for identifying against `n_people` enrolled people at false-identification `fpir`.

    Read off the card's ROC (`roc.distance` ascending, `roc.far_upper` — else `roc.far` — non-decreasing): the
    largest distance whose FAR ≤ the per-comparison target, interpolated linearly between ROC points. Below the
    ROC's first point the curve is taken to start at (distance 0, FAR 0) — no stranger is at distance 0 — which keeps very large
    galleries (targets below the ROC's resolution) strict rather than failing. Capped at the card's `threshold`.
    An empty gallery is treated as N = 1.
    """
    default = float(card["threshold"])
    roc = card.get("roc") or {}
    distances = [float(d) for d in roc.get("distance", [])]
    # the upper confidence bound of each FAR when the card has it (cards exported with it): at the few-in-a-million
    # rates of large galleries the measured count is a handful of impostors, and the bound errs towards unknown
    fars = [float(f) for f in roc.get("far_upper", roc.get("far", []))]
    if not distances or len(distances) != len(fars):
        return default
    target = per_comparison_far(n_people, fpir)
    if distances[0] > 0.0:
        distances.insert(0, 0.0)
        fars.insert(0, 0.0)
    # First ROC point whose FAR exceeds the target; FAR is non-decreasing, so everything before it is within.
    first_over = bisect.bisect_right(fars, target)
    if first_over == 0:
        threshold = distances[0]                 # even the closest measured pairs are too often strangers
    elif first_over == len(fars):
        threshold = distances[-1]                # the target is never exceeded on the measured range
    else:
        d0, f0 = distances[first_over - 1], fars[first_over - 1]
        d1, f1 = distances[first_over], fars[first_over]
        threshold = d0 + (target - f0) * (d1 - d0) / (f1 - f0)   # f1 > target ≥ f0, so f1 > f0
    return min(threshold, default)


def decide(matches: Sequence[_MatchLike], threshold: float) -> str | None:
    """The nearest person's name when strictly closer than `threshold`, else None (unknown).

    `matches` are one face's nearest people in ascending distance (as `Gallery.search` returns them).
    """
    if not matches:
        return None
    best = min(matches, key=lambda match: match.distance)
    return best.name if best.distance < threshold else None
