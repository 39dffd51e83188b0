"""End to end on real photos: LFW people enrolled from one photo each, then identified from another photo.

Uses the service in process (the CLI tests cover the command line) with the shipped models, so the models load
once. Skips, saying why, when the LFW dataset or the model weights are absent.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from enroll.service import OneShot

WEIGHTS = Path(__file__).resolve().parent.parent / "embedder" / "weights"
ENROLLED = 20
STRANGERS = 20

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all((WEIGHTS / f).is_file() for f in ("embedder.pt", "embedder.json", "detector.pt")),
        reason=f"model weights not yet in {WEIGHTS}",
    ),
]


def lfw_by_person() -> dict[str, list[Path]]:
    from train.data_paths import data_root

    root = data_root()
    if root is None:
        pytest.skip("LFW not found: set $ONESHOT_DATA or put datasets in ../shared/datasets (needs lfw/manifest.csv)")
    by_person: dict[str, list[Path]] = {}
    for line in (root / "lfw" / "manifest.csv").read_text().splitlines()[1:]:
        rel, identity = line.rsplit(",", 1)
        by_person.setdefault(identity, []).append(root / "lfw" / rel)
    return {person: sorted(paths) for person, paths in sorted(by_person.items())}


def spread(items: list[str], count: int, offset: int = 0) -> list[str]:
    """`count` items evenly spaced through a sorted list: deterministic, and not all from one letter."""
    step = max(1, len(items) // count)
    return [items[(offset + i * step) % len(items)] for i in range(count)]


def test_enrol_identify_remove_rebuild(tmp_path: Path) -> None:
    people = lfw_by_person()
    repeat = [p for p, paths in people.items() if len(paths) >= 2]
    enrolled = spread(repeat, ENROLLED)
    others = [p for p in people if p not in set(enrolled)]
    strangers = spread(others, STRANGERS, offset=len(others) // (2 * STRANGERS))
    assert len(set(enrolled)) == ENROLLED and len(set(strangers)) == STRANGERS

    home = tmp_path / "named"
    with OneShot(home) as oneshot:
        # One photo each (the first), under the LFW identity; the largest face, as some photos show bystanders.
        # --force: a weak model may think two of these people alike; accuracy is judged by identification below.
        results = [oneshot.enroll_one(people[p][0], p, largest=True, force=True) for p in enrolled]
        assert all(r.ok for r in results), [r.message for r in results if not r.ok]
        assert len(oneshot.people()) == ENROLLED

        second = oneshot.identify([people[p][1] for p in enrolled])
        assert all(r.error is None for r in second), [r.error for r in second if r.error]
        correct = sum(r.name == person for r, person in zip(second, enrolled))
        assert correct >= ENROLLED - 2, [
            (person, r.name, r.largest and r.largest.nearest, r.largest and round(r.largest.distance or 0, 3))
            for r, person in zip(second, enrolled) if r.name != person
        ]

        unknown = oneshot.identify([people[p][0] for p in strangers])
        falsely_named = [(person, r.name) for r, person in zip(unknown, strangers) if r.name is not None]
        assert len(falsely_named) <= 1, falsely_named

        removed = enrolled[:5]
        for person in removed:
            assert oneshot.remove(person).faces == 1
        after = oneshot.identify([people[p][1] for p in removed])
        assert not any(r.name in removed for r in after)
        assert sum(r.name is not None for r in after) <= 1, [r.name for r in after]

        kept = enrolled[5:]
        before = [(r.name, r.largest.distance if r.largest else None)
                  for r in oneshot.identify([people[p][1] for p in kept])]

    for cache in ("index.faiss", "index.json"):
        (home / cache).unlink(missing_ok=True)
    with OneShot(home) as oneshot:
        rebuilt = [(r.name, r.largest.distance if r.largest else None)
                   for r in oneshot.identify([people[p][1] for p in kept])]
    assert [name for name, _ in rebuilt] == [name for name, _ in before]
    assert all(a is None and b is None or abs(a - b) < 1e-4 for (_, a), (_, b) in zip(before, rebuilt))
    assert (home / "index.faiss").is_file()                 # the cache was rebuilt and saved
