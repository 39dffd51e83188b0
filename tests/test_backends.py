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
    SQLite's secure_delete zeroes freed pages; on PostgreSQL, remove runs VACUUM FULL on both tables, which writes
    them into new files, and we read those files back through pg_read_binary_file."""
    kind, url = backend
    (tmp_path / "shared").mkdir()
    rng = np.random.default_rng(2)
    name, vector = "Zebulon Erasure", _unit(rng)[0]
    with Gallery(tmp_path / "host", "m", DIM, db_url=url) as g:
        g.add_face("keeper", _unit(rng)[0], _sha(1))
        g.add_face(name, vector, _sha(0xE0))
        needles = [name.encode(), to_blob(unit_rows(vector, DIM)[0]), _sha(0xE0).encode()]
        assert all(n in _database_bytes(kind, url) for n in needles)   # positive control
        g.remove_person(name)
    stored = _database_bytes(kind, url)
    assert b"keeper" in stored
    assert not [n for n in needles if n in stored]


def _database_bytes(kind: str, url: str | None) -> bytes:
    """Every byte of the gallery's tables as stored on disk."""
    assert url is not None
    if kind == "sqlite":
        return Path(url.removeprefix("sqlite:///")).read_bytes()
    import psycopg

    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("CHECKPOINT")   # flush shared buffers to the relation files we read
        out = b""
        for table in ("faces", "people"):
            for rel in (table, f"(SELECT reltoastrelid FROM pg_class WHERE relname = '{table}')"):
                path = conn.execute(f"SELECT pg_relation_filepath({rel if rel != table else repr(table)})"
                                    ).fetchone()[0]
                if path:
                    size = conn.execute("SELECT (pg_stat_file(%s)).size", (path,)).fetchone()[0]
                    if size:
                        out += conn.execute("SELECT pg_read_binary_file(%s)", (path,)).fetchone()[0]
        return out
