"""Where the shared datasets and teacher networks are, for tests that need real faces (they skip without them)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from train.data_paths import data_root, teachers_root


def datasets() -> Path:
    root = data_root()
    if root is None:
        pytest.skip("no datasets: set ONESHOT_DATA or put them in ../shared/datasets")
    return root


def teachers() -> Path:
    root = teachers_root()
    if root is None:
        pytest.skip("no teacher networks: set ONESHOT_TEACHERS or put them in ../shared/teachers")
    return root


def wild_rows(limit: int, multi_face: bool = False) -> list[dict[str, str]]:
    """The first `limit` celeba-wild photos (with MTCNN's main face), optionally only those where MTCNN is sure of
    at least two faces 30 px or wider (smaller background faces are not what enrolment must notice)."""
    folder = datasets() / "celeba-wild"
    clear: dict[str, int] = {}
    for face in csv.DictReader((folder / "faces.csv").open()):
        if float(face["prob"]) >= 0.95 and float(face["x2"]) - float(face["x1"]) >= 30:
            clear[face["path"]] = clear.get(face["path"], 0) + 1
    rows = [r for r in csv.DictReader((folder / "landmarks.csv").open())
            if r["x1"] and (not multi_face or clear.get(r["path"], 0) > 1)]
    for row in rows:
        row["file"] = str(folder / row["path"])
    return rows[:limit]
