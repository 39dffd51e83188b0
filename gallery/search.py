"""Answering queries from an in-memory FAISS index: best face per person, nearest people first.

FAISS ranks faces, but the gallery answers with people, so a person with many faces must not crowd others out of
the top k. We ask for more neighbours than k (4k, at least 32) and widen the search for any query row that did not
yet reach k distinct people, until the whole index has been seen.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gallery.index import add
from gallery.results import Match
from gallery.vectors import ip_to_distance

_MIN_NEIGHBOURS = 32
_WIDEN = 4


@dataclass
class LoadedIndex:
    """A FAISS index plus the face-id → person-name map, both valid for one database ``generation``."""

    index: Any
    generation: int
    names: dict[int, str] = field(default_factory=dict)

    def add(self, face_id: int, name: str, vector: np.ndarray, generation: int) -> None:
        """Apply one enrolment that moved the database from ``self.generation`` to ``generation``."""
        add(self.index, np.array([face_id], dtype=np.int64), vector.reshape(1, -1))
        self.names[face_id] = name
        self.generation = generation

    def search(self, queries: np.ndarray, k: int) -> list[list[Match]]:
        """Up to ``k`` people per query row (unit float32 rows), each at their best face, ascending distance."""
        total = int(self.index.ntotal)
        results: list[list[Match]] = [[] for _ in range(len(queries))]
        if total == 0:
            return results
        want = min(total, max(_WIDEN * k, _MIN_NEIGHBOURS))
        pending = list(range(len(queries)))
        while pending:
            ips, ids = self.index.search(queries[pending], want)
            still_short = []
            for row, ip_row, id_row in zip(pending, ips, ids):
                results[row] = self._best_people(ip_row, id_row, k)
                if len(results[row]) < k and want < total:
                    still_short.append(row)
            pending = still_short
            want = min(total, want * _WIDEN)
        return results

    def _best_people(self, ip_row: np.ndarray, id_row: np.ndarray, k: int) -> list[Match]:
        """Keep each person's first (= best) face in FAISS's ranking; ties broken by name for stable output."""
        best: dict[str, Match] = {}
        for distance, face_id in zip(ip_to_distance(ip_row), id_row):
            name = self.names.get(int(face_id))  # -1 (no result) and unknown ids are skipped
            if name is None or name in best:
                continue
            best[name] = Match(name=name, distance=float(distance), face_id=int(face_id))
            if len(best) == k:
                break
        return sorted(best.values(), key=lambda m: (m.distance, m.name))
