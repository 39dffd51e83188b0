"""The learning-rate schedule both training loops share: warm-up, then cosine decay over steps *or* a time budget.

A time budget (`--minutes`) makes a background run finish inside a session whatever else the 2 cores are doing:
the cosine ends at whichever comes first, the step count or the wall-clock budget.
"""
from __future__ import annotations

import argparse
import math


def learning_rate(step: int, args: argparse.Namespace, elapsed: float = 0.0, floor: float = 0.02) -> float:
    """Linear warm-up over `args.warmup` steps, then cosine from `args.lr` down to `floor` × `args.lr`."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    if args.minutes > 0:
        progress = max(progress, elapsed / (args.minutes * 60))
    return args.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
