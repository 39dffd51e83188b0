"""Embedder training throughput on this CPU: fp32 vs bf16 autocast, side by side in one run.

    python benchmarks/train_speed.py [--size 96] [--out benchmarks/results/train_speed.json]

One training step = forward + backward + AdamW update of the shipped architecture on a random 128-image batch at
--size px, 64 by default (the data pipeline is not included). Reports images per second for 1 and 2 threads, and the ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.machine import cpu_name  # noqa: E402

from embedder.model import EmbedderConfig, EmbeddingNet  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "train_speed.json"


def images_per_second(threads: int, precision: str, size: int = 64, batch: int = 128, steps: int = 6) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = EmbeddingNet(EmbedderConfig(input_size=size)).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            features = model.features(x)
        loss = features.float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()  # warm-up: oneDNN picks its kernels
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="input size in pixels (the shipped network: 96)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results: dict = {"machine": f"{cpu_name()}, {torch.get_num_threads()} threads available",
                     "torch": torch.__version__, "input_size": args.size, "batch": 128, "runs": []}
    for threads in (1, 2):
        fp32 = images_per_second(threads, "fp32", size=args.size)
        bf16 = images_per_second(threads, "bf16", size=args.size)
        row = {"threads": threads, "fp32_img_per_s": round(fp32, 1), "bf16_img_per_s": round(bf16, 1),
               "bf16_speedup": round(bf16 / fp32, 2)}
        results["runs"].append(row)
        print(json.dumps(row), flush=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
