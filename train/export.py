"""Turn a training checkpoint into the shipped model: weights + a model card with the calibrated threshold.

    python -m train.export --checkpoint runs/emb1/last.pt

Calibration happens here, on the held-out validation people only (never LFW):
1. The triplet margin α fixes the geometry: training stops pushing once d(a, n) ≥ d(a, p) + α, so genuine pairs
   sit around their typical distance and impostors at least α further out. The starting threshold is therefore the
   mean genuine distance plus α/2 — the middle of the margin band.
2. The held-out people then give the whole ROC (distance → false accept rate, true accept rate), stored in the card.
   The product reads its threshold off that ROC for the gallery's size (`enroll.decision`), and the card's
   `threshold` is the distance at the default per-comparison false accept rate.
"""
from __future__ import annotations

import argparse
import io
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from embedder import int8
from embedder.api import EMBEDDER_CARD, EMBEDDER_WEIGHTS, product_precision, weights_digest
from embedder.model import EmbeddingNet, count_parameters, from_saved
from train.evaluate import embed_array, every_pair, roc, tar_at_far, verification_report
from train.face_data import FaceSet, load_training_faces
from train.losses import CENTRE_MARGIN, CENTRE_SCALE
from train.teacher_mixes import load_bank

DEFAULT_FAR = 1e-3
INT8_CALIBRATION_PHOTOS = 1024


def shipped_model(saved: dict, val_set: FaceSet) -> tuple[EmbeddingNet, str]:
    """The network a checkpoint (or shipped weights file) stands for, in eval mode, and which weights those are.

    A run with --ema holds two candidates: its last weights and their average. The average usually generalises
    better, but it remembers the run's start (0.999^2,000 ≈ 14 % of it after 2,000 steps), which hurts when the
    start was much worse, e.g. a head resized for a larger input. So the held-out people decide: the candidate
    with the higher TAR at the card's false accept rate ships ("average" on a tie)."""
    if "ema" not in saved:
        return from_saved(saved).eval(), "last"
    candidates = {name: from_saved({**saved, "model": saved[key]}).eval()
                  for name, key in (("average", "ema"), ("last", "model"))}
    def tar(model: EmbeddingNet) -> float:
        dist, same, _ = every_pair(embed_array(model, val_set.images), val_set.labels)
        return tar_at_far(dist, same, DEFAULT_FAR)[0]

    scores = {name: tar(model) for name, model in candidates.items()}
    best = "last" if scores["last"] > scores["average"] else "average"
    return candidates[best], best


def calibrate(model: torch.nn.Module, val_set: FaceSet, margin: float) -> dict:
    """Threshold from the margin, then the ROC and metrics on the validation people."""
    emb = embed_array(model, val_set.images)
    # every pair of held-out photos (3.3 M, ~3.28 M of them impostors), none sampled: the ROC's low-FAR end that
    # large galleries read needs every impostor there is
    dist, same, _ = every_pair(emb, val_set.labels)
    from_margin = float(dist[same].mean() + margin / 2)
    curve = roc(dist, same)
    tar, threshold = tar_at_far(dist, same, DEFAULT_FAR)
    report = verification_report(emb, val_set.labels)
    return {
        "threshold": round(threshold, 4),
        "threshold_far": DEFAULT_FAR,
        "threshold_tar": round(tar, 4),
        "threshold_from_margin": round(from_margin, 4),
        "threshold_from_margin_far": float(np.mean(dist[~same] < from_margin)),
        "threshold_from_margin_tar": float(np.mean(dist[same] < from_margin)),
        "roc": curve,
        "validation": {
            "people": len(val_set.people), "photos": int(len(val_set.labels)), **report,
        },
    }


def int8_ranges(model: EmbeddingNet, train_set: FaceSet, scheme: int8.Scheme = int8.PRODUCT) -> dict[str, torch.Tensor]:
    """The int8 activation ranges of `model`, measured on 1,024 training photos (a fixed draw) and their mirrors:
    never the held-out people, whom the card's calibration and the benchmarks use."""
    rows = np.sort(np.random.default_rng(0).choice(len(train_set.labels), replace=False,
                                                   size=min(INT8_CALIBRATION_PHOTOS, len(train_set.labels))))
    return int8.calibrate(model, train_set.images[rows], scheme)


def product_model(model: EmbeddingNet, weights: Path, train_set: FaceSet) -> tuple[torch.nn.Module, dict]:
    """Measure the int8 ranges of the shipped weights (`int8_ranges`), save them beside the weights, and return
    the network the product runs on this machine (`embedder.api.product_precision`) with the card's note on it:
    the card's threshold and ROC must describe the vectors users get."""
    ranges = int8_ranges(model, train_set)
    torch.save({"model_id": weights_digest(weights), "ranges": ranges}, int8.ranges_path(weights))
    precision = product_precision()
    note = {"precision": f"calibrated on {precision} vectors, as the product computes them here (int8 where torch "
                         f"has the x86 int8 kernels, its activation ranges from {INT8_CALIBRATION_PHOTOS:,} training "
                         f"photos and their mirrors; float32 elsewhere)"}
    return (int8.quantize(model, ranges) if precision == "int8" else model), note


def training_command(train_args: dict, module: str = "train.train_embedder") -> str:
    """The full training command line, every option spelled out, rebuilt from the checkpoint's arguments."""
    parts = [f"python -m {module}"]
    for key, value in train_args.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts += [flag] if value else []
        elif value is not None:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


def blend_count(saved: dict, folder: str) -> str:
    """How many blends the run trained with: the count its checkpoint recorded (the bank is read when the run starts
    or resumes, and may have grown since), else what the bank holds now (it lives in cache/, outside git), else
    'a bank of' when it is gone."""
    if "blends" in saved:
        return f"{int(saved['blends']):,}"
    try:
        return f"{len(load_bank(Path(folder))['lam']):,}"
    except (OSError, SystemExit):
        return "a bank of"


def weights_note(which: str, soup: list[dict]) -> str:
    """What the shipped weights are, for the card: a run's last weights or its average, or (from `train.soup`)
    the mean of several runs' last weights or of their averages."""
    if soup:
        return {"last": f"the mean of {len(soup)} runs' last weights",
                "average": f"the mean of {len(soup)} runs' weight averages"}[which]
    return {"last": "the run's last weights", "average": "the run's weight average"}[which]


def images_per_step(train_args: dict) -> int:
    """Real photos per training step: P people × K photos (blends not counted)."""
    return int(train_args.get("p", 32)) * int(train_args.get("k", 4))


def exported_card(weights: Path) -> dict | None:
    """The model card written with these exported weights, or None (a checkpoint, or a card for other weights)."""
    card = weights.with_suffix(".json")
    if not (weights.is_file() and card.is_file()):
        return None
    try:
        previous = json.loads(card.read_text())
    except (OSError, ValueError):
        return None
    return previous if previous.get("model_id") == weights_digest(weights) else None


def earlier_runs(train_args: dict) -> list[dict]:
    """The runs this one continued from (`--init`), oldest first, so the card stays a complete recipe.

    Exported weights are described by the card beside them (same stem, `.json`, its `model_id` the weights'
    digest); it is read before this export may overwrite it. A run started from scratch has an empty lineage.
    """
    init = train_args.get("init")
    if not init:
        return []
    previous = exported_card(Path(init))
    if previous is not None:
        keys = ("model_id", "train_command", "export_command", "steps", "images_seen")
        return [*previous.get("initialised_from", []), {k: previous.get(k) for k in keys}]
    saved = torch.load(init, weights_only=False, map_location="cpu") if Path(init).is_file() else {}
    if "args" not in saved:
        return [{"weights": str(init), "note": "neither exported weights with their card nor a training checkpoint"}]
    # A run continued from another run's checkpoint (never exported): that run's record, and its own lineage.
    return [*earlier_runs(saved["args"]),
            {"checkpoint": str(init), "train_command": training_command(saved["args"]), "steps": int(saved["step"]),
             "images_seen": int(saved["step"]) * images_per_step(saved["args"])}]


def this_command(argv: list[str] | None) -> str:
    """How this export was invoked, for the card."""
    return "python -m train.export " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))


def recalibrate(weights: Path, card_path: Path, cache: Path, argv: list[str] | None) -> None:
    """Redo the calibration of exported weights in place: same weights, same model id, so galleries enrolled with
    them stay valid; only the threshold, ROC and validation metrics of the card are replaced."""
    card = json.loads(card_path.read_text())
    if card.get("model_id") != weights_digest(weights):
        raise SystemExit(f"error: {card_path} is not the card of {weights} (model ids differ)")
    train_set, val_set, _ = load_training_faces(cache, seed=0)
    model = from_saved(torch.load(weights, map_location="cpu", weights_only=True)).eval()
    model, precision = product_model(model, weights, train_set)
    card.update(calibrate(model, val_set, float(card.get("margin", 0.3))))
    card.update(precision)
    card["recalibrate_command"] = this_command(argv)
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    print(json.dumps({k: card[k] for k in ("model_id", "threshold", "threshold_from_margin", "threshold_tar")}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path)
    source.add_argument("--recalibrate", action="store_true",
                        help="keep the exported weights (and so every enrolled vector) and redo only the card's "
                             "calibration, e.g. after the calibration itself changed")
    parser.add_argument("--cache", type=Path, default=Path("cache/crops"))
    parser.add_argument("--weights", type=Path, default=EMBEDDER_WEIGHTS)
    parser.add_argument("--card", type=Path, default=EMBEDDER_CARD)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    if args.recalibrate:
        recalibrate(args.weights, args.card, args.cache, argv)
        return

    ckpt = torch.load(args.checkpoint, weights_only=False, map_location="cpu")
    lineage = earlier_runs(ckpt.get("args", {}))
    train_set, val_set, _ = load_training_faces(args.cache, seed=0)
    model, which = shipped_model(ckpt, val_set)
    config = model.config
    train_args = ckpt.get("args", {})
    margin = float(train_args.get("margin", 0.3))

    # Ship float16 weights (half the size); they are widened to float32 on load (and quantised from there).
    # Calibrate the widened copy so the card describes exactly what users run.
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"config": config.to_dict(), "model": half}, buffer)
    args.weights.parent.mkdir(parents=True, exist_ok=True)
    args.weights.write_bytes(buffer.getvalue())
    model.load_state_dict({k: v.float() for k, v in half.items()})

    product, precision = product_model(model, args.weights, train_set)
    calibration = calibrate(product, val_set, margin)
    steps = int(ckpt["step"])
    soup = ckpt.get("soup_of", [])
    soup_command = ckpt.get("soup_command", "python -m train.soup")
    card = {
        "name": "oneshot-embedder",
        "model_id": weights_digest(args.weights),
        "dim": config.dim,
        "input_size": 112,
        "network": f"ResNet-style, widths {list(config.widths)}, depths {list(config.depths)}, "
                   f"{config.input_size}px internal, flatten-linear head ending in BatchNorm, "
                   f"{count_parameters(model) / 1e6:.2f}M parameters",
        "loss": train_args.get("loss", "triplet"),
        "mining": train_args.get("mining", "hard"),
        "margin": margin,
        **({"relatives": f"{float(train_args['relatives']):.0%} of each batch's people drawn as whole FIW families"}
           if train_args.get("relatives") else {}),
        "distillation": {
            "weight": train_args.get("distill", 0.0),
            "teacher": "dlib ResNet 128-d vectors (face_recognition_models, public domain) of our own training "
                       "photos, centred on the training people's mean and L2-normalised",
            **({"blends": f"plus dlib's vectors of {blend_count(ckpt, train_args['mixes'])} blends of two training "
                          f"people's faces (train.teacher_mixes), {train_args['mix_batch']} per step, "
                          f"distillation only"}
               if train_args.get("mixes") else {}),
            **({"relational_weight": float(train_args["relational"])} if train_args.get("relational") else {}),
            **({"mirror_self_distillation": f"weight {float(train_args['mirror_distill'])}: each single pass pulled "
                                            f"towards the starting weights' (frozen) mirror-averaged embedding of "
                                            f"the same augmented crop"} if train_args.get("mirror_distill") else {}),
        },
        **({"cross_batch_memory": f"the {train_args['memory']} most recent embeddings as extra negatives"}
           if train_args.get("memory") else {}),
        **({"centre_softmax": f"weight {float(train_args['centres'])}: an additive-margin softmax (scale "
                              f"{CENTRE_SCALE:g}, margin {CENTRE_MARGIN:g}) of each photo against every training person's running-mean centre, beside "
                              f"the triplet loss"} if train_args.get("centres") else {}),
        "regularisation": {"erase": float(train_args.get("erase", 0.0)),
                           "weight_average_decay": float(train_args.get("ema", 0.0)),
                           "head_dropout": config.dropout,
                           **({"lighting": "exposure, colour cast, side light and sensor noise varied"}
                              if train_args.get("lighting") else {}),
                           **({"sharpness_aware_rho": float(train_args["sam"])} if train_args.get("sam") else {})},
        **({"mirror_loss": "every loss computed on the normalised sum of each crop's and its mirror image's "
                           "embeddings, as the product embeds"} if train_args.get("mirror_loss") else {}),
        "weights": weights_note(which, soup) + " (the better of the two on the held-out people)" * ("ema" in ckpt),
        **({"weight_soup": {"runs": soup, "command": soup_command}} if soup else {}),
        "data": "CelebA (2,970 people) + FIW (2,378 people), LFW-disjoint; aligned with the MTCNN teacher's "
                "landmarks onto the 112x112 template; 10 % of people (by CelebA identity / FIW family) held out "
                "for validation and calibration",
        "steps": steps,
        "images_seen": sum(r["images_seen"] for r in soup) if soup else steps * images_per_step(train_args),
        "train_command": "; ".join([*(r["train_command"] for r in soup), soup_command]) if soup
                         else training_command(train_args),
        "initialised_from": lineage,
        "export_command": this_command(argv),
        "distance": "Euclidean between unit vectors (0..2); accept when distance < threshold",
        **precision,
        **calibration,
    }
    args.card.write_text(json.dumps(card, indent=1) + "\n")
    summary = {k: card[k] for k in ("model_id", "threshold", "threshold_from_margin", "threshold_tar")}
    print(json.dumps({**summary, "validation": card["validation"]}, indent=1))


if __name__ == "__main__":
    main()
