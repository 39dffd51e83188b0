"""The end-to-end LFW check of `tests/test_end_to_end.py`, as numbers instead of pass/fail.

    python benchmarks/end_to_end.py             # → benchmarks/results/end_to_end.json

The same 20 enrolled people (first photo each) and 20 strangers as the test; reports how many second photos are
named correctly, named wrongly or come out unknown, and how many strangers are named, at the product's τ(20).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.machine import cpu_name  # noqa: E402

from embedder.api import model_id, product_precision  # noqa: E402
from enroll.service import OneShot  # noqa: E402
from tests.test_end_to_end import choose_people  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "end_to_end.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS)
    out = parser.parse_args(argv).out
    people, enrolled, strangers = choose_people()
    with tempfile.TemporaryDirectory() as home, OneShot(Path(home)) as oneshot:
        for person in enrolled:
            oneshot.enroll_one(people[person][0], person, largest=True, force=True)
        second = oneshot.identify([people[p][1] for p in enrolled])
        unknown = oneshot.identify([people[p][0] for p in strangers])
    result = {
        "machine": cpu_name(),
        "model_id": model_id(),
        "precision": product_precision(),
        "enrolled": len(enrolled),
        "named_correctly": sum(r.name == p for r, p in zip(second, enrolled)),
        "named_wrongly": sum(r.name not in (None, p) for r, p in zip(second, enrolled)),
        "unknown": sum(r.name is None for r in second),
        "strangers": len(strangers),
        "strangers_named": sum(r.name is not None for r in unknown),
        "threshold": second[0].largest.threshold if second and second[0].largest else None,
        # what went wrong where: how far beyond τ a missed person was, and whether they were at least nearest
        "missed": [{"person": p, "nearest": r.largest.nearest, "distance": round(r.largest.distance, 3)}
                   for r, p in zip(second, enrolled) if r.name != p and r.largest],
        "strangers_named_as": [{"stranger": p, "name": r.name, "distance": round(r.largest.distance, 3)}
                               for r, p in zip(unknown, strangers) if r.name is not None and r.largest],
    }
    print(json.dumps(result, indent=1))
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
