"""Metric-learning losses on L2-normalised embeddings: triplet (batch-hard / semi-hard) and contrastive.

All work on Euclidean distances between unit vectors (0…2), the same distance the product thresholds.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_distances(emb: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between every two unit vectors of the batch; the clamp keeps the sqrt's gradient
    finite on the diagonal."""
    sim = emb @ emb.t()
    return (2.0 - 2.0 * sim).clamp_min(1e-12).sqrt()


def triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float, mining: str = "hard") -> torch.Tensor:
    """Triplet loss max(0, d(a,p) − d(a,n) + margin) over the batch, anchors = every sample.

    `hard`: for each anchor the farthest positive and the nearest negative in the batch (Hermans et al. 2017).
    `semihard`: for each (anchor, positive) pair the nearest negative that is still farther than the positive
    (FaceNet, Schroff et al. 2015), falling back to the hardest negative when none is.

    """
    dist = pairwise_distances(emb)
    same = labels[:, None] == labels[None, :]
    pos_mask = same & ~torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    neg_mask = ~same
    big = 4.0
    if mining == "hard":
        hardest_pos = (dist * pos_mask).max(dim=1).values
        hardest_neg = (dist + big * (~neg_mask)).min(dim=1).values
        valid = pos_mask.any(dim=1) & neg_mask.any(dim=1)
        return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()
    if mining == "semihard":
        a_idx, p_idx = pos_mask.nonzero(as_tuple=True)
        d_ap = dist[a_idx, p_idx]
        d_an = dist[a_idx]                                    # (pairs, batch)
        negs = neg_mask[a_idx]
        semi = negs & (d_an > d_ap[:, None])
        semi_neg = torch.where(semi, d_an, torch.full_like(d_an, big)).min(dim=1).values
        hard_neg = torch.where(negs, d_an, torch.full_like(d_an, big)).min(dim=1).values
        d_neg = torch.where(semi.any(dim=1), semi_neg, hard_neg)
        return F.relu(d_ap - d_neg + margin).mean()
    raise ValueError(f"unknown mining {mining!r}")


def contrastive_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """The original Siamese loss (Hadsell, Chopra, LeCun 2006) over all pairs in the batch.

    Same-person pairs are pulled together (d²), different-person pairs pushed beyond the margin
    (max(0, margin − d)²); the two halves are averaged separately so the many negatives don't drown the positives.
    """
    dist = pairwise_distances(emb)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=emb.device)
    pos = dist[same & ~eye]
    neg = dist[~same]
    return pos.pow(2).mean() + F.relu(margin - neg).pow(2).mean()
