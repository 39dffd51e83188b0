"""Judge an embedder on the held-out people, then ship the winner: weights + a model card with the calibrated ROC.

    python -m train.export                                 # judge the plain port (and the mirror option), ship it
    python -m train.export --candidate runs/a/last.pt --candidate runs/b/last.pt   # the port vs fine-tuned runs
    python -m train.export --candidate runs/a/last.pt --mix 0.3 --mix 0.5           # ... and their mixes with it

1. Judging: every pair of held-out photos (10 % of the training groups, never trained on, never LFW) under a
   paired bootstrap over the held-out groups (`train.evaluate.paired_bootstrap`). With `--mix A`, each candidate
   is also judged as the weight-space mix (1 - A)·port + A·candidate (WiSE-FT, Wortsman et al. 2022: fine-tuning
   a strong start can trade its robustness away; a mix keeps much of both). A fine-tuned candidate qualifies when
   it beats the plain port there, P(better TAR at FAR 0.1 %) ≥ 0.9, and loses at most 1 point of rank-1 and of
   DIR at FPIR 1 % on celeba-wild's validation people (real photos with background, one-shot open set, averaged
   over the three ways of making every third person a stranger): a guard against a gain that holds only for the
   training sets' kind of photo, at the strict thresholds the product uses. Of the qualifying candidates, the one
   with the highest held-out TAR at FAR 0.1 % ships; with none, the plain port ships. The comparison is written
   to benchmarks/results/compare_heldout.json.
2. Calibration of the shipped vectors on the same held-out people:
   - the threshold derived from the triplet margin α: training stops pushing once d(a, n) ≥ d(a, p) + α, so the
     middle of the margin band, mean genuine distance + α/2, is where a decision belongs (`threshold_from_margin`);
   - the ROC (distance → false accept rate with its 95 % upper bound, true accept rate) that the product reads
     τ(N) off for a gallery of N people (`enroll.decision`); the card's `threshold` is the distance at the default
     per-comparison FAR 0.1 %, and never above the margin's threshold.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from embedder.api import EMBEDDER_CARD, EMBEDDER_WEIGHTS, weights_digest
from embedder.layers import count_parameters
from embedder.model import FaceEmbeddingNet
from train.convert_openvino import EMBEDDER, port, save, source_note
from train.data_paths import REPO_ROOT, teachers_root
from train.evaluate import (PairTable, embed_array, every_pair, open_set, paired_bootstrap, roc, tar_at_far,
                            verification_report)
from train.face_data import FaceSet, load_training_faces

DEFAULT_FAR = 1e-3
SHIP_PROBABILITY = 0.9
MAX_REAL_PHOTO_LOSS = 0.01   # rank-1 and DIR at FPIR 1 %, each
COMPARISON = REPO_ROOT / "benchmarks" / "results" / "compare_heldout.json"
PORT_MARGIN = 0.3     # the margin the fine-tuning recipe uses: the port's card derives its band from the same α


def load_candidate(path: Path) -> tuple[FaceEmbeddingNet, dict]:
    saved = torch.load(path, map_location="cpu", weights_only=False)
    net = FaceEmbeddingNet(**saved.get("config", {}))
    net.load_state_dict({k: v.float() for k, v in saved["model"].items()})
    return net.eval(), saved


def mixed(port_net: FaceEmbeddingNet, candidate: FaceEmbeddingNet, alpha: float) -> FaceEmbeddingNet:
    """A new network with weights (1 - alpha)·port + alpha·candidate (the candidate's architecture: a candidate
    with a new head cannot be mixed)."""
    if alpha < 0 or alpha > 1:
        raise ValueError(f"a mix must lie in [0, 1], not {alpha}")
    ours, theirs = port_net.state_dict(), candidate.state_dict()
    if ours.keys() != theirs.keys():
        raise ValueError("only candidates with the port's architecture (no --head-dim) can be mixed with it")
    net = FaceEmbeddingNet(head_dim=candidate.head_dim)
    net.load_state_dict({k: torch.lerp(ours[k].float(), theirs[k].float(), alpha) if theirs[k].is_floating_point()
                         else theirs[k] for k in theirs})
    return net.eval()


def as_shipped(net: FaceEmbeddingNet) -> FaceEmbeddingNet:
    """The network after the float16 round trip of the shipped file, so the card describes what users run."""
    net.load_state_dict({k: v.half().float() for k, v in net.state_dict().items()})
    return net.eval()


def judge(nets: dict[str, FaceEmbeddingNet], val: FaceSet, mirror_of: str) -> dict:
    """Paired bootstrap of every network against the port, plus the port with mirror averaging."""
    tables = {name: PairTable(embed_array(net, val.images), val.labels, val.groups) for name, net in nets.items()}
    tables[f"{mirror_of}+mirror"] = PairTable(embed_array(nets[mirror_of], val.images, mirror=True),
                                              val.labels, val.groups)
    return paired_bootstrap(tables, baseline="port")


def real_photo_check(nets: dict[str, FaceEmbeddingNet], cache: Path) -> dict:
    """Each network on celeba-wild's validation people (real photos, in no training folder), one-shot open set
    as benchmarks/real_photos.py runs it, averaged over the three ways of making every third person a stranger
    (one split alone moves by a point with a handful of probes): reported beside the verdict so a candidate that
    wins on held-out crops but loses on real photos is seen (crops from `train.crops`)."""
    meta_path = cache / "celeba-wild.json"
    if not meta_path.exists():
        return {}
    meta = json.loads(meta_path.read_text())
    rows = [i for i, (s, t) in enumerate(zip(meta["source"], meta["in_training_folder"])) if s and not t]
    identities = [meta["identities"][i] for i in rows]
    ordered = sorted(set(identities), key=lambda p: int(p.split(":")[1]))
    splits = [{p for i, p in enumerate(ordered) if i % 3 == r} for r in range(3)]
    images = np.load(cache / "celeba-wild.npy", mmap_mode="r")[rows]
    out = {}
    for name, net in nets.items():
        emb = embed_array(net, images)
        runs = [open_set(emb, identities, strangers) for strangers in splits]
        out[name] = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
    return out


def calibrate(emb: np.ndarray, val: FaceSet, margin: float) -> dict:
    """Margin threshold, the ROC and metrics on the held-out people (every pair, none sampled)."""
    dist, same, _ = every_pair(emb, val.labels)
    from_margin = float(dist[same].mean() + margin / 2)
    tar, threshold = tar_at_far(dist, same, DEFAULT_FAR)
    threshold = min(threshold, from_margin)
    return {
        "threshold": round(threshold, 4),
        "threshold_far": float(np.mean(dist[~same] < threshold)),
        "threshold_tar": round(float(np.mean(dist[same] < threshold)), 4),
        "threshold_from_margin": round(from_margin, 4),
        "threshold_from_margin_far": float(np.mean(dist[~same] < from_margin)),
        "threshold_from_margin_tar": float(np.mean(dist[same] < from_margin)),
        "roc": roc(dist, same),
        "validation": {"people": len(val.people), "photos": int(len(val.labels)),
                       **verification_report(emb, val.labels)},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidate", type=Path, action="append", default=[],
                        help="a train.finetune checkpoint to judge against the port (repeatable)")
    parser.add_argument("--mix", type=float, action="append", default=[], metavar="A",
                        help="also judge each candidate mixed with the port: (1 - A)·port + A·candidate (repeatable)")
    parser.add_argument("--cache", type=Path, default=Path("cache/crops"))
    parser.add_argument("--weights", type=Path, default=EMBEDDER_WEIGHTS)
    parser.add_argument("--card", type=Path, default=EMBEDDER_CARD)
    parser.add_argument("--comparison", type=Path, default=COMPARISON)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    teachers = teachers_root()
    _, val = load_training_faces(args.cache)
    nets = {"port": as_shipped(port(EMBEDDER, teachers))}  # type: ignore[arg-type]
    checkpoints: dict[str, dict] = {}
    for path in args.candidate:
        candidate, saved = load_candidate(path)
        checkpoints[str(path)] = saved
        nets[str(path)] = as_shipped(candidate)
        for alpha in args.mix if candidate.head_dim == 0 else []:   # a new head has nothing to mix with
            name = f"{path}@{alpha:g}"
            checkpoints[name] = {**saved, "args": {**saved.get("args", {}), "mix": alpha}}
            nets[name] = as_shipped(mixed(nets["port"], candidate, alpha))
    verdict = judge(nets, val, mirror_of="port")
    verdict["real_photos_validation"] = real_photo_check(nets, args.cache)
    winner = choose(verdict, [name for name in nets if name != "port"])
    args.comparison.write_text(json.dumps({"command": this_command(argv), "held_out_people": len(val.people),
                                           "held_out_photos": int(len(val.labels)), "ships": winner,
                                           "rule": f"a fine-tuned candidate qualifies when P(better TAR@FAR1e-3) >= "
                                                   f"{SHIP_PROBABILITY} on the held-out people and its rank-1 and "
                                                   f"DIR@FPIR1% on celeba-wild's validation people (mean of three "
                                                   f"stranger splits) are each at most {MAX_REAL_PHOTO_LOSS:.0%} "
                                                   f"below the port's; the qualifying one with the highest "
                                                   f"held-out TAR@FAR1e-3 ships",
                                           **verdict}, indent=1) + "\n")
    net = nets[winner]
    saved = checkpoints.get(winner, {})
    train_args = saved.get("args", {})
    margin = float(train_args.get("margin", PORT_MARGIN))
    base = source_note(EMBEDDER, teachers)  # type: ignore[arg-type]
    save(net, args.weights, base, config={"head_dim": net.head_dim})
    model_id = weights_digest(args.weights)
    card = {
        "name": "oneshot-embedder",
        "model_id": model_id,
        "dim": net.dim,
        "input_size": 128,
        "base_network": {**base, "notice": "Copyright (C) Intel Corporation, Apache License 2.0: "
                                           "embedder/weights/LICENSE and NOTICE"},
        "network": f"MobileNetV2-style inverted residual blocks with squeeze-excitation and PReLU, global depthwise "
                   f"head, {count_parameters(net) / 1e6:.2f}M parameters",
        "changes": changes(winner, train_args),
        "loss": train_args.get("loss"),
        "mining": train_args.get("mining"),
        "margin": margin,
        "data": "held-out people for judging and calibration: 10 % of the training groups (CelebA identities, "
                "whole FIW families), aligned by the product's own face finder; LFW never used",
        "steps": int(saved.get("step", 0)),
        "train_command": training_command(train_args) if train_args else None,
        "export_command": this_command(argv),
        "comparison": {"held_out_vs_port": verdict.get(winner, {}).get("vs_port"),
                       "real_photos_validation": verdict["real_photos_validation"]},
        "distance": "Euclidean between unit vectors (0..2); accept when distance < threshold",
        **calibrate(embed_array(net, val.images), val, margin),
    }
    args.card.write_text(json.dumps(card, indent=1) + "\n")
    print(json.dumps({k: card[k] for k in ("model_id", "threshold", "threshold_from_margin", "threshold_tar",
                                            "changes")} | {"verdict": verdict}, indent=1))


def choose(verdict: dict, candidates: list[str]) -> str:
    """The shipping rule of the module docstring: "port" or the winning candidate's path."""
    real = verdict.get("real_photos_validation") or {}
    def holds_on_real_photos(c: str) -> bool:
        return not real or all(real[c][key] >= real["port"][key] - MAX_REAL_PHOTO_LOSS
                               for key in ("rank1", "dir@fpir0.01"))

    qualified = [c for c in candidates
                 if verdict[c]["vs_port"]["tar@far1e-3"]["p_better"] >= SHIP_PROBABILITY and holds_on_real_photos(c)]
    return max(qualified, key=lambda c: verdict[c]["metrics"]["tar@far1e-3"], default="port")


def changes(winner: str, train_args: dict) -> str:
    if winner == "port":
        return ("none: the Open Model Zoo weights converted to torch as they are (float16, as distributed); no "
                "fine-tuned candidate beat them on the held-out people")
    head = f", plus a new {train_args['head_dim']}-d linear head" if train_args.get("head_dim") else ""
    mix = train_args.get("mix")
    lead = f"a weight-space mix, {1 - mix:g} x the converted weights + {mix:g} x these fine-tuned ones: " if mix else ""
    real = train_args.get("real_share") or 0
    real_photos = (f"; {real:.0%} of each batch's people drawn from those with whole photos with background "
                   "(celeba-wild's training identities), half of their photos those") if real else ""
    return (f"{lead}the last {train_args['unfreeze']} stage(s){head} fine-tuned with the {train_args['loss']} loss "
            f"(margin {train_args['margin']}, {train_args.get('mining', 'hard')} mining, P={train_args['p']} x "
            f"K={train_args['k']}{real_photos}) for {train_args['steps']} steps at learning rate {train_args['lr']}; "
            f"every other weight as converted")


def training_command(train_args: dict) -> str:
    flags = [f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in train_args.items()
             if k not in ("resume", "threads", "minutes", "mix") and v is not None and v is not False]
    return "python -m train.finetune " + " ".join(flags)


def this_command(argv: list[str] | None) -> str:
    return "python -m train.export " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
