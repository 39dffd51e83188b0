"""The gallery: SQLite truth + FAISS cache, search semantics, cache invalidation, corruption and erasure.

Everything here uses random unit vectors in a temporary home directory: no datasets, no models, never skipped.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import timezone
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gallery import DB_FILE, INDEX_FILE, META_FILE, SLOTS_FILE, Gallery, GalleryError, Match, PersonInfo, UnknownPerson
from gallery.vectors import to_blob, unit_rows
from gallery import index

DIM = 32
MODEL = "model-a"


def unit(rng: np.random.Generator, n: int = 1, dim: int = DIM) -> np.ndarray:
    v = rng.normal(size=(n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def near(rng: np.random.Generator, v: np.ndarray, noise: float = 0.05) -> np.ndarray:
    w = v + noise * rng.normal(size=v.shape)
    return (w / np.linalg.norm(w, axis=-1, keepdims=True)).astype(np.float32)


def sha(i: int) -> str:
    return f"{i:064x}"


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    return tmp_path / "gallery-home"


def enrol_crowd(g: Gallery, rng: np.random.Generator, n: int = 12) -> dict[str, np.ndarray]:
    people = {f"person{i:02d}": unit(rng)[0] for i in range(n)}
    for i, (name, v) in enumerate(people.items()):
        g.add_face(name, v, sha(i))
    return people


def answers(g: Gallery, queries: np.ndarray, k: int = 3) -> list[list[tuple[str, int]]]:
    return [[(m.name, m.face_id) for m in row] for row in g.search(queries, k=k)]


# ------------------------------------------------------------------------------------------------- add / search


def test_nearest_person_is_found_with_euclidean_distances(home: Path, rng: np.random.Generator) -> None:
    with Gallery(home, MODEL, DIM) as g:
        people = enrol_crowd(g, rng)
        names = list(people)
        queries = near(rng, np.stack([people[n] for n in names]))
        results = g.search(queries, k=4)
    assert len(results) == len(names)
    for name, q, row in zip(names, queries, results):
        assert isinstance(row[0], Match) and row[0].name == name
        assert len(row) == 4 and len({m.name for m in row}) == 4
        assert [m.distance for m in row] == sorted(m.distance for m in row)
        for m in row:  # d = sqrt(2 - 2 cos) between unit vectors
            expected = np.sqrt(max(0.0, 2 - 2 * float(np.dot(q.astype(np.float64), people[m.name]))))
            assert m.distance == pytest.approx(expected, abs=1e-3)


def test_single_row_query_and_empty_gallery(home: Path, rng: np.random.Generator) -> None:
    with Gallery(home, MODEL, DIM) as g:
        assert g.search(unit(rng, 2)) == [[], []]
        assert g.search(np.zeros((0, DIM), np.float32)) == []
        v = unit(rng)[0]
        face_id, created = g.add_face("solo", v, sha(1))
        assert created and isinstance(face_id, int)
        [[match]] = g.search(v)  # a (dim,) query is one row
        assert match == Match("solo", pytest.approx(0.0, abs=1e-3), face_id)


def test_person_scored_by_best_face_and_listed_once(home: Path, rng: np.random.Generator) -> None:
    with Gallery(home, MODEL, DIM) as g:
        others = enrol_crowd(g, rng, n=5)
        target = unit(rng)[0]
        ids = {}
        for i in range(100):  # one person with many faces all close to the query must not crowd others out
            face = near(rng, target, noise=0.02 if i else 0.0)
            ids[g.add_face("many", face, sha(100 + i))[0]] = face
        best_id = g.add_face("many", target, sha(999))[0]
        [row] = g.search(target[None, :], k=4)
    assert [m.name for m in row][0] == "many" and row[0].face_id == best_id
    assert len(row) == 4 and len({m.name for m in row}) == 4
    assert {m.name for m in row[1:]} <= set(others)
    assert row[0].distance < min(m.distance for m in row[1:])


def test_people_listing_and_counts(home: Path, rng: np.random.Generator) -> None:
    with Gallery(home, MODEL, DIM) as g:
        assert g.people() == [] and g.person_count() == 0 and not g.has_person("bob")
        assert g.add_face("bob", unit(rng)[0], sha(1))[1] is True
        assert g.add_face("alice", unit(rng)[0], sha(2))[1] is True
        first = {p.name: p for p in g.people()}["bob"]
        assert g.add_face("bob", unit(rng)[0], sha(3))[1] is False
        people = g.people()
        assert g.person_count() == 2 and g.has_person("bob") and not g.has_person("carol")
    assert [p.name for p in people] == ["alice", "bob"]
    assert all(isinstance(p, PersonInfo) for p in people)
    bob = people[1]
    assert bob.faces == 2 and people[0].faces == 1 and bob.other_model_faces == 0
    assert bob.created_at.tzinfo is not None and bob.created_at.utcoffset() == timezone.utc.utcoffset(None)
    assert bob.created_at == first.created_at and bob.updated_at > first.updated_at


def test_remove_person(home: Path, rng: np.random.Generator) -> None:
    with Gallery(home, MODEL, DIM) as g:
        people = enrol_crowd(g, rng, n=4)
        g.add_face("person00", unit(rng)[0], sha(50))
        assert g.remove_person("person00") == 2
        assert not g.has_person("person00") and g.person_count() == 3
        found = {m.name for row in g.search(np.stack(list(people.values())), k=5) for m in row}
        assert found == {"person01", "person02", "person03"}
        with pytest.raises(UnknownPerson, match="person00"):
            g.remove_person("person00")
        with pytest.raises(GalleryError):  # UnknownPerson is a GalleryError
            g.remove_person("nobody")


def test_generation_bumps_once_per_change(home: Path, rng: np.random.Generator) -> None:
    with Gallery(home, MODEL, DIM) as g:
        start = g.generation()
        g.add_face("a", unit(rng)[0], sha(1))
        g.add_face("a", unit(rng)[0], sha(2))
        assert g.generation() == start + 2
        with pytest.raises(UnknownPerson):
            g.remove_person("zz")
        with pytest.raises(ValueError):
            g.add_face("b", np.full(DIM, np.nan), sha(3))
        assert g.generation() == start + 2  # failed operations change nothing
        g.remove_person("a")
        assert g.generation() == start + 3
    meta = json.loads((home / META_FILE).read_text())
    assert meta["generation"] == start + 3 and meta["live"] == 0


@pytest.mark.parametrize(
    "bad",
    [
        np.ones(DIM + 1, np.float32),
        np.ones((2, DIM), np.float32),
        np.ones((1, 1, DIM), np.float32),
        np.ones(DIM, np.int64),
        np.array(["x"] * DIM),
        np.r_[np.ones(DIM - 1), np.nan],
        np.r_[np.ones(DIM - 1), np.inf],
        np.zeros(DIM, np.float32),
    ],
    ids=["wrong-dim", "two-rows", "3d", "int", "str", "nan", "inf", "zero"],
)
def test_bad_vectors_are_value_errors(home: Path, bad: np.ndarray) -> None:
    with Gallery(home, MODEL, DIM) as g:
        with pytest.raises(ValueError):
            g.add_face("x", bad, sha(1))
        if bad.ndim <= 2 and not (bad.ndim == 2 and bad.shape[0] == 2):
            with pytest.raises(ValueError):
                g.search(bad)
        assert g.people() == []


def test_bad_arguments_are_value_errors(home: Path, rng: np.random.Generator) -> None:
    with Gallery(home, MODEL, DIM) as g:
        with pytest.raises(ValueError):
            g.add_face("x", unit(rng)[0], "not-a-sha")
        with pytest.raises(ValueError):
            g.add_face("", unit(rng)[0], sha(1))
        with pytest.raises(ValueError):
            g.search(unit(rng), k=0)
    with pytest.raises(ValueError):
        Gallery(home, "", DIM)
    with pytest.raises(ValueError):
        Gallery(home, MODEL, 0)


# ------------------------------------------------------------------------------------------------ index cache


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(777))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _bad_json(path: Path) -> None:
    path.write_text("{not json")


def _wrong_count(path: Path) -> None:
    meta = json.loads(path.read_text())
    meta["live"] += 1
    path.write_text(json.dumps(meta))


def _wrong_dim(path: Path) -> None:
    meta = json.loads(path.read_text())
    meta["dim"] = DIM * 2
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("target", "damage"),
    [
        (INDEX_FILE, Path.unlink),
        (META_FILE, Path.unlink),
        (INDEX_FILE, _garbage),
        (INDEX_FILE, _truncate),
        (META_FILE, _garbage),
        (META_FILE, _bad_json),
        (META_FILE, _wrong_count),
        (META_FILE, _wrong_dim),
        (SLOTS_FILE, Path.unlink),
        (SLOTS_FILE, _truncate),
        (SLOTS_FILE, _garbage),
    ],
    ids=["faiss-missing", "json-missing", "faiss-garbage", "faiss-truncated", "json-garbage", "json-bad",
         "count-mismatch", "dim-mismatch", "slots-missing", "slots-truncated", "slots-garbage"],
)
def test_damaged_or_missing_index_is_rebuilt_silently(
    home: Path, rng: np.random.Generator, target: str, damage: Callable[[Path], object]
) -> None:
    with Gallery(home, MODEL, DIM) as g:
        people = enrol_crowd(g, rng)
        g.add_face("person03", unit(rng)[0], sha(77))
    queries = near(rng, np.stack(list(people.values())))
    with Gallery(home, MODEL, DIM) as g:
        before = answers(g, queries)
    assert [row[0][0] for row in before] == list(people)
    damage(home / target)
    with Gallery(home, MODEL, DIM) as g:  # a fresh instance must go to disk, find the damage, rebuild
        assert answers(g, queries) == before
    meta = json.loads((home / META_FILE).read_text())
    assert meta["live"] == len(people) + 1 and meta["dim"] == DIM and meta["model_id"] == MODEL
    assert sorted(p.name for p in home.iterdir()) == sorted([DB_FILE, INDEX_FILE, META_FILE, SLOTS_FILE])


def test_valid_index_on_disk_is_reused(home: Path, rng: np.random.Generator) -> None:
    with Gallery(home, MODEL, DIM) as g:
        enrol_crowd(g, rng)
    stamp = (home / INDEX_FILE).stat().st_mtime_ns, (home / INDEX_FILE).stat().st_ino
    with Gallery(home, MODEL, DIM) as g:
        g.search(unit(rng))
    assert ((home / INDEX_FILE).stat().st_mtime_ns, (home / INDEX_FILE).stat().st_ino) == stamp


def test_stale_index_is_noticed_across_instances(home: Path, rng: np.random.Generator) -> None:
    with Gallery(home, MODEL, DIM) as g1, Gallery(home, MODEL, DIM) as g2:
        people = enrol_crowd(g1, rng, n=6)
        q = near(rng, people["person02"])
        assert g1.search(q, k=1)[0][0].name == "person02"  # g1 now holds an in-memory index
        newcomer = unit(rng)[0]
        g2.add_face("newcomer", newcomer, sha(500))
        assert g1.search(newcomer, k=1)[0][0].name == "newcomer"
        g2.remove_person("person02")
        assert "person02" not in {m.name for m in g1.search(q, k=10)[0]}
        g1.add_face("late", unit(rng)[0], sha(501))  # g1's incremental path after g2's changes
        assert g2.search(q, k=10)[0] == g1.search(q, k=10)[0]
        assert g1.generation() == g2.generation()
    # a stale file on disk (generation behind the database) is not used either
    saved = (home / INDEX_FILE).read_bytes(), (home / META_FILE).read_bytes()
    with Gallery(home, MODEL, DIM) as g:
        g.add_face("after", newcomer, sha(502))
    (home / INDEX_FILE).write_bytes(saved[0])
    (home / META_FILE).write_bytes(saved[1])
    with Gallery(home, MODEL, DIM) as g:
        assert {m.name for m in g.search(newcomer, k=2)[0]} == {"after", "newcomer"}


def test_other_models_faces_are_never_returned(home: Path, rng: np.random.Generator) -> None:
    with Gallery(home, MODEL, DIM) as a:
        people = enrol_crowd(a, rng, n=5)
    queries = np.stack(list(people.values()))
    with Gallery(home, MODEL, DIM) as a:
        before = answers(a, queries)
    b_vec = unit(rng)[0]
    with Gallery(home, "model-b", DIM) as b:  # another model (same dim) shares the database and the cache files
        assert b.search(queries) == [[] for _ in queries]
        assert b.person_count() == 0 and len(b.people()) == 5
        b.add_face("person00", b_vec, sha(900))
        b.add_face("only-b", unit(rng)[0], sha(901))
        assert {m.name for m in b.search(b_vec, k=5)[0]} == {"person00", "only-b"}
        b.rebuild_index()
    assert json.loads((home / META_FILE).read_text())["model_id"] == "model-b"
    with Gallery(home, MODEL, DIM) as a:
        assert answers(a, queries) == before  # rebuilt for model-a, without model-b's faces
        assert "only-b" not in {m.name for row in a.search(b_vec[None, :], k=10) for m in row}
        assert a.person_count() == 5
        listing = {p.name: p for p in a.people()}
        assert listing["only-b"].faces == 0 and listing["only-b"].other_model_faces == 1
        assert listing["person00"].faces == 1 and listing["person00"].other_model_faces == 1
    assert json.loads((home / META_FILE).read_text())["model_id"] == MODEL
    with Gallery(home, "model-c", DIM * 2) as c:  # different dim: nothing to search, nothing breaks
        assert c.search(unit(rng, 1, DIM * 2)) == [[]]


def test_cache_is_written_with_each_change_and_closed_gallery_refuses(home: Path, rng: np.random.Generator) -> None:
    g = Gallery(home, MODEL, DIM)
    g.search(unit(rng))  # builds (empty) index
    enrol_crowd(g, rng, n=3)  # incremental updates, appended to the slots file as they happen
    generation = g.generation()
    meta = json.loads((home / META_FILE).read_text())
    assert meta["generation"] == generation and meta["live"] == 3
    g.close()
    g.close()  # idempotent
    with pytest.raises(GalleryError, match="closed"):
        g.search(unit(rng))


# ------------------------------------------------------------------------------------------ corruption / errors


@pytest.fixture(scope="module")
def healthy_db_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real gallery database spanning many pages, built once for all corruption cases."""
    rng = np.random.default_rng(7)
    good = tmp_path_factory.mktemp("good")
    with Gallery(good, MODEL, 128) as g:
        for i in range(200):
            g.add_face(f"p{i}", unit(rng, 1, 128)[0], sha(i))
    return (good / DB_FILE).read_bytes()


@pytest.mark.parametrize("kind", ["random-bytes", "truncated", "first-page-only", "header-only"])
def test_corrupt_database_is_a_one_line_gallery_error_and_left_untouched(
    tmp_path: Path, healthy_db_bytes: bytes, kind: str
) -> None:
    data = healthy_db_bytes
    assert len(data) > 8 * 4096
    damaged = {
        "random-bytes": os.urandom(8192),
        "truncated": data[: len(data) // 2],
        "first-page-only": data[:4096],
        "header-only": data[:100],
    }[kind]
    home = tmp_path / "bad"
    home.mkdir()
    (home / DB_FILE).write_bytes(damaged)
    with pytest.raises(GalleryError) as info:
        Gallery(home, MODEL, 128)
    message = str(info.value)
    assert "\n" not in message and str(home / DB_FILE) in message and "corrupt" in message
    assert (home / DB_FILE).read_bytes() == damaged  # never deleted or overwritten
    assert sorted(p.name for p in home.iterdir()) == [DB_FILE]


def test_unwritable_home_is_a_gallery_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for home in (blocker, blocker / "sub"):  # works even as root, unlike chmod
        with pytest.raises(GalleryError, match="a-file"):
            Gallery(home, MODEL, DIM)


# ------------------------------------------------------------------------------------------------- erasure


def _all_bytes(home: Path) -> dict[Path, bytes]:
    files = {p: p.read_bytes() for p in home.rglob("*") if p.is_file()}
    assert DB_FILE in {p.name for p in files}
    return files


def _code(vector: np.ndarray) -> bytes:
    """The 8-bit code the cache stores for a unit vector (the quantiser range is fixed, so this is exact)."""
    ivf = index.train(len(vector), np.zeros((0, len(vector)), np.float32), 1)
    return index.encode(ivf, unit_rows(vector, len(vector)))[0, 1:].tobytes()


def _traces(name: str, vectors: np.ndarray, shas: list[str]) -> list[bytes]:
    """Every byte pattern the person could leave behind: name, vectors (as stored), their cache codes, and 16-byte
    slices of each."""
    patterns = [name.encode("utf-8")] + [s.encode() for s in shas]
    for raw in vectors.astype(np.float32):
        for blob in (to_blob(unit_rows(raw, raw.shape[0])[0]), _code(raw)):
            patterns.append(blob)
            patterns += [blob[i : i + 16] for i in range(0, len(blob) - 15, 16)]
    return patterns


def test_erasure_leaves_no_trace_in_any_file(home: Path, rng: np.random.Generator) -> None:
    name = "Zebulon Quixote-Erasure 🦓"
    mine = unit(rng, 3)
    mine_b = unit(rng, 1)
    shas = [sha(0xE0 + i) for i in range(4)]
    other = unit(rng, 2)

    g = Gallery(home, MODEL, DIM)
    b = Gallery(home, "model-b", DIM)  # another model's face of the same person must go too
    g.add_face("before", unit(rng)[0], sha(1))
    for v, s in zip(mine, shas):
        g.add_face(name, v, s)
    b.search(mine_b)
    b.add_face(name, mine_b[0], shas[3])  # b now has an unsaved in-memory index holding this vector
    for i, v in enumerate(other):
        g.add_face("Other Person", v, sha(2 + i))
    g.rebuild_index()
    traces = _traces(name, np.vstack([mine, mine_b]), shas)

    # positive control: the scan does see the person while they are enrolled, in the database and the index
    files = _all_bytes(home)
    blob = b"".join(files.values())
    assert name.encode() in files[home / DB_FILE]
    assert all(t in blob for t in _traces(name, mine, shas))  # model-b's codes: the cache is model-a's now
    assert to_blob(unit_rows(mine_b[0], DIM)[0]) in files[home / DB_FILE]
    assert _code(mine[0]) in files[home / SLOTS_FILE]

    assert g.remove_person(name) == 4
    b.close()  # must not write back its stale in-memory index with the erased vector
    for stage in ("after remove", "after close"):
        files = _all_bytes(home)
        for path, content in files.items():
            leaked = [t for t in traces if t in content]
            assert not leaked, f"{stage}: {path.name} still holds {len(leaked)} trace(s) of the erased person"
        if stage == "after remove":
            assert [row[0].name for row in g.search(other, k=1)] == ["Other Person"] * 2
            assert name not in {m.name for row in g.search(np.vstack([mine, mine_b]), k=10) for m in row}
            g.close()
    with Gallery(home, MODEL, DIM) as g2:
        assert not g2.has_person(name) and g2.person_count() == 2
        assert g2.search(other[1], k=1)[0][0].name == "Other Person"


# ---------------------------------------------------------------------------------------------- import cost


def test_import_gallery_pulls_in_neither_torch_nor_faiss() -> None:
    code = "import sys, gallery; print(sorted(m for m in ('torch', 'faiss') if m in sys.modules))"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_has_photo_knows_each_persons_photos_by_sha256(tmp_path: Path) -> None:
    with Gallery(tmp_path, "m1", 4) as g:
        g.add_face("ann", np.array([1.0, 0, 0, 0], np.float32), "a" * 64)
        g.add_face("bob", np.array([0, 1.0, 0, 0], np.float32), "b" * 64)
        assert g.has_photo("ann", "a" * 64)
        assert not g.has_photo("ann", "b" * 64) and not g.has_photo("carl", "a" * 64)
        g.remove_person("ann")
        assert not g.has_photo("ann", "a" * 64)


# ------------------------------------------------------------------------------------ faces of another model


def _old_and_new(home: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """"ann" and "bob" enrolled with model "old" only (bob twice), "cat" with both, "dan" with the current model."""
    old = {name: unit(rng, 2) for name in ("ann", "bob", "cat")}
    with Gallery(home, "old", DIM) as g:
        g.add_face("ann", old["ann"][0], sha(1))
        g.add_face("bob", old["bob"][0], sha(2))
        g.add_face("bob", old["bob"][1], sha(3))
        g.add_face("cat", old["cat"][0], sha(4))
    with Gallery(home, MODEL, DIM) as g:
        g.add_face("cat", unit(rng)[0], sha(5))
        g.add_face("dan", unit(rng)[0], sha(6))
    return old


def test_stale_faces_are_counted_with_sql(home: Path, rng: np.random.Generator) -> None:
    _old_and_new(home, rng)
    with Gallery(home, MODEL, DIM) as g:
        stale = g.stale_faces()
        assert (stale.people, stale.faces, stale.unrecognisable) == (3, 4, 2) and stale
        assert g.stale_names() == ["ann", "bob", "cat"]
        assert g.person("bob") == {p.name: p for p in g.people()}["bob"]
        assert (g.person("bob").faces, g.person("bob").other_model_faces) == (0, 2)
        assert (g.person("cat").faces, g.person("cat").other_model_faces) == (1, 1)
        with pytest.raises(UnknownPerson, match="zed"):
            g.person("zed")
    with Gallery(home, "old", DIM) as old:  # from the old model's side, the new faces are the stale ones
        assert (old.stale_faces().people, old.stale_faces().faces, old.stale_faces().unrecognisable) == (2, 2, 1)
    with Gallery(home / "empty", MODEL, DIM) as empty:
        assert not empty.stale_faces() and empty.stale_names() == []


def test_add_face_can_drop_the_persons_other_model_faces(home: Path, rng: np.random.Generator) -> None:
    old = _old_and_new(home, rng)
    with Gallery(home, "old", DIM) as g:
        g.rebuild_index()  # the cache on disk now holds the old model's vectors
    old_blobs = [to_blob(unit_rows(v, DIM)[0]) for v in old["bob"]]
    files = _all_bytes(home)  # positive control: the scan below does see them while they are stored
    assert all(blob in files[home / DB_FILE] for blob in old_blobs)
    assert all(_code(v) in files[home / SLOTS_FILE] for v in old["bob"])
    old_blobs += [_code(v) for v in old["bob"]]
    new = unit(rng)[0]
    with Gallery(home, MODEL, DIM) as g:
        before = g.generation()
        face_id, created = g.add_face("bob", new, sha(7), drop_other_models=True)
        assert not created and g.generation() == before + 1  # one transaction: delete and insert together
        assert (g.person("bob").faces, g.person("bob").other_model_faces) == (1, 0)
        assert g.search(new, k=1)[0][0] == Match("bob", pytest.approx(0.0, abs=1e-3), face_id)
        assert g.stale_names() == ["ann", "cat"]
        g.add_face("ann", unit(rng)[0], sha(8))  # without the flag, other models' faces stay
        assert g.person("ann").other_model_faces == 1
    with sqlite3.connect(home / DB_FILE) as conn:
        rows = conn.execute("SELECT f.model_id, f.vector FROM faces f JOIN people p ON p.id = f.person_id "
                            "WHERE p.name = 'bob'").fetchall()
    conn.close()
    assert [model for model, _ in rows] == [MODEL]
    for path, content in _all_bytes(home).items():  # secure_delete zeroed them; the index was rewritten
        assert not any(blob in content for blob in old_blobs), f"an old vector of bob is left in {path.name}"


# ---------------------------------------------------------------------------------------------- stored precision


def test_vectors_are_stored_as_float16_and_distances_stay_within_a_thousandth(home: Path,
                                                                              rng: np.random.Generator) -> None:
    enrolled, probe = unit(rng)[0], None
    probe = near(rng, enrolled, 0.3)
    with Gallery(home, MODEL, DIM) as g:
        g.add_face("ann", enrolled, sha(1))
        found = g.search(probe)[0][0]
    with sqlite3.connect(home / DB_FILE) as db:
        (blob,) = db.execute("SELECT vector FROM faces").fetchone()
    assert len(blob) == DIM * 2
    exact = float(np.linalg.norm(probe / np.linalg.norm(probe) - enrolled))
    assert found.name == "ann" and abs(found.distance - exact) < 1e-3


def test_a_gallery_written_with_float32_vectors_stays_readable(home: Path, rng: np.random.Generator) -> None:
    ann, bob = unit(rng, 2)
    with Gallery(home, MODEL, DIM) as g:
        g.add_face("ann", ann, sha(1))
        g.add_face("bob", bob, sha(2))
    with sqlite3.connect(home / DB_FILE) as db:   # as an earlier version wrote them
        for face_id, blob in db.execute("SELECT id, vector FROM faces").fetchall():
            wide = np.frombuffer(blob, "<f2").astype("<f4")
            db.execute("UPDATE faces SET vector = ? WHERE id = ?", (wide.tobytes(), face_id))
    for name in (INDEX_FILE, SLOTS_FILE, META_FILE):
        (home / name).unlink(missing_ok=True)     # the cache is rebuilt from the float32 truth
    with Gallery(home, MODEL, DIM) as g:
        assert [m.name for m in g.search(near(rng, bob, 0.05))[0]][0] == "bob"
        assert g.search(ann)[0][0].distance < 1e-3
