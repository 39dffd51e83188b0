"""End to end through the command line, as a user meets it: 20 LFW people enrolled from one photo each with
`oneshot enroll`, their second photos and 20 strangers identified with `oneshot identify --json`.

    python -m benchmarks.end_to_end            # → benchmarks/results/end_to_end.json

The same people as tests/test_end_to_end.py (which asserts the bar: ≥ 19 of 20 named, no stranger named). Reports
how many second photos are named correctly, wrongly or not at all, and how many strangers are named, at the
product's own τ(20).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.machine import cpu_name, write_result
from tests.test_end_to_end import choose_people

RESULTS = Path(__file__).resolve().parent / "results" / "end_to_end.json"


def oneshot(home: str, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("oneshot")
    command = [exe] if exe else [sys.executable, "-m", "enroll.cli"]
    return subprocess.run([*command, *args], env={**os.environ, "ONESHOT_HOME": home}, capture_output=True,
                          text=True, check=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS)
    out = parser.parse_args(argv).out
    people, enrolled, strangers = choose_people()
    with tempfile.TemporaryDirectory() as home:
        for person in enrolled:
            done = oneshot(home, "enroll", "--name", person, "--largest", "--force", str(people[person][0]))
            if done.returncode != 0:
                sys.exit(f"enrolling {person} failed: {done.stderr.strip()}")
        second = [json.loads(line) for line in oneshot(home, "identify", "--json",
                                                       *[str(people[p][1]) for p in enrolled]).stdout.splitlines()]
        unknown = [json.loads(line) for line in oneshot(home, "identify", "--json",
                                                        *[str(people[p][0]) for p in strangers]).stdout.splitlines()]
        model = json.loads(oneshot(home, "model", "--json").stdout)
    result = {
        "machine": cpu_name(),
        "model_id": model.get("model_id"),
        "enrolled": len(enrolled),
        "named_correctly": sum(r["name"] == p for r, p in zip(second, enrolled)),
        "named_wrongly": sum(r["name"] not in (None, p) for r, p in zip(second, enrolled)),
        "unknown": sum(r["name"] is None for r in second),
        "strangers": len(strangers),
        "strangers_named": sum(r["name"] is not None for r in unknown),
        "threshold": second[0]["threshold"] if second else None,
        "missed": [{"person": p, "distance": r["distance"]} for r, p in zip(second, enrolled) if r["name"] != p],
        "strangers_named_as": [{"stranger": p, "name": r["name"], "distance": r["distance"]}
                               for r, p in zip(unknown, strangers) if r["name"] is not None],
    }
    print(json.dumps(result, indent=1))
    write_result(out, result)


if __name__ == "__main__":
    main()
