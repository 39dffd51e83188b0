"""How narrow must the embedder be to meet issue #5's 15 ms per face in int8 on this CPU? Speed only.

    python benchmarks/int8_widths.py [--out benchmarks/results/int8_widths.json]

Why: int8 took the shipped network from ~36 to ~22 ms per face on one thread of an AVX2-only CPU
(`benchmarks/int8.py`), still over 15 ms. The next step would be a narrower network distilled from the shipped one;
before training one, this times candidate shapes as the product would run them (int8, stem and head in float32,
crop and mirror in one batch, one thread), side by side in rounds. The weights are random and the ranges come from
random crops: neither changes the work the kernels do, and accuracy is not measured here.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.machine import cpu_name  # noqa: E402
from benchmarks.timing import interleaved_ms  # noqa: E402
from embedder import int8  # noqa: E402
from embedder.model import EmbedderConfig, EmbeddingNet, count_parameters, embed  # noqa: E402

SHAPES = {
    "shipped (32, 64, 128, 256) x (2, 3, 3, 2)": EmbedderConfig(),
    "(24, 48, 96, 192) x (2, 3, 3, 2)": EmbedderConfig(widths=(24, 48, 96, 192)),
    "(32, 64, 128, 256) x (1, 2, 2, 1)": EmbedderConfig(depths=(1, 2, 2, 1)),
    "(16, 32, 64, 128) x (2, 3, 3, 2)": EmbedderConfig(widths=(16, 32, 64, 128)),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--faces", type=int, default=40, help="faces per shape and round")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "int8_widths.json")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    crops = np.random.default_rng(0).integers(0, 256, size=(64, 112, 112, 3), dtype=np.uint8)
    models = {}
    for name, config in SHAPES.items():
        net = EmbeddingNet(config).eval()
        models[name] = (int8.quantize(net, int8.calibrate(net, crops)), count_parameters(net))
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        speed = interleaved_ms({name: (lambda i, m=model: embed(m, x[i % len(x)][None]))
                                for name, (model, _) in models.items()}, a.rounds, a.faces)
    result = {
        "machine": {"cpu": cpu_name(), "threads": 1, "torch": torch.__version__},
        "shapes": {name: {"parameters": params, "ms_per_face_median": speed[name]["median"],
                          "ms_per_face_best": speed[name]["best"]}
                   for name, (_, params) in models.items()},
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    for name, r in result["shapes"].items():
        print(f"{name}: {r['parameters'] / 1e6:.2f} M parameters, {r['ms_per_face_median']:.1f} ms/face by median "
              f"(best {r['ms_per_face_best']:.1f})")


if __name__ == "__main__":
    main()
