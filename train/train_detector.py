"""Train the face detector (`embedder.detector_net`) on composed scenes (`train.scenes`), on one CPU thread.

The shipped detector was made by (one command, seeded; the time budget ends the cosine schedule on time):

    nohup python -m train.train_detector --out runs/det2 --minutes 75 --threads 1 --seed 0 > runs/det2.log 2>&1 &
    python -m train.export_detector --checkpoint runs/det2/last.pt

Training data: CelebA + FIW people only (LFW is the test set), 90 % of the groups; the other 10 % make the
validation scenes. Each step draws fresh random scenes (no epochs, no fixed dataset), so a resumed run simply
continues from the checkpoint's step, weights, optimizer and random state.

Targets (CenterNet-style, per level of `LEVEL_RANGES`): a Gaussian bump at each face centre in the score map
(focal loss), and at the 3×3 cells around the centre the box (centre offset, log size in stride units) and the
landmarks (offsets from the cell in units of the box size), weighted by the bump so the peak cell counts most.
`--synthetic` swaps the datasets for drawn faces so the tests can run a few steps without data.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from embedder.detector_net import LEVEL_RANGES, DetectorConfig, FaceDetectorNet, count_parameters
from train.scenes import DatasetFaces, DrawnFaces, FaceSource, Scene, compose_scene, load_face_records
from train.schedule import learning_rate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/det1"))
    p.add_argument("--steps", type=int, default=100_000, help="upper bound; --minutes usually ends the run first")
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget for the LR schedule (0 = off)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=256, help="scene side in pixels (a multiple of 32)")
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--landmark-weight", type=float, default=8.0)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint-minutes", type=float, default=3.0)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--synthetic", action="store_true", help="drawn faces instead of the datasets (tests)")
    p.add_argument("--data", type=Path, default=None, help="datasets folder (default: train.data_paths)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------ targets

def build_targets(scenes: list[Scene], size: int, strides: tuple[int, ...]) -> list[dict[str, torch.Tensor]]:
    """Per level: heat (N,1,h,w), reg (N,14,h,w) and weight (N,1,h,w) for the box/landmark losses."""
    n = len(scenes)
    levels = []
    for stride, (lo, hi) in zip(strides, LEVEL_RANGES):
        g = size // stride
        heat = np.zeros((n, 1, g, g), np.float32)
        reg = np.zeros((n, 14, g, g), np.float32)
        weight = np.zeros((n, 1, g, g), np.float32)
        centres = (np.arange(g) + 0.5) * stride
        for i, scene in enumerate(scenes):
            for box, lm in zip(scene.boxes, scene.landmarks):
                w, h = box[2] - box[0], box[3] - box[1]
                s = max(w, h)
                if not lo <= s < hi or w < 4 or h < 4:
                    continue
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                # Bump width grows with the face (in cells) so big faces are not punished for a near-miss peak.
                sigma = max(0.6, 0.12 * s / stride)
                gx = np.exp(-((centres - cx) / stride) ** 2 / (2 * sigma**2))
                gy = np.exp(-((centres - cy) / stride) ** 2 / (2 * sigma**2))
                bump = gy[:, None] * gx[None, :]
                ix, iy = int(cx // stride), int(cy // stride)
                if not (0 <= ix < g and 0 <= iy < g):
                    continue
                bump[iy, ix] = 1.0
                heat[i, 0] = np.maximum(heat[i, 0], bump)
                for yy in range(max(0, iy - 1), min(g, iy + 2)):
                    for xx in range(max(0, ix - 1), min(g, ix + 2)):
                        wgt = bump[yy, xx]
                        if wgt <= weight[i, 0, yy, xx]:
                            continue  # the cell belongs to a face whose centre is closer
                        px, py = centres[xx], centres[yy]
                        reg[i, :4, yy, xx] = [(cx - px) / stride, (cy - py) / stride,
                                              math.log(w / stride), math.log(h / stride)]
                        reg[i, 4::2, yy, xx] = (lm[:, 0] - px) / w
                        reg[i, 5::2, yy, xx] = (lm[:, 1] - py) / h
                        weight[i, 0, yy, xx] = wgt
        levels.append({"heat": torch.from_numpy(heat), "reg": torch.from_numpy(reg),
                       "weight": torch.from_numpy(weight)})
    return levels


def focal_loss(logits: torch.Tensor, heat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CenterNet's penalty-reduced focal loss: (sum over cells, number of positive cells)."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    pos_loss = -torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = -torch.log(1 - p) * p**2 * (1 - heat) ** 4 * (1 - pos)
    return pos_loss.sum() + neg_loss.sum(), pos.sum()


def detector_loss(outputs: list[torch.Tensor], targets: list[dict[str, torch.Tensor]],
                  landmark_weight: float = 8.0) -> dict[str, torch.Tensor]:
    score, n_pos, box, marks, wsum = 0.0, 0.0, 0.0, 0.0, 0.0
    for out, t in zip(outputs, targets):
        s, npos = focal_loss(out[:, :1], t["heat"])
        score, n_pos = score + s, n_pos + npos
        w = t["weight"]
        diff = (out[:, 1:] - t["reg"]).abs()
        box = box + (F.smooth_l1_loss(out[:, 1:5], t["reg"][:, :4], reduction="none", beta=0.1) * w).sum()
        marks = marks + (diff[:, 4:] * w).sum()
        wsum = wsum + w.sum()
    n_pos = torch.clamp(torch.as_tensor(n_pos), min=1.0)
    wsum = torch.clamp(torch.as_tensor(wsum), min=1.0)
    losses = {"score": score / n_pos, "box": box / wsum / 4, "landmarks": marks / wsum / 10}
    # Landmarks weigh most: aligned crops for the embedder need them to a few % of the eye distance.
    losses["total"] = losses["score"] + 2.0 * losses["box"] + landmark_weight * losses["landmarks"]
    return losses


# ------------------------------------------------------------------------------------------------ loop

def make_source(args: argparse.Namespace, split: str) -> FaceSource:
    if args.synthetic:
        return DrawnFaces()
    from train.data_paths import data_root

    root = args.data or data_root()
    if root is None:
        raise SystemExit("no datasets found: set ONESHOT_DATA or use --synthetic")
    return DatasetFaces(load_face_records(Path(root), split))


def scenes_to_tensor(scenes: list[Scene]) -> torch.Tensor:
    return torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float().div_(255)


def save(path: Path, model: FaceDetectorNet, opt: torch.optim.Optimizer, step: int, args: argparse.Namespace,
         rng: np.random.Generator, elapsed: float) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({
        "model": model.state_dict(), "config": model.config.to_dict(), "optimizer": opt.state_dict(),
        "step": step, "elapsed": elapsed, "rng": rng.bit_generator.state,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }, tmp)
    tmp.replace(path)


@torch.no_grad()
def validate(model: FaceDetectorNet, scenes: list[Scene], size: int) -> dict[str, float]:
    model.eval()
    targets = build_targets(scenes, size, model.config.strides)
    totals: dict[str, float] = {}
    for i in range(0, len(scenes), 16):
        part = [{k: v[i:i + 16] for k, v in t.items()} for t in targets]
        losses = detector_loss(model(scenes_to_tensor(scenes[i:i + 16])), part)
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + float(v) / math.ceil(len(scenes) / 16)
    model.train()
    return totals


def train(args: argparse.Namespace) -> Path:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    source = make_source(args, "train")
    val_source = make_source(args, "val")
    val_rng = np.random.default_rng(12345)
    val_scenes = [compose_scene(val_rng, val_source, args.size, args.size) for _ in range(16 if args.synthetic else 96)]

    model = FaceDetectorNet(DetectorConfig())
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    step, elapsed = 0, 0.0
    last = args.out / "last.pt"
    if args.resume and last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, elapsed = ck["step"], ck["elapsed"]
        rng.bit_generator.state = ck["rng"]
        print(f"resumed at step {step}, {elapsed / 60:.1f} min")
    print(f"parameters: {count_parameters(model):,}", flush=True)
    log = open(args.out / "log.jsonl", "a")
    start = time.time() - elapsed
    last_save = time.time()
    meter: dict[str, float] = {}
    data_time, window = 0.0, time.time()
    while step < args.steps:
        elapsed = time.time() - start
        if args.minutes > 0 and elapsed > args.minutes * 60:
            break
        lr = learning_rate(step, args, elapsed, floor=0.01)
        for group in opt.param_groups:
            group["lr"] = lr
        t0 = time.time()
        scenes = [compose_scene(rng, source, args.size, args.size) for _ in range(args.batch)]
        targets = build_targets(scenes, args.size, model.config.strides)
        x = scenes_to_tensor(scenes)
        data_time += time.time() - t0
        losses = detector_loss(model(x), targets, args.landmark_weight)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        for k, v in losses.items():
            meter[k] = meter.get(k, 0.0) + float(v.detach())
        if step % args.log_every == 0 or step == args.steps:
            n = args.log_every if step % args.log_every == 0 else step % args.log_every
            row = {"step": step, "lr": lr, "min": round((time.time() - start) / 60, 2),
                   "data_frac": round(data_time / max(1e-6, time.time() - window), 2),
                   **{k: round(v / n, 4) for k, v in meter.items()}}
            meter, data_time, window = {}, 0.0, time.time()
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
        if time.time() - last_save > args.checkpoint_minutes * 60:
            v = validate(model, val_scenes, args.size)
            row = {"step": step, "val": {k: round(x, 4) for k, x in v.items()}}
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            save(last, model, opt, step, args, rng, time.time() - start)
            last_save = time.time()
    v = validate(model, val_scenes, args.size)
    row = {"step": step, "final": True, "val": {k: round(x, 4) for k, x in v.items()},
           "min": round((time.time() - start) / 60, 2)}
    print(json.dumps(row), flush=True)
    log.write(json.dumps(row) + "\n")
    log.close()
    save(last, model, opt, step, args, rng, time.time() - start)
    return last


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
