"""One test module, two sources of truth: every test runs against SQLite and against a real PostgreSQL server.

The PostgreSQL server is `$ONESHOT_TEST_PG_URL` when set, else a throwaway one this module starts
with `.ci/postgres.sh` (Debian's `postgresql` package, a Unix socket in a temp dir, as a non-root user); its tests
skip, saying why, only when no PostgreSQL server binary is installed. Each test gets a database of its own.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.pg_erasure import SCHEMA_1   # the tables as schema 1 created them
from enroll.service import OneShot
from gallery import DB_FILE, INDEX_FILE, Gallery
from gallery.vectors import to_blob, unit_rows
from tests.test_cli import ALICE, BOB, FakeEngine, fake, photo, run  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
DIM = 16


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Admin URL of a PostgreSQL server (the CI's, or one started here and stopped at the end)."""
    url = os.environ.get("ONESHOT_TEST_PG_URL")
    if url:
        yield url
        return
    started = subprocess.run(["bash", str(ROOT / ".ci" / "postgres.sh")], capture_output=True, text=True)
    if started.returncode == 3:
        pytest.skip(f"PostgreSQL tests need a server binary: {started.stderr.strip()}")
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip().splitlines()[-1]
    yield url
    host = re.search(r"host=([^&]+)", url)
    if host:
        user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        subprocess.run([*user, str(bindir / "pg_ctl"), "-D", f"{host.group(1)}/data", "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(host.group(1), ignore_errors=True)


def _admin(url: str) -> Any:
    import psycopg

    return psycopg.connect(_libpq(url), autocommit=True)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(kind, db_url): None means the default SQLite file in the home; PostgreSQL gets a fresh database."""
    if request.param == "sqlite":
        yield "sqlite", f"sqlite:///{tmp_path / 'shared' / DB_FILE}"
        return
    server = request.getfixturevalue("pg_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with _admin(server) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield "postgresql", re.sub(r"/oneshot(\?|$)", rf"/{name}\1", server, count=1)
    with _admin(server) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _unit(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    x = rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _sha(i: int) -> str:
    return f"{i:064x}"


def test_enrol_search_remove(backend: tuple[str, str | None], tmp_path: Path) -> None:
    _, url = backend
    (tmp_path / "shared").mkdir()
    rng = np.random.default_rng(0)
    vectors = _unit(rng, 30)
    with Gallery(tmp_path / "host-a", "m", DIM, db_url=url) as g:
        for i, v in enumerate(vectors):
            g.add_face(f"p{i:02d}", v, _sha(i))
        assert [m.name for m in g.search(vectors[7], k=2)[0]][0] == "p07"
        assert g.person_count() == 30 and len(g.people()) == 30
        assert g.remove_person("p07") == 1
        assert "p07" not in {m.name for m in g.search(vectors[7], k=5)[0]}
        assert g.person_count() == 29 and not g.stale_faces()


def test_two_hosts_share_one_gallery_each_with_its_own_cache(backend: tuple[str, str | None],
                                                             tmp_path: Path) -> None:
    """Host B's cache follows host A's changes by generation, incrementally: new faces appended, erased ones
    zeroed, without retraining (index.faiss stays the same file)."""
    _, url = backend
    (tmp_path / "shared").mkdir()
    rng = np.random.default_rng(1)
    vectors = _unit(rng, 12)
    with Gallery(tmp_path / "host-a", "m", DIM, db_url=url) as a, \
            Gallery(tmp_path / "host-b", "m", DIM, db_url=url) as b:
        for i, v in enumerate(vectors[:10]):
            a.add_face(f"p{i}", v, _sha(i))
        assert b.search(vectors[3], k=1)[0][0].name == "p3"
        trained = (tmp_path / "host-b" / INDEX_FILE).stat().st_ino
        a.add_face("late", vectors[10], _sha(10))
        a.remove_person("p3")
        assert b.search(vectors[10], k=1)[0][0].name == "late"
        assert "p3" not in {m.name for m in b.search(vectors[3], k=5)[0]}
        assert b.person_count() == 10
        assert (tmp_path / "host-b" / INDEX_FILE).stat().st_ino == trained
    with Gallery(tmp_path / "host-b", "m", DIM, db_url=url) as b:   # B's files were brought up to date too
        assert b.search(vectors[10], k=1)[0][0].name == "late"


def test_concurrent_look_alike_enrolments(backend: tuple[str, str | None], fake: FakeEngine, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _, url = backend
    (tmp_path / "shared").mkdir()
    first = photo(tmp_path / "a" / "anna.png", (ALICE, 40, 30, 60))
    second = photo(tmp_path / "b" / "hanna.png", (ALICE, 42, 30, 60))
    original = Gallery.add_face

    def slow(self: Gallery, *args: object, **kwargs: object) -> tuple[int, bool]:
        time.sleep(0.5)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Gallery, "add_face", slow)
    results: dict[str, str] = {}

    def enrol(path: Path, host: str) -> None:
        with OneShot(tmp_path / host, db=url) as service:
            results[path.stem] = service.enroll_one(path).status

    threads = [threading.Thread(target=enrol, args=(p, h)) for p, h in ((first, "host-a"), (second, "host-b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results.values()) == ["enrolled", "refused"], results


def test_cli_db_option_and_environment(backend: tuple[str, str | None], fake: FakeEngine, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _, url = backend
    (tmp_path / "shared").mkdir()
    assert url is not None
    alice = photo(tmp_path / "p" / "alice.png", (ALICE, 40, 30, 60))
    bob = photo(tmp_path / "p" / "bob.png", (BOB, 40, 30, 60))
    assert run("--home", tmp_path / "h1", "--db", url, "enroll", alice)[0] == 0
    monkeypatch.setenv("ONESHOT_DB", url)
    assert run("--home", tmp_path / "h2", "enroll", bob)[0] == 0
    code, out, _ = run("--home", tmp_path / "h3", "identify", alice)
    assert code == 0 and out.startswith("alice")
    code, out, _ = run("--home", tmp_path / "h3", "list")
    assert [line.split()[0] for line in out.splitlines()] == ["alice", "bob"]
    assert run("--home", tmp_path / "h1", "remove", "alice")[0] == 0
    assert run("--home", tmp_path / "h2", "identify", alice)[0] == 1


def test_erasure_reaches_the_database_files(backend: tuple[str, str | None], tmp_path: Path) -> None:
    """After remove, the stored bytes of the person (name, vector, photo hash) are in no file of the database:
    SQLite's secure_delete zeroes freed pages; on PostgreSQL, remove rewrites (VACUUM FULL) the partitions that
    held the rows, and we read every file of both tables (partitions, indexes, TOAST) through pg_read_binary_file.
    Nor may ANALYZE have copied them into pg_statistic."""
    kind, url = backend
    (tmp_path / "shared").mkdir()
    rng = np.random.default_rng(2)
    name, vector = "Zebulon Erasure", _unit(rng)[0]
    with Gallery(tmp_path / "host", "m", DIM, db_url=url) as g:
        g.add_face("keeper", _unit(rng)[0], _sha(1))
        g.add_face(name, vector, _sha(0xE0))
        needles = [name.encode(), to_blob(unit_rows(vector, DIM)[0]), _sha(0xE0).encode()]
        assert all(n in _database_bytes(kind, url) for n in needles)   # positive control
        if kind == "postgresql":
            _sql(url, "ANALYZE")
            assert not _sql(url, "SELECT tablename, attname FROM pg_stats WHERE attname IN "
                                 "('name', 'vector', 'photo_sha256') AND (most_common_vals IS NOT NULL "
                                 "OR histogram_bounds IS NOT NULL) AND tablename ~ '^(faces|people)'")
        g.remove_person(name)
    stored = _database_bytes(kind, url)
    assert b"keeper" in stored
    assert not [n for n in needles if n in stored]


def _sql(url: str | None, query: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    assert url is not None
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        cursor = conn.execute(query, args or None)
        return cursor.fetchall() if cursor.description else []


_RELATIONS = """
WITH tables AS (SELECT relid FROM pg_partition_tree('faces') UNION SELECT relid FROM pg_partition_tree('people')),
     owned AS (SELECT relid FROM tables
               UNION SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT relid FROM tables)
               UNION SELECT reltoastrelid FROM pg_class WHERE oid IN (SELECT relid FROM tables))
SELECT pg_relation_filepath(relid) FROM owned
UNION SELECT pg_relation_filepath(indexrelid) FROM pg_index
      WHERE indrelid IN (SELECT relid FROM owned) AND indrelid NOT IN (SELECT relid FROM tables)
"""


def _database_bytes(kind: str, url: str | None) -> bytes:
    """Every byte of the gallery's tables as stored on disk (on PostgreSQL: every partition, index and TOAST
    table and TOAST index of ``faces`` and ``people``)."""
    assert url is not None
    if kind == "sqlite":
        return Path(url.removeprefix("sqlite:///")).read_bytes()
    _sql(url, "CHECKPOINT")   # flush shared buffers to the relation files we read
    paths = [path for (path,) in _sql(url, _RELATIONS) if path]
    assert len(paths) >= 4    # tables, TOAST tables and their indexes
    out = b""
    for path in paths:
        size = _sql(url, "SELECT (pg_stat_file(%s)).size", path)[0][0]
        if size:
            out += _sql(url, "SELECT pg_read_binary_file(%s)", path)[0][0]
    return out


def _partitions_of_everyone(url: str | None) -> dict[str, set[str]]:
    """Each person's name -> the relations (partitions, or whole tables) holding their person and face rows."""
    rows = _sql(url, "SELECT p.name, p.tableoid::regclass::text, f.tableoid::regclass::text "
                     "FROM people p JOIN faces f ON f.person_id = p.id")
    out: dict[str, set[str]] = {}
    for name, person_rel, face_rel in rows:
        out.setdefault(name, set()).update((person_rel, face_rel))
    return out


def test_a_removal_does_not_lock_the_whole_table(backend: tuple[str, str | None], tmp_path: Path) -> None:
    """While a removal's rewrite waits for (or holds) its exclusive lock, identify of a face held elsewhere is
    answered: the rewrite locks the erased person's partitions only. A rewrite of the whole table (schema 1's
    VACUUM FULL faces) makes that identify wait until the rewrite is over."""
    kind, url = backend
    if kind != "postgresql":
        pytest.skip("SQLite erases with secure_delete in the removal's own transaction; there is no rewrite")
    (tmp_path / "shared").mkdir()
    rng = np.random.default_rng(3)
    vectors = _unit(rng, 12)
    with Gallery(tmp_path / "host", "m", DIM, db_url=url) as g, \
            Gallery(tmp_path / "host", "m", DIM, db_url=url) as reader:
        for i, v in enumerate(vectors):
            g.add_face(f"p{i:02d}", v, _sha(i))
        held = _partitions_of_everyone(url)
        alone = [n for n in sorted(held) if not any(held[n] & held[m] for m in held if m != n)]
        victim = alone[0] if alone else "p00"
        target = next(i for i in range(12) if f"p{i:02d}" != victim)
        face_partition = sorted(r for r in held[victim] if r.startswith("faces"))[0]
        import psycopg

        with psycopg.connect(_libpq(url)) as blocker:    # a long read of the victim's partition
            blocker.execute(f"SELECT count(*) FROM {face_partition}").fetchall()
            remover = threading.Thread(target=g.remove_person, args=(victim,))
            remover.start()
            deadline = time.monotonic() + 20
            while not _sql(url, "SELECT 1 FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND NOT granted"):
                assert time.monotonic() < deadline, "the removal's rewrite never queued for its lock"
                time.sleep(0.05)
            answers: list[str] = []
            search = threading.Thread(target=lambda: answers.append(reader.search(vectors[target], k=1)[0][0].name))
            search.start()
            search.join(5)
            answered_while_locked = not search.is_alive()
            blocker.rollback()
        remover.join(30)
        search.join(30)
        assert not remover.is_alive()
        assert answers == [f"p{target:02d}"]
        assert answered_while_locked, "identify waited for the whole table's rewrite"
        assert alone   # the victim's partitions held no one else's rows, so the test proved something


_NOW = "2024-01-01T00:00:00+00:00"


def _faces_table(url: str | None) -> list[tuple[Any, ...]]:
    return _sql(url, "SELECT f.id, p.name, f.model_id, f.dim, f.vector, f.photo_sha256 FROM faces f "
                     "JOIN people p ON p.id = f.person_id ORDER BY f.id")


def test_schema_1_postgres_gallery_is_partitioned_on_open(backend: tuple[str, str | None], tmp_path: Path) -> None:
    """A schema-1 PostgreSQL gallery (unpartitioned tables, as the previous release made them) is upgraded when
    opened: every person and vector is kept with its id, the tables are partitioned, and a new face's id is above
    every id the old sequence handed out (including a deleted face's), so no id is reused."""
    from gallery import pg

    kind, url = backend
    if kind != "postgresql":
        _schema_1_sqlite_is_unchanged(url, tmp_path)
        return
    rng = np.random.default_rng(4)
    vectors = _unit(rng, 20)
    _sql(url, SCHEMA_1)
    for i, v in enumerate(vectors):
        person = _sql(url, "INSERT INTO people (name, created_at, updated_at) VALUES (%s, %s, %s) RETURNING id",
                      f"p{i:02d}", _NOW, _NOW)[0][0]
        for model in ("m", "old-model")[: 1 + i % 2]:
            _sql(url, "INSERT INTO faces (person_id, model_id, dim, vector, photo_sha256, created_at) "
                      "VALUES (%s, %s, %s, %s, %s, %s)", person, model, DIM, to_blob(unit_rows(v, DIM)[0]),
                 _sha(i), _NOW)
    last = _sql(url, "DELETE FROM faces WHERE id = (SELECT max(id) FROM faces) RETURNING id")[0][0]
    before = _faces_table(url)
    with Gallery(tmp_path / "host", "m", DIM, db_url=url) as g:
        assert _faces_table(url) == before
        assert _sql(url, "SELECT schema_version FROM meta") == [(2,)]
        for table in ("faces", "people"):
            assert _sql(url, "SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", table) == [
                (pg.PARTITIONS,)]
        assert [p.name for p in g.people()] == [f"p{i:02d}" for i in range(20)]
        for i, v in enumerate(vectors):
            assert g.search(v, k=1)[0][0].name == f"p{i:02d}"
        face_id, _ = g.add_face("newcomer", _unit(rng)[0], _sha(99))
        assert face_id == last + 1
        assert g.remove_person("p03") == 2
    assert not [row for row in _faces_table(url) if row[1] == "p03"]


def _schema_1_sqlite_is_unchanged(url: str | None, tmp_path: Path) -> None:
    """On SQLite the step from schema 1 to 2 only records the new version: tables and rows stay as they were."""
    import sqlite3

    assert url is not None
    (tmp_path / "shared").mkdir()
    path = url.removeprefix("sqlite:///")
    with Gallery(tmp_path / "host", "m", DIM, db_url=url) as g:
        g.add_face("kept", _unit(np.random.default_rng(6))[0], _sha(1))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET schema_version = 1")
        schema = conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
        rows = conn.execute("SELECT * FROM faces").fetchall()
    with Gallery(tmp_path / "host", "m", DIM, db_url=url) as g:
        assert [p.name for p in g.people()] == ["kept"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT schema_version FROM meta").fetchall() == [(2,)]
        assert conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema
        assert conn.execute("SELECT * FROM faces").fetchall() == rows


def test_names_stay_unique_on_partitioned_people(backend: tuple[str, str | None], tmp_path: Path) -> None:
    """PostgreSQL cannot have UNIQUE (name) on people partitioned by id; a trigger refuses a duplicate from any
    writer, not only from the gallery's own code."""
    import psycopg

    kind, url = backend
    if kind != "postgresql":
        pytest.skip("SQLite keeps its UNIQUE (name) constraint")
    with Gallery(tmp_path / "host", "m", DIM, db_url=url) as g:
        g.add_face("only once", _unit(np.random.default_rng(5))[0], _sha(1))
    with pytest.raises(psycopg.errors.UniqueViolation):
        _sql(url, "INSERT INTO people (name, created_at, updated_at) VALUES ('only once', %s, %s)", _NOW, _NOW)
    _sql(url, "INSERT INTO people (name, created_at, updated_at) VALUES ('another', %s, %s)", _NOW, _NOW)
    with pytest.raises(psycopg.errors.UniqueViolation):
        _sql(url, "UPDATE people SET name = 'only once' WHERE name = 'another'")
