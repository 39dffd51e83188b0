"""int8 against float32: the same shipped weights, side by side in one run — speed per face and held-out accuracy.

    python benchmarks/int8.py [--out benchmarks/results/int8.json]

Speed: one thread, each precision embedding the same held-out crops one at a time through
`embedder.api.face_embeddings` (with the mirror, as the product runs), alternating in rounds so that load from
elsewhere hits both; median and best ms per face, and their ratio.
Load: seconds for a fresh process to build each network (int8 traces and quantises it as it loads).
Accuracy: every held-out photo embedded both ways (the shipped int8 ranges, measured on training people), every
pair scored, and a paired bootstrap over the held-out families and people (`train.evaluate.paired_bootstrap`);
also how far apart the two precisions put each photo (cosine).

Rule (set before the first run): int8 becomes the product's precision when it is at least 1.3x faster by median
and neither held-out accuracy nor TAR at FAR 0.1 % is more than 0.3 points below float32's; after the first run I
added that the end-to-end check (`benchmarks/end_to_end.py`, issue #3's bar) must still pass, because int8 with
every layer quantised passed the rule but named only 17 of its 20 people (one unknown at 0.917 against τ 0.915).
With stem and head kept in float32 (chosen for fidelity on the held-out people) it passes both. LFW chose nothing
here beyond that end-to-end bar (its 40 people are LFW people, fixed by the test long before).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.machine import cpu_name  # noqa: E402
from embedder import api  # noqa: E402
from train.evaluate import PairTable, embed_array, paired_bootstrap  # noqa: E402
from train.face_data import family_groups, load_training_faces  # noqa: E402

PRECISIONS = ("float32", "int8")


def ms_per_face(crops: list[Image.Image], rounds: int) -> dict[str, dict[str, float]]:
    """Per-face times of both precisions on one thread, interleaved in `rounds` rounds."""
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for p in PRECISIONS:
        api.face_embeddings(crops[:2], precision=p)      # load and warm up (oneDNN builds kernels on first use)
    per_round = len(crops) // rounds
    for r in range(rounds):
        for p in PRECISIONS:
            for crop in crops[r * per_round:(r + 1) * per_round]:
                start = time.perf_counter()
                api.face_embeddings([crop], precision=p)
                times[p].append(1000 * (time.perf_counter() - start))
    return {p: {"median": float(np.median(t)), "best": float(np.min(t)), "faces": len(t)} for p, t in times.items()}


def load_seconds(runs: int) -> dict[str, float]:
    """Median seconds for a fresh process to load the embedder in each precision (torch already imported; int8
    traces and quantises the network as it loads), the precisions alternating."""
    code = ("import time, torch; from embedder import api; t = time.perf_counter(); api._embedder({!r}); "
            "print(time.perf_counter() - t)")
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for _ in range(runs):
        for p in PRECISIONS:
            done = subprocess.run([sys.executable, "-c", code.format(p)], capture_output=True, text=True, check=True,
                                  cwd=ROOT)
            times[p].append(float(done.stdout.strip().splitlines()[-1]))
    return {p: float(np.median(t)) for p, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=ROOT / "cache" / "crops")
    p.add_argument("--faces", type=int, default=400, help="held-out crops timed per precision")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--draws", type=int, default=300)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "int8.json")
    a = p.parse_args(argv)
    _, val, _ = load_training_faces(a.cache)

    crops = [Image.fromarray(img) for img in val.images[np.linspace(0, len(val.labels) - 1, a.faces).astype(int)]]
    speed = ms_per_face(crops, a.rounds)
    load = load_seconds(5)
    print(json.dumps({"ms_per_face": speed, "load_s": load}), flush=True)

    torch.set_num_threads(2)
    groups = family_groups(val)
    emb = {precision: embed_array(api._embedder(precision), val.images) for precision in PRECISIONS}
    cosine = np.sum(emb["float32"] * emb["int8"], axis=1)
    tables = {precision: PairTable(e, val.labels, groups) for precision, e in emb.items()}
    accuracy = paired_bootstrap(tables, "float32", draws=a.draws)

    m32, m8 = accuracy["float32"]["metrics"], accuracy["int8"]["metrics"]
    ratio = speed["float32"]["median"] / speed["int8"]["median"]
    ships = ratio >= 1.3 and all(m8[k] - m32[k] >= -0.003 for k in ("accuracy", "tar@far1e-3"))
    report = {
        "machine": {"cpu": cpu_name(), "threads_timed": 1, "torch": torch.__version__},
        "model_id": api.model_id(), "people": len(val.people), "photos": len(val.labels),
        "ms_per_face": speed, "speedup_by_median": ratio, "load_s_median": load,
        "cosine_int8_vs_float32": {"min": float(cosine.min()), "median": float(np.median(cosine))},
        "held_out": accuracy, "int8_passes_rule": ships,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1) + "\n")
    for name in PRECISIONS:
        m = accuracy[name]["metrics"]
        print(f"{name}: {speed[name]['median']:.1f} ms/face (best {speed[name]['best']:.1f}); accuracy "
              f"{m['accuracy']:.2%}, TAR@FAR0.1% {m['tar@far1e-3']:.1%}, TAR@FAR0.01% {m['tar@far1e-4']:.1%}")
    d = accuracy["int8"]["vs_float32"]["tar@far1e-3"]
    print(f"int8 {ratio:.2f}x faster; TAR@FAR0.1% {d['difference']:+.2%} [{d['interval_90'][0]:+.2%}, "
          f"{d['interval_90'][1]:+.2%}]; cosine min {cosine.min():.4f}; passes the rule: {ships}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
