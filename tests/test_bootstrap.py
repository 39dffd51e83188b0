"""The paired bootstrap over held-out people that the ship decision reads (train.evaluate.paired_bootstrap)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from train.evaluate import (PairTable, all_pairs, best_accuracy, distance, far_upper_bound, paired_bootstrap, roc,
                            tar_at_far)


def people(n_people: int, per: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around one centre per person; `spread` sets how hard the people are to tell apart."""
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(n_people, 16, generator=gen), dim=1)
    labels = torch.arange(n_people).repeat_interleave(per)
    emb = F.normalize(centres[labels] + spread * torch.randn(len(labels), 16, generator=gen), dim=1)
    return emb.numpy(), labels.numpy()


def test_unweighted_metrics_match_the_plain_evaluation() -> None:
    emb, labels = people(60, 4, 0.25, seed=0)
    table = PairTable(emb, labels, groups=np.arange(60))
    i, j = np.triu_indices(len(labels), k=1)
    dist, same = distance(emb[i], emb[j]), labels[i] == labels[j]
    m = table.metrics()
    assert abs(m["tar@far1e-3"] - tar_at_far(dist, same, 1e-3)[0]) < 1e-9
    assert 0.5 < m["accuracy"] <= 1.0
    # balanced over every pair, the accuracy is close to the plain evaluation's on a balanced subset of pairs
    pairs, s = all_pairs(labels, max_negatives=int(same.sum()))
    plain, _ = best_accuracy(distance(emb[pairs[:, 0]], emb[pairs[:, 1]]), s)
    assert abs(m["accuracy"] - plain) < 0.05


def test_weights_count_groups_and_drop_absent_ones() -> None:
    emb, labels = people(6, 2, 0.3, seed=1)
    groups = np.array([0, 0, 1, 2, 3, 4])              # people 0 and 1 are one family
    table = PairTable(emb, labels, groups)
    counts = np.array([2, 0, 1, 3, 0])
    w = table.weights(counts)
    within = table.group_i == table.group_j
    assert np.all(w[within] == counts[table.group_i[within]])
    assert np.all(w[~within] == counts[table.group_i[~within]] * counts[table.group_j[~within]])
    assert np.all(w[(table.group_i == 1) | (table.group_j == 1)] == 0)


def test_bootstrap_tells_a_clearly_better_model_from_a_copy() -> None:
    good, labels = people(80, 4, 0.2, seed=2)
    bad, _ = people(80, 4, 0.45, seed=2)
    groups = np.arange(80)
    tables = {"base": PairTable(bad, labels, groups), "better": PairTable(good, labels, groups),
              "copy": PairTable(bad.copy(), labels, groups)}
    out = paired_bootstrap(tables, "base", draws=60, seed=0)
    assert "vs_base" not in out["base"]
    better = out["better"]["vs_base"]["tar@far1e-3"]
    assert better["difference"] > 0.05 and better["p_better"] > 0.95 and better["interval_90"][0] > 0
    same = out["copy"]["vs_base"]["tar@far1e-3"]
    assert same["difference"] == 0 and same["p_better"] == 0 and same["interval_90"] == [0.0, 0.0]


def test_far_upper_bound_is_the_rule_of_three_at_zero_and_meets_the_count_when_many_pass() -> None:
    bound = far_upper_bound(np.array([0, 12, 100_000]), 1_000_000)
    assert abs(bound[0] * 1e6 - 3.0) < 0.01                  # nothing passed: FAR < 3/n at 95 %
    assert 1.5 < bound[1] * 1e6 / 12 < 1.8                   # a dozen: the true rate may be 1.6x higher
    assert 1.0 < bound[2] / 0.1 < 1.01                       # many: bound and count agree
    rng = np.random.default_rng(0)
    dist = np.concatenate([rng.normal(0.7, 0.1, 500), rng.normal(1.3, 0.1, 50_000)])
    curve = roc(dist, np.arange(len(dist)) < 500)
    assert all(u >= f for u, f in zip(curve["far_upper"], curve["far"]))
    # no impostor passed is no proof of a zero rate: the bound there is the rule of three, ~3 / impostor pairs
    assert curve["impostor_pairs"] == 50_000 and min(curve["far_upper"]) == pytest.approx(3.0 / 50_000, rel=0.01)
    assert np.all(np.diff(curve["far_upper"]) >= 0)


def test_open_set_counts_rank1_and_names_at_most_the_allowed_strangers() -> None:
    from train.evaluate import open_set

    emb, labels = people(30, 3, 0.05, seed=3)
    identities = [f"p{label}" for label in labels]
    strangers = {f"p{i}" for i in range(20, 30)}
    result = open_set(emb, identities, strangers)
    assert (result["enrolled"], result["probes"], result["stranger_probes"]) == (20, 40, 30)
    assert result["rank1"] == 1.0 and result["dir@fpir0.05"] >= result["dir@fpir0.01"] > 0.9
