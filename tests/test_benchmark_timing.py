"""The side-by-side timer the speed benchmarks share: every contender sees every input, in alternating rounds."""
from __future__ import annotations

import time

from benchmarks.timing import interleaved_ms


def test_contenders_alternate_by_round_and_the_slower_one_measures_slower() -> None:
    calls: list[tuple[str, int]] = []

    def run(name: str, seconds: float):
        def call(i: int) -> None:
            calls.append((name, i))
            time.sleep(seconds)
        return call

    result = interleaved_ms({"fast": run("fast", 0.0), "slow": run("slow", 0.005)}, rounds=2, per_round=3)
    assert calls[:2] == [("fast", 0), ("slow", 0)]                       # one warm-up call each
    assert calls[2:] == [("fast", 0), ("fast", 1), ("fast", 2), ("slow", 0), ("slow", 1), ("slow", 2),
                                      ("fast", 3), ("fast", 4), ("fast", 5), ("slow", 3), ("slow", 4), ("slow", 5)]
    assert result["fast"]["calls"] == result["slow"]["calls"] == 6
    assert result["slow"]["median"] >= 5 > result["fast"]["median"]
    assert result["slow"]["best"] <= result["slow"]["median"]
