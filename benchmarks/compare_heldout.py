"""Which embedder is better on the held-out people, with its uncertainty: a paired bootstrap over people.

    python benchmarks/compare_heldout.py --baseline embedder/weights/embedder.pt \
        --candidate runs/a/last.pt --candidate runs/b/last.pt [--out benchmarks/results/compare_heldout.json]

Why: the last releases differed from each other by about one standard error on the 535 held-out people, so the
single number the ship decision used (TAR at FAR 0.1 %) picked among near-ties. Here every model embeds the
held-out photos (each checkpoint as export would ship it: the better of its last weights and average), every pair
of photos is scored (3.3 M pairs, none sampled), and the held-out FIW families and CelebA people are resampled
with replacement; the same draws score every model, so a candidate's difference from the baseline comes with a
90 % interval and the probability that it is better. Each candidate is scored with and without the mirror (the
second pass costs ~0.8x of the first on one thread), the baseline as the product runs it, with the mirror.

Ship rule (set before the runs it judged): a candidate ships when P(better TAR at FAR 0.1 %) >= 0.9 against the
shipped model as the product runs it, and it is not slower per face on one thread; the best such candidate wins.
LFW is not touched.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.machine import cpu_name  # noqa: E402
from embedder.api import EMBEDDER_WEIGHTS  # noqa: E402
from train.evaluate import PairTable, embed_array, paired_bootstrap  # noqa: E402
from train.export import shipped_model  # noqa: E402
from train.face_data import family_groups, load_training_faces  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "compare_heldout.json"


def shown(path: Path) -> str:
    full = path.resolve()
    return str(full.relative_to(ROOT) if full.is_relative_to(ROOT) else path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", type=Path, default=EMBEDDER_WEIGHTS)
    p.add_argument("--candidate", type=Path, action="append", required=True)
    p.add_argument("--cache", type=Path, default=ROOT / "cache" / "crops")
    p.add_argument("--draws", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    _, val, _ = load_training_faces(a.cache)
    groups = family_groups(val)

    tables: dict[str, PairTable] = {}
    chosen: dict[str, str] = {}
    for path, mirrors in [(a.baseline, (True,)), *((c, (True, False)) for c in a.candidate)]:
        model, which = shipped_model(torch.load(path, map_location="cpu", weights_only=False), val)
        for mirror in mirrors:
            name = shown(path) + ("" if mirror else " (no mirror)")
            tables[name] = PairTable(embed_array(model, val.images, flip=mirror), val.labels, groups)
            chosen[name] = which
            print(f"embedded {name} ({which}, input {model.config.input_size} px)", flush=True)
    baseline = shown(a.baseline)
    result = paired_bootstrap(tables, baseline, draws=a.draws)
    for name in result:
        result[name]["weights"] = chosen[name]
    report = {
        "machine": {"cpu": cpu_name(), "threads": a.threads},
        "people": len(val.people), "photos": len(val.labels), "resampled_groups": int(groups.max()) + 1,
        "draws": a.draws, "baseline": baseline, "models": result,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1) + "\n")
    for name, entry in result.items():
        m = entry["metrics"]
        line = f"{name}: accuracy {m['accuracy']:.2%}, TAR@FAR0.1% {m['tar@far1e-3']:.1%}, " \
               f"TAR@FAR0.01% {m['tar@far1e-4']:.1%}"
        if "vs_" + baseline in entry:
            d = entry["vs_" + baseline]["tar@far1e-3"]
            line += (f"; TAR@FAR0.1% {d['difference']:+.1%} [{d['interval_90'][0]:+.1%}, "
                     f"{d['interval_90'][1]:+.1%}], P(better) {d['p_better']:.2f}")
        print(line)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
