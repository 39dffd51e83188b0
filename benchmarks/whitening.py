"""Would a linear map fitted on the training people, applied after the network, separate new people better?

    python benchmarks/whitening.py [--weights PATH]     # → benchmarks/results/whitening.json (needs cache/crops)

Why: within-class whitening (WCCN) and LDA are classic, free improvements for face and speaker embeddings trained
with softmax losses: they shrink the directions in which one person's photos vary and could be folded into the
head's last linear layer at no run-time cost. Here the embedder is trained with a triplet loss directly on the
distance the product thresholds, and it fits its training people far better than new ones (`fit_gap.py`), so
the training people's within-class scatter may not describe new people's. This measures it: the map is fitted
on the vectors of 8,000 training photos (the product's vectors, flip-averaged), and every pair of the held-out
people's photos is scored before and after, at the false accept rates the product operates at. LFW is not touched.
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
from embedder.api import EMBEDDER_WEIGHTS  # noqa: E402
from train.evaluate import embed_array, every_pair, tar_at_far  # noqa: E402
from train.export import shipped_model  # noqa: E402
from train.face_data import load_training_faces  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "whitening.json"


def within_class_scatter(emb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The pooled covariance of each person's vectors around that person's mean (people with ≥ 2 photos)."""
    scatter = np.zeros((emb.shape[1], emb.shape[1]))
    dof = 0
    for person in np.unique(labels):
        rows = emb[labels == person]
        if len(rows) >= 2:
            centred = rows - rows.mean(axis=0)
            scatter += centred.T @ centred
            dof += len(rows) - 1
    return scatter / max(dof, 1)


def inverse_sqrt(matrix: np.ndarray, shrink: float) -> np.ndarray:
    """(M + shrink · mean eigenvalue · I)^(-1/2): shrinkage keeps poorly estimated directions from exploding."""
    dim = len(matrix)
    values, vectors = np.linalg.eigh(matrix + shrink * np.trace(matrix) / dim * np.eye(dim))
    return vectors @ np.diag(values ** -0.5) @ vectors.T


def scores(emb: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """TAR at FAR 0.1 % and 0.01 % over every pair of held-out photos, after re-normalising the vectors."""
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    dist, same, _ = every_pair(emb.astype(np.float32), labels)
    return {"tar@far1e-3": tar_at_far(dist, same, 1e-3)[0], "tar@far1e-4": tar_at_far(dist, same, 1e-4)[0]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=EMBEDDER_WEIGHTS)
    p.add_argument("--cache", type=Path, default=ROOT / "cache" / "crops")
    p.add_argument("--photos", type=int, default=8000, help="training photos the maps are fitted on")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    train, val, _ = load_training_faces(a.cache)
    model, which = shipped_model(torch.load(a.weights, map_location="cpu", weights_only=False), val)
    held_out = embed_array(model, val.images)
    rows = np.sort(np.random.default_rng(0).choice(len(train.labels), size=a.photos, replace=False))
    fitted = embed_array(model, train.images[rows])
    labels = train.labels[rows]

    mean = fitted.mean(axis=0)
    within = within_class_scatter(fitted, labels)
    results = {"as shipped": scores(held_out, val.labels), "centred": scores(held_out - mean, val.labels)}
    for shrink in (0.0, 0.1, 0.3, 1.0):
        results[f"within-class whitening, shrinkage {shrink}"] = \
            scores((held_out - mean) @ inverse_sqrt(within, shrink), val.labels)
    # LDA: whiten the within-class scatter, then keep the directions along which the people's means spread most
    whiten = inverse_sqrt(within, 0.1)
    between = whiten.T @ (np.cov(fitted.T) - within) @ whiten
    _, directions = np.linalg.eigh(between)
    for keep in (64, 96):
        results[f"LDA, {keep} dimensions"] = scores((held_out - mean) @ whiten @ directions[:, -keep:], val.labels)

    report = {"machine": cpu_name(), "weights": str(a.weights), "which": which,
              "fitted_on": {"photos": a.photos, "people": int(len(np.unique(labels)))},
              "held_out": {"people": len(val.people), "photos": int(len(val.labels))}, "results": results}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1) + "\n")
    for name, m in results.items():
        print(f"{name}: TAR@FAR0.1% {m['tar@far1e-3']:.1%}, TAR@FAR0.01% {m['tar@far1e-4']:.1%}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
