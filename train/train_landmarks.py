"""Train the landmark network (`embedder.landmark_net`) on cached CelebA + FIW crops, on one CPU thread.

    python -m train.landmark_crops --out cache/landmarks            # once
    nohup python -m train.train_landmarks --out runs/lmk1 --minutes 30 --threads 1 --seed 0 > runs/lmk1.log 2>&1 &
    python -m train.export_landmarks --checkpoint runs/lmk1/last.pt

Each sample imitates what the network gets at inference: a *virtual detector box* — the teacher's box jittered in
scale (±15 %), position (±10 % of its size) and aspect (±10 %), because our detector's boxes are close to the
teacher's but not equal — then the square crop region `LandmarkConfig.margin` × its long side around it, rotated
(±30 °; half the samples only slightly, as most photos are upright) and mirrored half the time (left/right labels
swapped). The crop is resampled from the 128 px cache with one `affine_grid`/`grid_sample` for the whole batch and
the teacher's landmarks go through the same affine map, so labels and pixels cannot drift apart. Then photometric
jitter (brightness, contrast, saturation, 10 % grayscale, 25 % low resolution, a little noise).

Loss: L1 on crop-unit coordinates divided by each target's inter-ocular distance, which optimises the benchmark's
metric (NME = mean point distance / inter-ocular distance) directly; `--loss wing` boosts small errors instead.
Validation NME is reported on the untouched validation crops (box = teacher box) and on a fixed jittered copy.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from embedder.landmark_net import LandmarkConfig, LandmarkNet, count_parameters, inter_ocular
from train.landmark_crops import load_cache
from train.schedule import learning_rate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="run directory (last.pt, log.jsonl)")
    p.add_argument("--cache", type=Path, default=Path("cache/landmarks"), help="crops from train.landmark_crops")
    p.add_argument("--steps", type=int, default=1_000_000, help="upper bound; --minutes usually ends the run first")
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget for the LR schedule (0 = off)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--loss", choices=["l1", "wing"], default="l1")
    p.add_argument("--input-size", type=int, default=LandmarkConfig.input_size)
    p.add_argument("--margin", type=float, default=LandmarkConfig.margin)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                   help="bf16 autocast roughly doubles CPU training speed where the CPU has native bf16")
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--checkpoint-minutes", type=float, default=3.0)
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--init", type=Path, default=None, help="start from these weights (checkpoint or shipped .pt)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------ sampling

def crop_transforms(boxes: torch.Tensor, margin: float, cache_size: int, generator: torch.Generator | None
                    ) -> torch.Tensor:
    """Teacher boxes (B, 4) in cache pixels → `affine_grid` matrices (B, 2, 3) of the crops to cut.

    Output pixel at normalised (xo, yo) ∈ [-1, 1]² samples the cache at centre + R(angle)·(side/2)·(flip·xo, yo),
    i.e. the square crop region around the (virtual) box, rotated about its centre and optionally mirrored.
    Without a generator: the plain, un-jittered crop of the teacher box (validation)."""
    b = boxes.double()
    n = b.shape[0]
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    angle = torch.zeros(n, dtype=torch.float64)
    flip = torch.ones(n, dtype=torch.float64)
    if generator is not None:
        def uniform(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)

        scale = torch.exp(uniform(math.log(0.85), math.log(1.15)))
        aspect = uniform(0.9, 1.1)
        cx, cy = cx + uniform(-0.1, 0.1) * w, cy + uniform(-0.1, 0.1) * h
        w, h = w * scale * aspect, h * scale / aspect
        wide = torch.rand(n, generator=generator) < 0.5
        small = torch.randn(n, generator=generator, dtype=torch.float64) * 5
        angle = torch.where(wide, uniform(-30, 30), small.clamp(-30, 30)) * math.pi / 180
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).double()
    side = margin * torch.maximum(w, h)
    k = side / cache_size  # (side / 2) / (cache_size / 2)
    cos, sin = torch.cos(angle) * k, torch.sin(angle) * k
    theta = torch.stack([torch.stack([cos * flip, -sin, cx / (cache_size / 2) - 1], 1),
                         torch.stack([sin * flip, cos, cy / (cache_size / 2) - 1], 1)], 1)
    return theta


def landmarks_in_crop(theta: torch.Tensor, landmarks: torch.Tensor, cache_size: int) -> torch.Tensor:
    """Cache-pixel landmarks (B, 5, 2) → crop units (B, 5, 2) of the crops `theta` cuts (inverse of its map).

    Mirrored crops get their left/right points swapped, so index 0 is always the *image-left* eye."""
    from embedder.landmark_net import FLIP_ORDER

    a, t = theta[:, :, :2], theta[:, :, 2]
    normalised = landmarks.double() / (cache_size / 2) - 1
    out = torch.linalg.solve(a[:, None], (normalised - t[:, None]).unsqueeze(-1)).squeeze(-1)
    crop = (out + 1) / 2
    flipped = theta[:, 0, 0] * theta[:, 1, 1] - theta[:, 0, 1] * theta[:, 1, 0] < 0  # mirror: negative determinant
    crop[flipped] = crop[flipped][:, FLIP_ORDER]
    return crop.float()


def cut_crops(images: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """Cache crops (B, 3, K, K) in [0, 1] → crops (B, 3, size, size); grey (0.5) beyond the cache, as beyond a photo."""
    grid = F.affine_grid(theta.float(), [images.shape[0], 3, size, size], align_corners=False)
    return F.grid_sample(images - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5


def photometric(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Camera variety on a batch (B, 3, S, S): colour, exposure, contrast, grayscale, low resolution, noise."""
    n, _, s, _ = x.shape

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(n, generator=generator)).view(n, 1, 1, 1)

    low = torch.rand(n, generator=generator) < 0.25  # small faces in scenes are upsampled, hence blurry
    if low.any():
        factor = float(uniform(0.3, 0.75).flatten()[0])
        small = F.interpolate(x[low], scale_factor=factor, mode="bilinear", antialias=True, align_corners=False)
        x[low] = F.interpolate(small, size=(s, s), mode="bilinear", align_corners=False)
    gray = x.mean(dim=1, keepdim=True)
    x = gray + (x - gray) * uniform(0.6, 1.4)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * uniform(0.6, 1.4)
    x = x * uniform(0.65, 1.35) + uniform(-0.08, 0.08)
    x = x * (1 + 0.06 * (torch.rand(n, 3, 1, 1, generator=generator) - 0.5))  # white balance
    to_gray = torch.rand(n, generator=generator) < 0.1
    x[to_gray] = x[to_gray].mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    noise = torch.randn(x.shape, generator=generator) * uniform(0.0, 0.03)
    return (x + noise).clamp_(0.0, 1.0)


def normalised_errors(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, 5, 2) → (B, 5, 2) coordinate errors in units of each target's inter-ocular distance."""
    iod = inter_ocular(target).clamp(min=0.05)
    return (pred - target) / iod[:, None, None]


def landmark_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    err = normalised_errors(pred.float(), target).abs()
    if kind == "wing":  # Feng et al. 2018: log-shaped near zero (small errors still pull), linear beyond w
        w, eps = 0.1, 0.02
        c = w - w * math.log(1 + w / eps)
        err = torch.where(err < w, w * torch.log(1 + err / eps), err - c)
    return err.sum(-1).mean()


def nme(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean point distance / inter-ocular distance (the benchmark's landmark error)."""
    return (pred - target).norm(dim=-1).mean(-1) / inter_ocular(target).clamp(min=1e-6)


# ------------------------------------------------------------------------------------------------ loop

class Validation:
    """Validation crops cut once: plain (box = teacher box) and a fixed jittered copy (box like a detector's)."""

    def __init__(self, images: np.ndarray, boxes: np.ndarray, marks: np.ndarray, config: LandmarkConfig) -> None:
        x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float().div_(255)
        b, m, k = torch.from_numpy(boxes), torch.from_numpy(marks), images.shape[1]
        self.sets: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, gen in (("plain", None), ("jitter", torch.Generator().manual_seed(12345))):
            theta = crop_transforms(b, config.margin, k, gen)
            self.sets[name] = (cut_crops(x, theta, config.input_size), landmarks_in_crop(theta, m, k))

    def report(self, model: LandmarkNet, batch: int = 512) -> dict[str, float]:
        model.eval()
        out: dict[str, float] = {}
        with torch.inference_mode():
            for name, (x, target) in self.sets.items():
                pred = torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])
                errors = nme(pred, target)
                out[f"nme_{name}"] = float(errors.mean())
                out[f"nme_{name}_median"] = float(errors.median())
                out[f"fail10_{name}"] = float((errors > 0.1).float().mean())  # share of crops with NME > 0.1
        model.train()
        return out


def save(path: Path, model: LandmarkNet, opt: torch.optim.Optimizer, step: int, args: argparse.Namespace,
         gen: torch.Generator, elapsed: float, val: dict[str, float] | None) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({
        "model": model.state_dict(), "config": model.config.to_dict(), "optimizer": opt.state_dict(),
        "step": step, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "torch_rng": gen.get_state(), "elapsed": elapsed, "val": val,
    }, tmp)
    tmp.replace(path)


def load_weights(path: Path) -> tuple[LandmarkNet, dict[str, Any]]:
    """A training checkpoint or a shipped (float16) weights file → network in float32."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = LandmarkNet(LandmarkConfig.from_dict(ck["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck["model"].items()})
    return model, ck


def log_line(log: Any, record: dict[str, Any]) -> None:
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in record.items()}), flush=True)
    log.write(json.dumps(record) + "\n")
    log.flush()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    images, boxes, marks = load_cache(args.cache, "train", mmap=False)
    val_images, val_boxes, val_marks = load_cache(args.cache, "val")
    cache_size = images.shape[1]
    print(f"train: {len(images)} crops, val: {len(val_images)} crops, cache {cache_size} px", flush=True)

    model = LandmarkNet(LandmarkConfig(input_size=args.input_size, margin=args.margin))
    gen = torch.Generator().manual_seed(args.seed)
    step, elapsed, ck = 0, 0.0, None
    if args.resume and (args.out / "last.pt").exists():
        model, ck = load_weights(args.out / "last.pt")
        step, elapsed = int(ck["step"]), float(ck.get("elapsed", 0.0))
        gen.set_state(ck["torch_rng"])
        print(f"resumed at step {step}", flush=True)
    elif args.init is not None:
        model, _ = load_weights(args.init)
        print(f"initialised from {args.init}", flush=True)
    # channels_last is oneDNN's preferred CPU layout; the saved weights are ordinary tensors either way.
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if ck is not None:
        opt.load_state_dict(ck["optimizer"])
    validation = Validation(val_images, val_boxes, val_marks, model.config)
    print(f"model: {count_parameters(model) / 1e6:.3f}M parameters, input {model.config.input_size}px, "
          f"margin {model.config.margin}, {args.precision}", flush=True)

    all_boxes, all_marks = torch.from_numpy(boxes), torch.from_numpy(marks)
    log = open(args.out / "log.jsonl", "a")
    last_save, tick, t0 = time.time(), time.time(), time.time()
    window: list[float] = []
    val: dict[str, float] | None = ck.get("val") if ck else None
    finished = step >= args.steps
    while not finished:
        now = time.time()
        elapsed += now - tick
        tick = now
        lr = learning_rate(step, args, elapsed)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(images), (args.batch,), generator=gen)
        batch = torch.from_numpy(images[idx.numpy()]).permute(0, 3, 1, 2).float().div_(255)
        theta = crop_transforms(all_boxes[idx], model.config.margin, cache_size, gen)
        x = photometric(cut_crops(batch, theta, model.config.input_size), gen)
        target = landmarks_in_crop(theta, all_marks[idx], cache_size)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            pred = model(x.contiguous(memory_format=torch.channels_last))
        loss = landmark_loss(pred.float(), target, args.loss)  # the loss in fp32
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        window.append(float(loss.detach()))
        finished = step >= args.steps or (args.minutes > 0 and elapsed >= args.minutes * 60)
        if step % args.log_every == 0:
            rate = len(window) * args.batch / (time.time() - t0)
            log_line(log, {"step": step, "lr": lr, "loss": float(np.mean(window)), "img_per_s": rate,
                           "minutes": elapsed / 60})
            window.clear()
            t0 = time.time()
        if step % args.eval_every == 0 or finished:
            val = validation.report(model)
            log_line(log, {"step": step, "minutes": elapsed / 60, "val": val})
            t0 = time.time()
        if time.time() - last_save > args.checkpoint_minutes * 60 or finished:
            save(args.out / "last.pt", model, opt, step, args, gen, elapsed, val)
            last_save = time.time()
    print("done", flush=True)


if __name__ == "__main__":
    main()
