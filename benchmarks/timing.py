"""Side-by-side timing for benchmarks: the contenders alternate in rounds, so load from elsewhere hits all alike."""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def interleaved_ms(runs: dict[str, Callable[[int], object]], rounds: int, per_round: int) -> dict[str, dict]:
    """Milliseconds per call of each `run(i)` (i = 0, 1, ...: which input), after one warm-up call each (oneDNN
    builds its kernels on first use); every round calls each run `per_round` times before the next run's turn.
    Returns each run's median, best and number of calls."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run(0)
    for r in range(rounds):
        for name, run in runs.items():
            for i in range(r * per_round, (r + 1) * per_round):
                start = time.perf_counter()
                run(i)
                times[name].append(1000 * (time.perf_counter() - start))
    return {name: {"median": float(np.median(t)), "best": float(np.min(t)), "calls": len(t)}
            for name, t in times.items()}
