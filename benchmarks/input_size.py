"""What a larger input costs: the embedder's network at 96 and 112 px, with and without the mirror, side by side.

    python benchmarks/input_size.py      # → benchmarks/results/input_size.json

Why: issue #5 budgets 15 ms per face on one CPU thread, and a 112 px network might pay for its pixels by dropping
the mirror pass. Speed does not depend on the weights' values, so both sizes are freshly built networks of the
shipped shape, prepared as the product prepares its own (BatchNorm folded, channels-last); the four variants
alternate in rounds so that load from other processes hits them alike; min and median over the rounds.
"""
from __future__ import annotations

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
from embedder.fuse import fuse_batchnorms  # noqa: E402
from embedder.model import EmbedderConfig, EmbeddingNet, embed  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "input_size.json"


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 112, 112, 3), dtype=np.uint8))
    crop = pixels.permute(0, 3, 1, 2).float().div_(255)
    nets = {size: fuse_batchnorms(EmbeddingNet(EmbedderConfig(input_size=size)).eval())
            .to(memory_format=torch.channels_last) for size in (96, 112)}
    runs = {f"{size}px_{'mirror' if mirror else 'no_mirror'}": (net, mirror)
            for size, net in nets.items() for mirror in (True, False)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for net, mirror in runs.values():
            for _ in range(5):
                embed(net, crop, mirror=mirror)
        for _ in range(20):
            for name, (net, mirror) in runs.items():
                start = time.perf_counter()
                for _ in range(10):
                    embed(net, crop, mirror=mirror)
                times[name].append((time.perf_counter() - start) / 10 * 1000)
    result = {"machine": f"{cpu_name()}, 1 thread",
              **{f"{name}_ms": {"min": round(min(t), 2), "median": round(statistics.median(t), 2)}
                 for name, t in times.items()}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
