"""A progress bar for long CLI batches, shown on a terminal only.

Scripts read stdout (`--json`, pipes), so the bar appears only when both stdout and stderr are terminals, the output
is not JSON and the batch is longer than a few photos. It is drawn by rich (a dependency of typer) on stderr; lines
the command prints meanwhile scroll above it.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

MIN_ITEMS = 4   # below this a bar only flickers


def wanted(total: int, *, as_json: bool) -> bool:
    """Whether a batch of `total` items gets a bar: a long batch, plain output, both streams on a terminal."""
    return total >= MIN_ITEMS and not as_json and _isatty(sys.stdout) and _isatty(sys.stderr)


def tracked(items: Iterable[T], total: int, label: str, *, as_json: bool) -> Iterator[T]:
    """Yield `items` unchanged, advancing a bar of `total` steps labelled `label` when `wanted`."""
    if not wanted(total, as_json=as_json):
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task(label, total=total)
        for item in items:
            yield item
            bar.advance(task)


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False
