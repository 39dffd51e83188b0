"""How far the embedder is from what its data allows: training people vs held-out people vs the dlib teacher.

    python benchmarks/fit_gap.py [--weights PATH]      # → benchmarks/results/fit_gap.json (needs cache/crops)

`--weights` takes shipped weights or a training checkpoint (its weight average when the run kept one).

Why: more minutes on the same ~22k photos only help while the model underfits. This measures, in one run,
the verification report (`train.evaluate.verification_report`, no augmentation, flip-averaged) on the held-out
people and on the same number of *training* people, the distillation error (squared distance to dlib's centred
vector, no flip) on both, the held-out report once more without the flip (what the mirror, which doubles the
embedder's run time, buys) and once in int8 (ranges measured as `train.export` measures them), and
dlib's own vectors on the held-out people — the ceiling distillation aims at. For the student and for dlib it
also counts how often a *relative* (another member of the same held-out FIW family) passes the distance at which
0.1 % of random impostors pass: siblings and parents are the impostors a door meets that look most alike.
A wide train/held-out gap with a flat held-out curve means the next gains come from data or regularisation,
not from longer runs. LFW is not touched.
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
from embedder import int8  # noqa: E402
from embedder.api import EMBEDDER_WEIGHTS  # noqa: E402
from train.evaluate import embed_array, verification_report  # noqa: E402
from train.export import int8_ranges, shipped_model  # noqa: E402
from train.face_data import FaceSet, family_groups, load_training_faces  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "fit_gap.json"


def distillation_error(emb: np.ndarray, faces: FaceSet, idx: np.ndarray) -> float:
    """Mean squared distance between the student's unflipped vectors `emb` (rows = `idx`) and the teacher's."""
    ok = faces.has_teacher[idx]
    return float(((emb[ok] - faces.teacher[idx][ok]) ** 2).sum(1).mean())


def relatives_accepted(emb: np.ndarray, labels: np.ndarray, family: np.ndarray, threshold: float) -> dict:
    """Pairs of photos of two different people of one family (`family`: person → family number, from
    `family_groups`), and the share of them closer than `threshold` (a relative accepted as the other)."""
    photo_family = family[labels]
    accepted, pairs = 0, 0
    for f in np.unique(photo_family):
        rows = np.flatnonzero(photo_family == f)
        d = np.sqrt(np.clip(2.0 - 2.0 * emb[rows] @ emb[rows].T, 0.0, None))
        upper = np.triu(labels[rows][:, None] != labels[rows][None, :], k=1)
        pairs += int(upper.sum())
        accepted += int((d[upper] < threshold).sum())
    return {"pairs": pairs, "threshold": threshold, "accepted": accepted / max(pairs, 1)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=EMBEDDER_WEIGHTS)
    p.add_argument("--cache", type=Path, default=ROOT / "cache" / "crops")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    train, val, _ = load_training_faces(a.cache)
    model, _ = shipped_model(torch.load(a.weights, map_location="cpu", weights_only=False), val)

    rng = np.random.default_rng(0)
    people = rng.choice(np.unique(train.labels), size=len(val.people), replace=False)
    train_idx = np.flatnonzero(np.isin(train.labels, people))
    val_idx = np.arange(len(val.labels))
    teacher = val.teacher[val.has_teacher]
    train_plain = embed_array(model, train.images[train_idx], flip=False)
    val_plain = embed_array(model, val.images, flip=False)
    val_emb = embed_array(model, val.images)
    result = {
        "machine": {"cpu": cpu_name(), "threads": a.threads},
        "weights": str(a.weights.relative_to(ROOT) if a.weights.is_relative_to(ROOT) else a.weights),
        "training_people": {
            "people": len(people), "photos": len(train_idx),
            **verification_report(embed_array(model, train.images[train_idx]), train.labels[train_idx]),
            "distillation_error": distillation_error(train_plain, train, train_idx),
        },
        "held_out_people": {
            "people": len(val.people), "photos": len(val_idx),
            **verification_report(val_emb, val.labels),
            "distillation_error": distillation_error(val_plain, val, val_idx),
        },
        "held_out_people_no_flip": verification_report(val_plain, val.labels),
        "held_out_people_int8": verification_report(
            embed_array(int8.quantize(model, int8_ranges(model, train)), val.images), val.labels),
        "dlib_teacher_on_held_out_people": verification_report(teacher, val.labels[val.has_teacher]),
    }
    family = family_groups(val)
    result["held_out_relatives"] = relatives_accepted(
        val_emb, val.labels, family, result["held_out_people"]["threshold@far1e-3"])
    result["dlib_teacher_on_held_out_relatives"] = relatives_accepted(
        teacher, val.labels[val.has_teacher], family, result["dlib_teacher_on_held_out_people"]["threshold@far1e-3"])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    for key in ("training_people", "held_out_people", "held_out_people_no_flip", "held_out_people_int8",
                "dlib_teacher_on_held_out_people"):
        r = result[key]
        extra = f", distillation error {r['distillation_error']:.3f}" if "distillation_error" in r else ""
        print(f"{key}: accuracy {r['accuracy']:.2%}, TAR@FAR0.1% {r['tar@far1e-3']:.1%}{extra}")
    for key in ("held_out_relatives", "dlib_teacher_on_held_out_relatives"):
        r = result[key]
        print(f"{key}: {r['accepted']:.1%} of {r['pairs']} pairs of relatives pass the FAR-0.1 % distance "
              f"{r['threshold']:.3f}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
