"""Metric-learning losses on L2-normalised embeddings: triplet (batch-hard / semi-hard) and contrastive.

All work on Euclidean distances between unit vectors (0…2), the same distance the product thresholds.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_distances(emb: torch.Tensor, others: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean distances between unit vectors (`emb` × `others`, default `emb` × `emb`); the clamp keeps the
    sqrt's gradient finite on the diagonal."""
    sim = emb @ (emb if others is None else others).t()
    return (2.0 - 2.0 * sim).clamp_min(1e-12).sqrt()


def triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float, mining: str = "hard",
                 memory: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Triplet loss max(0, d(a,p) − d(a,n) + margin) over the batch, anchors = every sample.

    `hard`: for each anchor the farthest positive and the nearest negative in the batch (Hermans et al. 2017).
    `semihard`: for each (anchor, positive) pair the nearest negative that is still farther than the positive
    (FaceNet, Schroff et al. 2015), falling back to the hardest negative when none is.

    `memory` = (embeddings, labels) of earlier batches, detached: extra candidate negatives (a cross-batch memory,
    Wang et al. 2020). A batch of 32 people shows each anchor ~124 negatives, so its hardest negative sits near the
    1 % tail of impostors; the false accepts that matter at a door sit at 0.1 % and below, which only a bigger pool
    of negatives reaches. The memory never supplies positives (its vectors are stale, and a person's other photos
    are already in the batch).
    """
    n = len(labels)
    candidates, candidate_labels = (emb, labels) if memory is None else \
        (torch.cat([emb, memory[0]]), torch.cat([labels, memory[1]]))
    dist = pairwise_distances(emb, candidates)
    same = labels[:, None] == candidate_labels[None, :]
    pos_mask = torch.zeros_like(same)                         # positives: other photos in this batch only
    pos_mask[:, :n] = same[:, :n] & ~torch.eye(n, dtype=torch.bool, device=emb.device)
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


def distillation_loss(emb: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Squared distance between the student's unit vector and the teacher's (centred, normalised) unit vector."""
    if not bool(valid.any()):
        return emb.sum() * 0.0
    return (emb[valid] - teacher[valid]).pow(2).sum(dim=1).mean()


def relational_loss(emb: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the student's and the teacher's cosine similarity of every pair of photos
    in the batch (relational distillation, Park et al. 2019).

    Per-vector distillation asks the student to reproduce each of the teacher's vectors; this asks only for the
    same geometry — which faces the teacher finds alike — so a small network can match the teacher's ranking of
    hard impostors without spending capacity on its exact coordinates.
    """
    if int(valid.sum()) < 2:
        return emb.sum() * 0.0
    s, t = emb[valid], teacher[valid]
    off = ~torch.eye(len(s), dtype=torch.bool, device=emb.device)
    return (s @ s.t() - t @ t.t())[off].pow(2).mean()


# The centre softmax's scale and additive margin (CosFace's s and m). With ~4,800 people, a scale of 24 lets a
# well-placed photo reach p ≈ 0.9 (s ≥ ln(C·9) ≈ 11 is the floor); m = 0.2 on the cosine is about the triplet
# margin's 0.3 on the distance at the distances where genuine pairs sit (d ≈ 0.9, cos ≈ 0.6).
CENTRE_SCALE = 24.0
CENTRE_MARGIN = 0.2


def centre_softmax_loss(emb: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor,
                        scale: float = CENTRE_SCALE, margin: float = CENTRE_MARGIN) -> torch.Tensor:
    """Additive-margin softmax (CosFace, Wang et al. 2018) of each embedding against a bank of every training
    person's centre; the centres are running means, not learned weights (OIM, Xiao et al. 2017).

    A P×K batch shows each anchor ~380 impostors, so the triplet loss never meets most of the 4,800 training
    people; this term compares every photo with all of them at once, softly (the softmax spreads the push over
    the nearest impostors instead of trusting the single hardest one, which a cross-batch memory of raw vectors
    did and lost by). Running-mean centres need no warm-up when training continues from a good embedding, and
    with ~5 photos per person a learned classifier would barely see each row. Centres are constants here: only
    the embeddings get a gradient. People not yet in the bank (a zero row) are left out, as anchors and as
    impostors.
    """
    seen = centres.abs().sum(dim=1) > 0
    known = seen[labels]
    if not bool(known.any()):
        return emb.sum() * 0.0
    cos = emb[known] @ centres.t()
    own = labels[known]
    cos = cos.masked_fill(~seen[None, :], float("-inf"))
    cos = cos.scatter_add(1, own[:, None], torch.full((len(own), 1), -margin, dtype=cos.dtype))
    return F.cross_entropy(scale * cos, own)


@torch.no_grad()
def update_centres(centres: torch.Tensor, emb: torch.Tensor, labels: torch.Tensor, momentum: float = 0.5) -> None:
    """Each person in the batch: centre ← normalise(momentum·centre + (1 − momentum)·batch mean); a person not
    seen before has a zero centre, so theirs becomes the batch mean."""
    people, inverse = labels.unique(return_inverse=True)
    sums = torch.zeros(len(people), emb.shape[1], dtype=emb.dtype).index_add_(0, inverse, emb.detach())
    mixed = momentum * centres[people] + (1 - momentum) * F.normalize(sums, dim=1)
    centres[people] = F.normalize(mixed, dim=1)
