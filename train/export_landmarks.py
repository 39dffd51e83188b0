"""Checkpoint → shipped landmark network: `embedder/weights/landmarks.pt` (float16) + model card `landmarks.json`.

    python -m train.export_landmarks --checkpoint runs/lmk1/last.pt

The weights file holds only tensors, strings and numbers (`{"model": float16 state_dict, "config": dict}`), so
`torch.load(..., weights_only=True)` reads it, like `detector.pt`. The card records the data, the steps, the
exact training command and the validation NME (un-jittered and jittered boxes) measured during training.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from embedder.landmark_net import LandmarkConfig, LandmarkNet
from embedder.model import count_parameters
from train.export import training_command

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "embedder" / "weights"
LANDMARK_WEIGHTS = WEIGHTS_DIR / "landmarks.pt"
LANDMARK_CARD = WEIGHTS_DIR / "landmarks.json"
TRAIN_DATA = ("celeba + fiw photos with one teacher face (90 % of groups; the other 10 % = validation; LFW never "
              "used), cached 128 px crops (train.landmark_crops, margin 2.2)")


def export(checkpoint: Path, out: Path = LANDMARK_WEIGHTS, card: Path = LANDMARK_CARD) -> dict[str, Any]:
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = LandmarkNet(LandmarkConfig.from_dict(ck["config"]))
    model.load_state_dict(ck["model"])
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"model": state, "config": model.config.to_dict()}, out)
    args = ck.get("args", {})
    info = {
        "what": "5-point landmark regressor on a square crop around each detected face (O-Net-like refinement)",
        "params": count_parameters(model), "file_bytes": out.stat().st_size, "dtype": "float16 (widened on load)",
        "architecture": "4 stages of conv3x3-BN-ReLU (stride 2, then 1), flatten, linear-ReLU-linear -> 5x2",
        "config": model.config.to_dict(),
        "output": "landmarks in crop units (0 = crop's left/top edge, 1 = right/bottom edge); "
                  "order image-left eye, image-right eye, nose, image-left mouth corner, image-right mouth corner",
        "training_command": training_command(args, "train.train_landmarks"),
        "export_command": f"python -m train.export_landmarks --checkpoint {checkpoint}",
        "steps": ck["step"], "train_minutes": round(float(ck.get("elapsed", 0.0)) / 60, 1),
        "batch": args.get("batch"), "loss": f"{args.get('loss')} on coordinates / target inter-ocular distance",
        "data": TRAIN_DATA, "teacher": "MTCNN (facenet-pytorch 2.6.0) landmarks.csv",
        "augmentation": "virtual detector box (scale ±15 %, shift ±10 %, aspect ±10 %), rotation ±30°, mirror, "
                        "colour/contrast/brightness, 10 % grayscale, 25 % low resolution, noise",
        "validation": {"protocol": "held-out groups' crops; plain = box is the teacher's box, jitter = fixed "
                                   "random virtual boxes/rotations/mirrors; NME = mean distance / inter-ocular",
                       **(ck.get("val") or {})},
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    card.write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, default=LANDMARK_WEIGHTS)
    p.add_argument("--card", type=Path, default=LANDMARK_CARD)
    a = p.parse_args(argv)
    info = export(a.checkpoint, a.out, a.card)
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
