"""Triplet training of the face embedder on CelebA + FIW (LFW-disjoint), on CPU.

Usage (the shipped weights' exact commands are in their model card and the README's "Training" section):

    python -m train.crops --dataset celeba --dataset fiw --out cache/crops
    nohup python -m train.train_embedder --out runs/emb1 --minutes 90 --input-size 64 > runs/emb1.log 2>&1 &
    python -m train.export --checkpoint runs/emb1/last.pt

Each step: a P×K batch (P people × K photos), one shared network embeds all of them, and the loss is the triplet
loss over batch-mined (anchor, positive, negative) triplets (`--mining hard|semihard`) or the Siamese contrastive
loss (`--loss contrastive`), plus an optional auxiliary distillation term pulling each embedding towards dlib's
(centred, normalised) vector of the same photo (`--distill`, 0 disables it), and, with `--mixes`, towards dlib's
vectors of blended faces of two training people (a bank made once by `train.teacher_mixes`). `--relational` adds
the teacher's pairwise similarities as a target, `--memory` keeps recent embeddings as extra negatives for the
triplet loss, `--centres` adds a margin softmax against every training person's running-mean centre (an auxiliary
term beside the triplet loss), `--relatives` puts whole FIW families into batches (relatives as the hard
negatives batch-hard mining needs). `--mirror-distill` pulls each single-pass embedding towards the mirror-averaged
embedding that the `--init` weights (frozen) give the same augmented crop: the teacher is the product's own
two-pass output, so one pass can learn to do what two did. `--erase` blanks a random rectangle of some photos,
`--lighting` varies exposure, colour cast, side light and noise, and `--dropout` sets the head's dropout
(regularisers for runs longer than the training people bear without them), `--sam` steps with the gradient at the
worst nearby weights (sharpness-aware minimisation, towards flat minima), `--mirror-loss` trains the two-pass
embedding the product computes instead of a single pass; `--ema` keeps the weight average that is validated and
shipped. Checkpoints every few minutes; `--resume` continues a run, `--init` starts from existing weights (e.g. the
shipped model).
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from embedder.model import EmbedderConfig, EmbeddingNet, count_parameters, embed, from_saved, mirror_sum
from train.augment import augment
from train.evaluate import embed_array, verification_report
from train.face_data import FaceSet, PKSampler, centre_teacher, family_groups, load_training_faces
from train.schedule import learning_rate
from train.losses import (CENTRE_MARGIN, CENTRE_SCALE, centre_softmax_loss, contrastive_loss, distillation_loss,
                          relational_loss, triplet_loss, update_centres)
from train.sam import sharpness_aware_gradients
from train.teacher_mixes import load_bank


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="run directory (checkpoints, log.jsonl)")
    p.add_argument("--cache", type=Path, default=Path("cache/crops"), help="aligned crops from train.crops")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--p", type=int, default=32, help="people per batch")
    p.add_argument("--k", type=int, default=4, help="photos per person")
    p.add_argument("--relatives", type=float, default=0.0,
                   help="share of each batch's people drawn as whole FIW families (relatives as hard negatives)")
    p.add_argument("--loss", choices=["triplet", "contrastive"], default="triplet")
    p.add_argument("--mining", choices=["hard", "semihard"], default="hard")
    p.add_argument("--margin", type=float, default=0.3)
    p.add_argument("--distill", type=float, default=1.0, help="weight of the dlib distillation term (0 = off)")
    p.add_argument("--relational", type=float, default=0.0,
                   help="weight of relational distillation: match the teacher's pairwise cosines in the batch")
    p.add_argument("--memory", type=int, default=0,
                   help="cross-batch memory: this many recent embeddings serve as extra negatives (0 = off)")
    p.add_argument("--centres", type=float, default=0.0,
                   help="weight of the auxiliary margin softmax (scale %g, margin %g) against every training "
                        "person's running-mean centre (0 = off)" % (CENTRE_SCALE, CENTRE_MARGIN))
    p.add_argument("--mixes", type=Path, default=None,
                   help="bank of dlib vectors of blended training faces (train.teacher_mixes): each step adds "
                        "--mix-batch blends whose only loss is distillation")
    p.add_argument("--mix-batch", type=int, default=64)
    p.add_argument("--mirror-distill", type=float, default=0.0,
                   help="weight of self-distillation towards the --init weights' mirror-averaged embedding of the "
                        "same augmented crop (frozen teacher; 0 = off)")
    p.add_argument("--mirror-loss", action="store_true",
                   help="compute every loss on the embedding the product uses, the normalised sum of the crop's and "
                        "its mirror image's (two passes per step)")
    p.add_argument("--erase", type=float, default=0.0, help="share of photos with a random rectangle blanked out")
    p.add_argument("--lighting", action="store_true",
                   help="also vary exposure (gamma), colour cast, light from one side and sensor noise")
    p.add_argument("--dropout", type=float, default=None,
                   help="dropout before the head's linear layer (default: the --init weights' own, else %g)"
                        % EmbedderConfig.dropout)
    p.add_argument("--sam", type=float, default=0.0,
                   help="sharpness-aware minimisation: step with the gradient at the weights moved this far (rho) "
                        "uphill; costs a second pass per step (0 = off)")
    p.add_argument("--ema", type=float, default=0.0,
                   help="keep an exponential moving average of the weights with this decay (e.g. 0.999; 0 = off); "
                        "validation, checkpoints' `ema` and the export use the average")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--input-size", type=int, default=EmbedderConfig.input_size)
    p.add_argument("--depths", type=lambda s: tuple(int(d) for d in s.split(",")), default=None,
                   help="blocks per stage, e.g. 2,3,4,3; with --init, deeper than the weights: the new blocks start "
                        "as identities; shallower: each stage keeps its first blocks")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                   help="bf16 autocast roughly doubles CPU training speed where the CPU has native bf16 (AVX512-BF16)")
    p.add_argument("--minutes", type=float, default=0.0,
                   help="wall-clock budget: the schedule ends at whichever comes first, --steps or --minutes (0 = off)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--checkpoint-minutes", type=float, default=4.0)
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--init", type=Path, default=None, help="start from these weights (checkpoint or shipped .pt)")
    return p.parse_args(argv)


def save(path: Path, model: EmbeddingNet, opt: torch.optim.Optimizer, step: int, args: argparse.Namespace,
         sampler: PKSampler, gen: torch.Generator, teacher_mean: np.ndarray, elapsed: float,
         ema: EmbeddingNet | None, blends: int, centres: torch.Tensor | None) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({
        **({"centres": centres} if centres is not None else {}),
        **({"ema": ema.state_dict()} if ema is not None else {}),
        "model": model.state_dict(), "config": model.config.to_dict(), "optimizer": opt.state_dict(),
        "step": step, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "sampler_rng": sampler.rng.bit_generator.state, "torch_rng": gen.get_state(),
        "teacher_mean": teacher_mean, "elapsed": elapsed, "blends": blends,
    }, tmp)
    tmp.replace(path)


def load_blends(folder: Path, train_set: FaceSet, teacher_mean: np.ndarray) -> dict[str, np.ndarray]:
    """The blend bank with rows mapped to `train_set` positions and dlib vectors centred/normalised like the
    per-photo targets. Refuses blends of anyone outside the training people (they would leak validation faces)."""
    bank = load_bank(folder)
    position = np.full(int(max(bank["a"].max(), bank["b"].max(), train_set.rows.max())) + 1, -1)
    position[train_set.rows] = np.arange(len(train_set.rows))
    a, b = position[bank["a"]], position[bank["b"]]
    if (a < 0).any() or (b < 0).any():
        raise SystemExit(f"{folder}: blends include photos outside the training people")
    return {"a": a, "b": b, "lam": bank["lam"], "teacher": centre_teacher(bank["teacher"], teacher_mean)}


def blend_batch(blends: dict[str, np.ndarray], images: np.ndarray, n: int,
                rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n random blends as (N, 3, 112, 112) crops in [0, 1], blended with the λ dlib saw, and their targets."""
    pick = rng.integers(0, len(blends["lam"]), size=n)
    a = torch.from_numpy(images[blends["a"][pick]]).float()
    b = torch.from_numpy(images[blends["b"][pick]]).float()
    lam = torch.from_numpy(blends["lam"][pick]).view(n, 1, 1, 1)
    x = (lam * a + (1 - lam) * b).permute(0, 3, 1, 2).div_(255)
    return x, torch.from_numpy(blends["teacher"][pick])


def resize_input(saved: dict, input_size: int) -> dict:
    """Saved weights re-targeted to another input size, so a run at a larger size starts from a trained model.

    Convolutions do not care about the input size; only the head's linear layer does, because it reads the
    flattened last feature map position by position. Its weights are resized like an image (each output unit's
    C×S×S map interpolated to the new S'×S'), scaled by S²/S'² so a smooth feature map gives the same output."""
    old = EmbedderConfig.from_dict(saved["config"])
    if old.input_size == input_size:
        return saved
    new = replace(old, input_size=input_size)
    old_side, new_side = old.feature_side, new.feature_side
    state = dict(saved["model"])
    key = next(k for k, v in state.items() if k.startswith("head.") and v.ndim == 2)
    weight = state[key].float()
    channels = weight.shape[1] // (old_side * old_side)
    maps = weight.view(weight.shape[0], channels, old_side, old_side)
    maps = F.interpolate(maps, size=(new_side, new_side), mode="bilinear", align_corners=False)
    state[key] = (maps * (old_side / new_side) ** 2).reshape(weight.shape[0], -1).to(state[key].dtype)
    return {**saved, "config": new.to_dict(), "model": state}


def set_depths(saved: dict, depths: tuple[int, ...]) -> dict:
    """Saved weights in a network with other stage depths, keeping each stage's first trained blocks.

    Deeper: the network computes exactly the same function, so training continues from a trained model with more
    capacity instead of starting over (Net2Net's deepening, Chen et al. 2016). Each stage keeps its trained blocks
    first; the blocks added at its end are freshly initialised with their last BatchNorm's scale at zero
    ("zero-init residual", Goyal et al. 2017), so each adds nothing to its input and, the input being a ReLU output
    already, passes it on unchanged. Training then grows them from there.

    Shallower: each stage drops its last blocks. A residual network degrades gracefully when blocks are removed
    (Veit et al. 2016), so a smaller, faster network starts near the trained one rather than from scratch; the
    first block of a stage (which changes the resolution and width) always stays."""
    old = EmbedderConfig.from_dict(saved["config"])
    if tuple(depths) == tuple(old.depths):
        return saved
    if len(depths) != len(old.depths) or min(depths) < 1:
        raise ValueError(f"--depths {list(depths)} must give each of the {len(old.depths)} stages at least one block")
    new = replace(old, depths=tuple(depths))
    source: dict[int, int] = {}  # block index in the new network → the trained block it copies
    old_start = new_start = 0
    for old_depth, new_depth in zip(old.depths, new.depths):
        source.update({new_start + j: old_start + j for j in range(min(old_depth, new_depth))})
        old_start += old_depth
        new_start += new_depth
    state = EmbeddingNet(new).state_dict()
    for key in state:
        if not key.startswith("stages."):
            state[key] = saved["model"][key]
            continue
        _, block, rest = key.split(".", 2)
        if int(block) in source:
            state[key] = saved["model"][f"stages.{source[int(block)]}.{rest}"]
        elif rest == "bn2.weight":
            state[key].zero_()
    return {**saved, "config": new.to_dict(), "model": state}


def set_dropout(model: EmbeddingNet, rate: float) -> None:
    """Set the head's dropout in the module and in the config saved with the weights. Dropout has no weights, so a
    run from trained weights may change it; inference never applies it."""
    model.config = replace(model.config, dropout=rate)
    for layer in model.head:
        if isinstance(layer, torch.nn.Dropout):
            layer.p = rate


def training_embedding(model: EmbeddingNet, x: torch.Tensor, mirror: bool) -> torch.Tensor:
    """The unit vectors the losses see, in float32: one pass, or with `mirror` the product's own embedding (the
    normalised sum of the crop's and its mirror image's), so training optimises what users get."""
    features = model.features(torch.cat([x, torch.flip(x, dims=[3])]) if mirror else x)
    emb = F.normalize(features.float(), dim=1)  # normalise and compute the losses in fp32
    return mirror_sum(emb) if mirror else emb


@torch.no_grad()
def update_ema(ema: EmbeddingNet, model: EmbeddingNet, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model, for weights and BatchNorm statistics alike."""
    for e, m in zip(ema.state_dict().values(), model.state_dict().values()):
        if e.is_floating_point():
            e.lerp_(m, 1.0 - decay)
        else:
            e.copy_(m)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.mirror_distill and args.init is None:
        raise SystemExit("--mirror-distill needs --init: the teacher is the weights the run starts from")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    train_set, val_set, teacher_mean = load_training_faces(args.cache, seed=0)
    print(f"train: {len(train_set.labels)} photos of {len(train_set.people)} people; "
          f"val: {len(val_set.labels)} photos of {len(val_set.people)} people", flush=True)

    blends = load_blends(args.mixes, train_set, teacher_mean) if args.mixes else None
    blend_total = len(blends["lam"]) if blends is not None else 0  # recorded in checkpoints for the model card
    if blends is not None:
        print(f"blends: {blend_total} from {args.mixes}", flush=True)
    config = EmbedderConfig(input_size=args.input_size)
    model = EmbeddingNet(replace(config, depths=args.depths) if args.depths else config)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sampler = PKSampler(train_set.labels, args.p, args.k, seed=args.seed, groups=family_groups(train_set),
                        relatives=args.relatives)
    gen = torch.Generator().manual_seed(args.seed)
    # the --init weights, read once: the starting point of a new run and, with --mirror-distill, its teacher
    initial = resize_input(torch.load(args.init, weights_only=False), args.input_size) if args.init else None
    step = 0
    ckpt: dict = {}
    elapsed = 0.0  # training seconds so far, carried across --resume for the time budget
    if args.resume and (args.out / "last.pt").exists():
        ckpt = torch.load(args.out / "last.pt", weights_only=False)
        model = from_saved(ckpt)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        opt.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
        elapsed = float(ckpt.get("elapsed", 0.0))
        sampler.rng.bit_generator.state = ckpt["sampler_rng"]
        gen.set_state(ckpt["torch_rng"])
        print(f"resumed at step {step}", flush=True)
    elif initial is not None:
        model = from_saved(set_depths(initial, args.depths) if args.depths else initial)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        print(f"initialised from {args.init}", flush=True)
    if args.dropout is not None:
        set_dropout(model, args.dropout)
    # channels_last is oneDNN's preferred layout for CPU convolutions (~15 % faster here); the weights saved are
    # ordinary tensors, so the shipped model does not depend on it.
    model = model.to(memory_format=torch.channels_last)
    # The weight average is what generalises (Polyak averaging): it smooths the last steps' noise on ~22k photos.
    ema = copy.deepcopy(model) if args.ema > 0 else None
    if ema is not None and args.resume and "ema" in ckpt:
        ema.load_state_dict(ckpt["ema"])
    # The mirror teacher: the starting weights, frozen, in eval mode, run as the product runs them (two passes).
    mirror_teacher = None
    if args.mirror_distill:
        mirror_teacher = from_saved(initial).eval().requires_grad_(False).to(memory_format=torch.channels_last)
    print(f"model: {count_parameters(model) / 1e6:.2f}M parameters, input {model.config.input_size}px, "
          f"{args.precision}", flush=True)

    # Recent batches' embeddings and labels (detached), newest last; not checkpointed: it refills in a few steps.
    memory = (torch.empty(0, model.config.dim), torch.empty(0, dtype=torch.long))
    # Every training person's running-mean centre (a unit vector; zeros until first seen); checkpointed.
    centres = None
    if args.centres:
        centres = ckpt.get("centres", torch.zeros(len(train_set.people), model.config.dim))
    log = open(args.out / "log.jsonl", "a")
    last_save = time.time()
    window: list[dict[str, float]] = []
    t0 = time.time()
    tick = time.time()
    finished = False
    while not finished:
        model.train()
        now = time.time()
        elapsed += now - tick
        tick = now
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, args, elapsed)
        idx = sampler.batch()
        x = torch.from_numpy(train_set.images[idx]).permute(0, 3, 1, 2).float().div_(255)
        teacher = torch.from_numpy(train_set.teacher[idx])
        has_teacher = torch.from_numpy(train_set.has_teacher[idx])
        if blends is not None:
            x_mix, t_mix = blend_batch(blends, train_set.images, args.mix_batch, sampler.rng)
            x = torch.cat([x, x_mix])
            teacher = torch.cat([teacher, t_mix])
            has_teacher = torch.cat([has_teacher, torch.ones(len(t_mix), dtype=torch.bool)])
        x = augment(x, model.config.input_size, gen, args.erase, args.lighting)
        x = x.contiguous(memory_format=torch.channels_last)
        labels = torch.from_numpy(train_set.labels[idx])
        mirror_target = None
        if mirror_teacher is not None:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                mirror_target = embed(mirror_teacher, x, mirror=True)

        def batch_loss() -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
            """This batch's total loss, its parts, and the real photos' embeddings, at the model's current weights
            (called twice per step with --sam: at the weights and at the perturbed weights)."""
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                emb = training_embedding(model, x, args.mirror_loss)
            real = emb[: len(idx)]  # the metric loss needs labels: blends have none
            if args.loss == "triplet":
                metric = triplet_loss(real, labels, args.margin, args.mining, memory if args.memory else None)
            else:
                metric = contrastive_loss(real, labels, args.margin)
            parts = {"metric": metric, "distill": distillation_loss(emb, teacher, has_teacher),
                     "relational": relational_loss(emb, teacher, has_teacher) if args.relational else torch.zeros(()),
                     "centre": centre_softmax_loss(real, labels, centres) if centres is not None else torch.zeros(()),
                     "mirror": (distillation_loss(emb, mirror_target, torch.ones(len(emb), dtype=torch.bool))
                                if mirror_target is not None else torch.zeros(()))}
            loss = (metric + args.distill * parts["distill"] + args.relational * parts["relational"]
                    + args.centres * parts["centre"] + args.mirror_distill * parts["mirror"])
            return loss, parts, real

        loss, parts, real = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.sam:
            sharpness_aware_gradients(model, args.sam, lambda: batch_loss()[0])
        opt.step()
        if args.memory:
            memory = (torch.cat([memory[0], real.detach()])[-args.memory:],
                      torch.cat([memory[1], labels])[-args.memory:])
        if centres is not None:  # after backward: the loss's graph holds the centres it compared against
            update_centres(centres, real, labels)
        if ema is not None:
            update_ema(ema, model, args.ema)
        step += 1
        finished = step >= args.steps or (args.minutes > 0 and elapsed >= args.minutes * 60)
        with torch.no_grad():
            spread = float(torch.pdist(real[:: args.k]).mean())  # collapse guard: → 0 if everything collapses
        window.append({"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in parts.items()},
                       "spread": spread})
        if step % 25 == 0:
            mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            rate = len(window) * len(idx) / (time.time() - t0)  # the window is shorter right after --resume
            t0 = time.time()
            window.clear()
            record = {"step": step, "lr": learning_rate(step, args, elapsed), "img_per_s": rate,
                      "minutes": elapsed / 60, **mean}
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}), flush=True)
            log.write(json.dumps(record) + "\n")
            log.flush()
        if step % args.eval_every == 0 or finished:
            report = verification_report(embed_array(ema or model, val_set.images), val_set.labels)
            print(json.dumps({"step": step, "val": report}), flush=True)
            log.write(json.dumps({"step": step, "val": report}) + "\n")
            log.flush()
        if time.time() - last_save > args.checkpoint_minutes * 60 or finished:
            save(args.out / "last.pt", model, opt, step, args, sampler, gen, teacher_mean, elapsed, ema, blend_total,
                 centres)
            last_save = time.time()
    print("done", flush=True)


if __name__ == "__main__":
    main()
