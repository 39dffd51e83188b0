"""The shipped embedder in the two memory layouts, side by side in one process, on one thread.

    python benchmarks/memory_layout.py      # → benchmarks/results/memory_layout.json
    python benchmarks/memory_layout.py --out benchmarks/results/memory_layout_amd_avx2.json   # another machine

Why: the product keeps the network's weights channels-last (NHWC), the layout the photo's pixels arrive in. This
checks that it is faster than plain NCHW here and gives the same vectors. Each timing embeds one aligned 112 px
crop with its mirror, as `embedder.api.face_embeddings` does; the layouts alternate in rounds so that load from
other processes hits both alike; min and median over the rounds.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import cpu_name  # noqa: E402
from embedder.api import EMBEDDER_WEIGHTS  # noqa: E402
from embedder.fuse import fuse_batchnorms  # noqa: E402
from embedder.model import embed, from_saved  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "memory_layout.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    saved = torch.load(EMBEDDER_WEIGHTS, map_location="cpu", weights_only=True)
    nchw = fuse_batchnorms(from_saved(saved).eval())
    nhwc = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 112, 112, 3), dtype=np.uint8))
    runs = {
        "nchw": lambda: embed(nchw, pixels.permute(0, 3, 1, 2).float().div_(255).contiguous()),
        "channels_last": lambda: embed(nhwc, pixels.permute(0, 3, 1, 2).float().div_(255)),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        gap = float((runs["nchw"]() - runs["channels_last"]()).abs().max())
        for run in runs.values():
            for _ in range(5):
                run()
        for _ in range(20):
            for name, run in runs.items():
                start = time.perf_counter()
                for _ in range(10):
                    run()
                times[name].append((time.perf_counter() - start) / 10 * 1000)
    result = {"machine": f"{cpu_name()}, {torch.get_num_threads()} thread", "max_abs_difference": gap,
              **{f"{name}_ms": {"min": round(min(t), 2), "median": round(statistics.median(t), 2)}
                 for name, t in times.items()}}
    result["speedup_median"] = round(result["nchw_ms"]["median"] / result["channels_last_ms"]["median"], 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
