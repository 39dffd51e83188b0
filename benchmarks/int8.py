"""int8 against float32: the same shipped weights, side by side in one run — speed per face and held-out accuracy.

    python benchmarks/int8.py [--out benchmarks/results/int8.json]

Contenders: float32 (as the product loads it: BatchNorm folded, channels-last), the product's int8 (the shipped
ranges, `embedder.int8.PRODUCT`), and two other int8 schemes with ranges measured the same way: every layer
quantised, and the product's scheme with 8-bit activations.
Speed: one thread, each contender embedding the same held-out crops one at a time with the mirror, alternating in
rounds (`benchmarks.timing`); median and best ms per face.
Load: seconds for a fresh process to build the product's float32 and int8 networks.
Accuracy: every held-out photo embedded by each contender, every pair scored; the product's int8 against float32
with a paired bootstrap over the held-out families and people (`train.evaluate.paired_bootstrap`); for every int8
scheme, how far it moves each photo's vector from float32's (cosine).

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
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.machine import cpu_name  # noqa: E402
from benchmarks.timing import interleaved_ms  # noqa: E402
from embedder import api, int8  # noqa: E402
from embedder.model import embed, from_saved  # noqa: E402
from train.evaluate import PairTable, embed_array, paired_bootstrap  # noqa: E402
from train.export import int8_ranges  # noqa: E402
from train.face_data import family_groups, load_training_faces  # noqa: E402

OTHER_SCHEMES = {
    "int8, every layer": int8.Scheme(keep_float=()),
    "int8, 8-bit activations": int8.Scheme(reduce_range=False),
}


def load_seconds(runs: int) -> dict[str, float]:
    """Median seconds for a fresh process to load the embedder in each precision (torch already imported; int8
    traces and quantises the network as it loads), the precisions alternating."""
    code = ("import time, torch; from embedder import api; t = time.perf_counter(); api._embedder({!r}); "
            "print(time.perf_counter() - t)")
    times: dict[str, list[float]] = {p: [] for p in ("float32", "int8")}
    for _ in range(runs):
        for p in times:
            done = subprocess.run([sys.executable, "-c", code.format(p)], capture_output=True, text=True, check=True,
                                  cwd=ROOT)
            times[p].append(float(done.stdout.strip().splitlines()[-1]))
    return {p: float(np.median(t)) for p, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=ROOT / "cache" / "crops")
    p.add_argument("--faces", type=int, default=400, help="held-out crops timed per contender")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--draws", type=int, default=300)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "int8.json")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    train, val, _ = load_training_faces(a.cache)
    net = from_saved(torch.load(api.EMBEDDER_WEIGHTS, map_location="cpu", weights_only=True)).eval()
    models = {"float32": api._embedder("float32"), "int8": api._embedder("int8"),
              **{name: int8.quantize(net, int8_ranges(net, train, scheme), scheme)
                 for name, scheme in OTHER_SCHEMES.items()}}

    torch.set_num_threads(1)
    timed = val.images[np.linspace(0, len(val.labels) - 1, a.faces).astype(int)]
    crops = torch.from_numpy(timed).permute(0, 3, 1, 2).float() / 255     # channels-last, as the product's
    with torch.inference_mode():
        speed = interleaved_ms({name: (lambda i, m=model: embed(m, crops[i % len(crops)][None]))
                                for name, model in models.items()}, a.rounds, a.faces // a.rounds)
    load = load_seconds(5)
    print(json.dumps({"ms_per_face": speed, "load_s": load}), flush=True)

    torch.set_num_threads(2)
    emb = {name: embed_array(model, val.images) for name, model in models.items()}
    cosine = {name: np.sum(emb["float32"] * e, axis=1) for name, e in emb.items() if name != "float32"}
    groups = family_groups(val)
    tables = {name: PairTable(emb[name], val.labels, groups) for name in ("float32", "int8")}
    accuracy = paired_bootstrap(tables, "float32", draws=a.draws)
    for name in OTHER_SCHEMES:
        accuracy[name] = {"metrics": PairTable(emb[name], val.labels, groups).metrics()}

    m32, m8 = accuracy["float32"]["metrics"], accuracy["int8"]["metrics"]
    ratio = speed["float32"]["median"] / speed["int8"]["median"]
    ships = ratio >= 1.3 and all(m8[k] - m32[k] >= -0.003 for k in ("accuracy", "tar@far1e-3"))
    report = {
        "machine": {"cpu": cpu_name(), "threads_timed": 1, "torch": torch.__version__},
        "model_id": api.model_id(), "people": len(val.people), "photos": len(val.labels),
        "ms_per_face": speed, "speedup_by_median": ratio, "load_s_median": load,
        "cosine_to_float32": {name: {"min": float(c.min()), "mean": float(c.mean()), "median": float(np.median(c))}
                              for name, c in cosine.items()},
        "held_out": accuracy, "int8_passes_rule": ships,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1) + "\n")
    for name in models:
        m = accuracy[name]["metrics"]
        moved = (f"; cosine to float32 min {cosine[name].min():.4f}, mean {cosine[name].mean():.5f}"
                 if name in cosine else "")
        print(f"{name}: {speed[name]['median']:.1f} ms/face (best {speed[name]['best']:.1f}); accuracy "
              f"{m['accuracy']:.2%}, TAR@FAR0.1% {m['tar@far1e-3']:.1%}, TAR@FAR0.01% {m['tar@far1e-4']:.1%}{moved}")
    d = accuracy["int8"]["vs_float32"]["tar@far1e-3"]
    print(f"int8 {ratio:.2f}x faster; TAR@FAR0.1% {d['difference']:+.2%} [{d['interval_90'][0]:+.2%}, "
          f"{d['interval_90'][1]:+.2%}]; passes the rule: {ships}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
