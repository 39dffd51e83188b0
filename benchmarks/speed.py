"""How long the whole pipeline takes per photo on one CPU thread: decode, detect, landmarks, align, embed.

    python -m benchmarks.speed [--photos 40] [--rounds 5]     # → benchmarks/results/speed.json

The photos are celeba-wild's, each placed on a 640×480 canvas and saved as a JPEG (the size a door camera or a
phone photo resized for upload gives), so decoding is timed at that size too. Each stage's median is reported
beside the total; the stages alternate photo by photo, so load from elsewhere hits them alike.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.machine import cpu_name, write_result
from train.data_paths import data_root

RESULTS = Path(__file__).resolve().parent / "results" / "speed.json"


def camera_photos(count: int) -> list[bytes]:
    """`count` celeba-wild photos scaled to fill a 640×480 canvas, as JPEG bytes."""
    root = data_root()
    if root is None:
        raise SystemExit("error: no datasets (set ONESHOT_DATA)")
    rows = list(csv.DictReader((root / "celeba-wild" / "manifest.csv").open()))[:: 1941 // count][:count]
    out = []
    for row in rows:
        photo = Image.open(root / "celeba-wild" / row["path"]).convert("RGB")
        scale = min(640 / photo.width, 480 / photo.height)
        canvas = Image.new("RGB", (640, 480), (90, 90, 90))
        resized = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.BICUBIC)
        canvas.paste(resized, ((640 - resized.width) // 2, (480 - resized.height) // 2))
        buffer = io.BytesIO()
        canvas.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def main(argv: list[str] | None = None) -> None:
    import torch

    import embedder
    from embedder.api import WEIGHTS_DIR

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    photos = camera_photos(args.photos)
    stages: dict[str, list[float]] = {"decode": [], "detect_and_landmarks": [], "align": [], "embed": [], "total": []}
    for round_ in range(args.rounds + 1):
        for data in photos:
            t0 = time.perf_counter()
            image = Image.open(io.BytesIO(data)).convert("RGB")
            t1 = time.perf_counter()
            faces = embedder.detect_faces(image)[:1]
            t2 = time.perf_counter()
            crops = embedder.aligned_faces(image, faces)
            t3 = time.perf_counter()
            embedder.face_embeddings(crops)
            t4 = time.perf_counter()
            if round_ == 0:
                continue                                    # warm-up: kernels are built on first use
            for name, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                stages[name].append(1000 * seconds)
    result = {"machine": cpu_name(), "threads": 1, "photo_size": "640x480 JPEG", "photos": len(photos),
              "rounds": args.rounds, "ms_median": {k: round(float(np.median(v)), 2) for k, v in stages.items()},
              "ms_p90_total": round(float(np.percentile(stages["total"], 90)), 2),
              "weights_mb": round(sum((WEIGHTS_DIR / f).stat().st_size
                                      for f in ("detector.pt", "landmarks.pt", "embedder.pt")) / 2**20, 2)}
    print(json.dumps(result, indent=1))
    write_result(args.out, result)


if __name__ == "__main__":
    main()
