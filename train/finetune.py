"""Triplet fine-tuning of the ported embedder on the training people.

Anchor, positive and negative go through one shared network; the loss is the P×K batch-hard triplet loss with a
margin on L2-normalised outputs (`train.losses`; `--loss contrastive` and `--mining semihard` remain available).
The port is already strong, so only the last part of it trains, at a low learning rate: `--unfreeze K` trains
the last K of the network's stages (its inverted-residual blocks, then the output head counted as one), and
`--head-dim D` adds a D-dimensional linear projection on the 256-d output (initialised to the training
embeddings' top-D principal directions, so step 0 is already the port's geometry). The frozen front of the
network is run once per photo (and its mirror image, the only augmentation), so a step costs only the trained part.

    python -m train.finetune --cache cache/crops --out runs/ft --unfreeze 2 --steps 600
    python -m train.export --weights runs/ft/last.pt      # held-out comparison with the port, card, shipping

The held-out people (10 % of groups, `train.face_data`) are evaluated every `--eval-every` steps (TAR at FAR
0.1 %); the checkpoint keeps the last step. `--minutes` stops early with a checkpoint; `--resume` continues.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from embedder.layers import bgr_tensor
from embedder.model import FaceEmbeddingNet
from train.convert_openvino import EMBEDDER, port
from train.data_paths import teachers_root
from train.evaluate import PairTable
from train.face_data import FaceSet, PKSampler, load_training_faces
from train.losses import contrastive_loss, triplet_loss


def stages(net: FaceEmbeddingNet) -> list[nn.Module]:
    """The network's parts in data-flow order, as `--unfreeze` counts them from the end."""
    return [net.input_norm, net.stem, *net.blocks, net.head]


class Split(nn.Module):
    """The trained back of the network (the last `unfreeze` stages and the projection head)."""

    def __init__(self, net: FaceEmbeddingNet, unfreeze: int) -> None:
        super().__init__()
        parts = stages(net)
        self.front = nn.Sequential(*parts[: len(parts) - unfreeze]).eval().requires_grad_(False)
        self.back = nn.Sequential(*parts[len(parts) - unfreeze:])
        self.projection = net.projection

    def tail(self, features: torch.Tensor) -> torch.Tensor:
        out = self.back(features).flatten(1)
        return self.projection(out) if self.projection is not None else out


@torch.no_grad()
def front_features(split: Split, images: np.ndarray, batch: int = 128) -> torch.Tensor:
    """(N, 2, C, H, W) float16: the frozen front's output for each crop and its mirror image."""
    out = []
    for start in range(0, len(images), batch):
        x = bgr_tensor(np.asarray(images[start:start + batch]))
        out.append(torch.stack([split.front(x), split.front(x.flip(3))], 1).half())
    return torch.cat(out)


def cached_front_features(split: Split, train_set: FaceSet, val_set: FaceSet, cache: Path,
                          unfreeze: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen front's features of the training and held-out photos, computed once per `--unfreeze` and kept
    beside the crops (the front is the port, which never changes): further runs start in seconds."""
    path = cache / f"front_unfreeze{unfreeze}.pt"
    if path.exists():
        saved = torch.load(path, weights_only=True)
        if len(saved["train"]) == len(train_set.labels) and len(saved["val"]) == len(val_set.labels):
            return saved["train"], saved["val"]
    features = front_features(split, train_set.images), front_features(split, val_set.images)
    torch.save({"train": features[0], "val": features[1]}, path)
    return features


def pca_projection(vectors: np.ndarray, dim: int) -> torch.Tensor:
    """(dim, 256) rows = the top principal directions of the normalised training embeddings."""
    centred = vectors - vectors.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return torch.from_numpy(vt[:dim].astype(np.float32))


@torch.no_grad()
def held_out_tar(split: Split, features: torch.Tensor, faces: FaceSet) -> float:
    """TAR at FAR 0.1 % over every pair of held-out photos, one pass per photo as the product embeds."""
    split.eval()
    emb = torch.cat([nn.functional.normalize(split.tail(features[i:i + 256, 0].float()), dim=1)
                     for i in range(0, len(features), 256)]).numpy()
    return PairTable(emb, faces.labels, faces.groups).metrics()["tar@far1e-3"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("cache/crops"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--unfreeze", type=int, default=2, help="trained stages, counted from the output")
    parser.add_argument("--head-dim", type=int, default=0, help="add a linear head of this size (0: none)")
    parser.add_argument("--loss", choices=["triplet", "contrastive"], default="triplet")
    parser.add_argument("--mining", choices=["hard", "semihard"], default="hard")
    parser.add_argument("--margin", type=float, default=0.3)
    parser.add_argument("--p", type=int, default=64, help="people per batch")
    parser.add_argument("--k", type=int, default=4, help="photos per person")
    parser.add_argument("--relatives", type=float, default=0.5, help="share of each batch drawn as FIW families")
    parser.add_argument("--real-share", type=float, default=0.0,
                        help="share of each batch's people drawn from those with whole photos (celeba-wild)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=0.0, help="stop (with a checkpoint) after this long")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "log.jsonl").open("a")

    train_set, val_set = load_training_faces(args.cache)
    net = FaceEmbeddingNet(head_dim=args.head_dim)
    net.load_state_dict(port(EMBEDDER, teachers_root()).state_dict(), strict=False)   # type: ignore[arg-type]
    split = Split(net, args.unfreeze)
    start_time = time.time()
    train_features, val_features = cached_front_features(split, train_set, val_set, args.cache, args.unfreeze)
    print(f"front features: {len(train_features)} train, {len(val_features)} held out, "
          f"{time.time() - start_time:.0f} s", flush=True)
    if net.projection is not None:
        with torch.no_grad():
            sample = train_features[:: max(1, len(train_features) // 4000), 0].float()
            vectors = nn.functional.normalize(split.back(sample).flatten(1), dim=1).numpy()
        net.projection.weight.data.copy_(pca_projection(vectors, args.head_dim))

    trained = [p for p in split.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=args.lr, weight_decay=1e-4)
    step = 0
    if args.resume and (args.out / "last.pt").exists():
        saved = torch.load(args.out / "last.pt", weights_only=False)
        net.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        step = saved["step"]
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, args.steps) / args.steps)), last_epoch=step - 1)
    sampler = PKSampler(train_set.labels, train_set.groups, args.p, args.k, args.seed + step, args.relatives,
                        train_set.real, args.real_share)
    rng = np.random.default_rng(args.seed + step)

    def checkpoint() -> None:
        torch.save({"model": net.state_dict(), "config": {"head_dim": args.head_dim}, "optimizer":
                    optimizer.state_dict(), "step": step, "args": vars(args) | {"cache": str(args.cache),
                                                                                 "out": str(args.out)}},
                   args.out / "last.pt")

    if step == 0:
        tar = held_out_tar(split, val_features, val_set)
        log.write(json.dumps({"step": 0, "held_out_tar@far1e-3": tar}) + "\n")
        print(f"step 0 held-out TAR@FAR0.1% {tar:.4f}", flush=True)
    while step < args.steps:
        split.back.train()
        rows = sampler.batch()
        mirror = torch.from_numpy(rng.integers(0, 2, len(rows)))
        x = train_features[torch.from_numpy(rows), mirror].float()
        emb = nn.functional.normalize(split.tail(x), dim=1)
        labels = torch.from_numpy(train_set.labels[rows])
        loss = (triplet_loss(emb, labels, args.margin, args.mining) if args.loss == "triplet"
                else contrastive_loss(emb, labels, args.margin))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        step += 1
        entry: dict = {"step": step, "loss": float(loss.detach()), "lr": schedule.get_last_lr()[0]}
        if step % args.eval_every == 0 or step == args.steps:
            entry["held_out_tar@far1e-3"] = held_out_tar(split, val_features, val_set)
            tar = entry["held_out_tar@far1e-3"]
            print(f"step {step} loss {float(loss.detach()):.4f} held-out TAR@FAR0.1% {tar:.4f}",
                  flush=True)
            checkpoint()
        log.write(json.dumps(entry) + "\n")
        log.flush()
        if args.minutes and time.time() - start_time > 60 * args.minutes:
            break
    checkpoint()
    log.close()


if __name__ == "__main__":
    main()
