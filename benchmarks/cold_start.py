"""Cold-start time of the CLI, measured as a user meets it: a fresh process each time.

    python -m benchmarks.cold_start [--photo PATH] [--runs 5]

Reports the median wall time of `oneshot --help` (imports only: must stay fast, no torch) and of
`oneshot identify PHOTO` against a gallery of one person, enrolled from another photo first (process start, model
loading, opening the gallery, detection, embedding, search), as at a door.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import RESULTS, cpu_name, write_result



def timed(cmd: list[str], env: dict[str, str], runs: int, ok_codes: tuple[int, ...]) -> float:
    """Median wall time of `cmd`; a run that exits with another code stops the benchmark, because a broken
    install (e.g. a console script pointing at a deleted checkout) fails in milliseconds and would pass for fast."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        times.append(time.perf_counter() - start)
        if done.returncode not in ok_codes:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            sys.exit(f"{' '.join(cmd)} exited {done.returncode}: {last}")
    return statistics.median(times)


def main() -> None:
    from train.data_paths import data_root

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photo", type=Path, default=None)
    parser.add_argument("--reference", type=Path, default=None, help="the photo to enrol (default: --photo)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    photo = args.photo
    if photo is None:
        root = data_root()
        if root is None:
            sys.exit("give --photo PATH (no datasets found for a default photo)")
        photo = root / "celeba-wild" / "images" / "7201" / "001085.jpg"
    reference = args.reference or photo
    exe = shutil.which("oneshot") or sys.exit("the `oneshot` console script is not installed")
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "ONESHOT_HOME": home}
        timed([exe, "enroll", "--name", "reference", str(reference)], env, 1, (0,))
        results = {
            "machine": f"{cpu_name()}, {os.cpu_count()} cores",
            "help_s": timed([exe, "--help"], env, args.runs, (0,)),
            "gallery_people": 1,
            "identify_s": timed([exe, "identify", str(photo)], env, args.runs, (0, 1)),  # 1: unknown
        }
    print(json.dumps(results, indent=1))
    write_result(RESULTS / "cold_start.json", results)


if __name__ == "__main__":
    main()
