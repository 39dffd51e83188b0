"""The edges issue 32 found by hostile testing, each through the path a user takes (CLI in process with the fake
face engine of test_cli, or the Gallery API), with real SQLite and real FAISS:

1. two concurrent enrolments of one face under two names: only one may succeed (check and insert in one write
   transaction);
2. temporary files a crashed write leaves behind are erased with the person;
3. a 0-byte database, a regular file or "" as the home, another program's SQLite file: clear errors (exit 2), the
   file untouched, never a silent new gallery;
4. usage errors are one `error:` line; a newline in a file name does not split a message; a read-only gallery can
   still be read.
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from enroll.service import OneShot
from gallery import DB_FILE, SLOTS_FILE, Gallery, GalleryError
from tests.test_cli import ALICE, BOB, FakeEngine, fake, home, one_error_line, photo, run, snapshot  # noqa: F401

DIM = 16


def _sha(i: int) -> str:
    return f"{i:064x}"


# -- 1. the look-alike guard does not race ------------------------------------------------------------------------


def test_concurrent_enrolments_of_one_face_under_two_names(fake: FakeEngine, home: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Both enrolments pause inside Gallery.add_face, after their look-alike check: without one write transaction
    around check and insert, both pass the check on an empty gallery and both are stored."""
    first = photo(tmp_path / "a" / "anna.png", (ALICE, 40, 30, 60))
    second = photo(tmp_path / "b" / "hanna.png", (ALICE, 42, 30, 60))   # the same face, another photo
    original = Gallery.add_face

    def slow_add_face(self: Gallery, *args: object, **kwargs: object) -> tuple[int, bool]:
        time.sleep(0.5)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Gallery, "add_face", slow_add_face)
    results: dict[str, str] = {}

    def enrol(path: Path) -> None:
        with OneShot(home) as service:
            results[path.stem] = service.enroll_one(path).status

    threads = [threading.Thread(target=enrol, args=(p,)) for p in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results.values()) == ["enrolled", "refused"], results
    with OneShot(home) as service:
        assert len(service.people()) == 1


# -- 2. erasure covers temporary files ------------------------------------------------------------------------------


def test_remove_erases_temporary_files_a_crash_left(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vector = rng.normal(size=DIM).astype(np.float32)
    vector /= np.linalg.norm(vector)
    with Gallery(tmp_path, "m", DIM) as g:
        g.add_face("victim", vector, _sha(1))
        g.add_face("other", rng.normal(size=DIM), _sha(2))
    # what a crash in the middle of an atomic write leaves: a temp copy holding the vector
    leftovers = [tmp_path / ".index.faiss.k2j4x9.tmp", tmp_path / f".{SLOTS_FILE}.a8b7c6.tmp",
                 tmp_path / ".index.json.zz1.tmp"]
    for path in leftovers:
        path.write_bytes(b"header" + vector.astype("<f4").tobytes())
    with Gallery(tmp_path, "m", DIM) as g:
        assert g.remove_person("victim") == 1
    assert not [p.name for p in leftovers if p.exists()]
    needle = vector.astype("<f4").tobytes()[:16]
    assert not [p.name for p in tmp_path.iterdir() if p.is_file() and needle in p.read_bytes()]


# -- 3. homes and databases that are not ours -------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["list"], ["identify", "PHOTO"], ["enroll", "PHOTO"], ["remove", "x"]])
def test_zero_byte_database_is_an_error_not_a_new_gallery(fake: FakeEngine, home: Path, tmp_path: Path,
                                                          command: list[str]) -> None:
    face = photo(tmp_path / "alice.png", (ALICE, 40, 30, 60))
    home.mkdir()
    (home / DB_FILE).write_bytes(b"")
    code, _, err = run(*[str(face) if c == "PHOTO" else c for c in command])
    assert code == 2 and "empty (0-byte)" in one_error_line(err)
    assert sorted(p.name for p in home.iterdir()) == [DB_FILE] and (home / DB_FILE).stat().st_size == 0


@pytest.mark.parametrize("command", [["list"], ["identify", "PHOTO"], ["enroll", "PHOTO"]])
def test_regular_file_or_empty_string_as_home(fake: FakeEngine, tmp_path: Path, command: list[str]) -> None:
    face = photo(tmp_path / "alice.png", (ALICE, 40, 30, 60))
    args = [str(face) if c == "PHOTO" else c for c in command]
    not_a_dir = tmp_path / "notes.txt"
    not_a_dir.write_text("my notes\n")
    code, _, err = run("--home", not_a_dir, *args)
    assert code == 2 and "not a directory" in one_error_line(err)
    assert not_a_dir.read_text() == "my notes\n"
    before = sorted(os.listdir(tmp_path))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code, _, err = run("--home", "", *args)
    finally:
        os.chdir(cwd)
    assert code == 2 and "empty path" in one_error_line(err)
    assert sorted(os.listdir(tmp_path)) == before    # nothing created in the current directory


def test_another_programs_sqlite_file_is_left_alone(fake: FakeEngine, home: Path, tmp_path: Path) -> None:
    home.mkdir()
    with sqlite3.connect(home / DB_FILE) as conn:
        conn.execute("CREATE TABLE recipes (name TEXT)")
        conn.execute("INSERT INTO recipes VALUES ('bread')")
    conn.close()
    before = snapshot(home)
    face = photo(tmp_path / "alice.png", (ALICE, 40, 30, 60))
    for args in (["list"], ["enroll", str(face)], ["identify", str(face)]):
        code, _, err = run(*args)
        assert code == 2 and "not a oneshot gallery" in one_error_line(err)
    assert snapshot(home) == before


# -- 4. messages and read-only galleries ------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["enroll"], ["--bogus"], ["list", "--bogus"], ["frobnicate"],
                                  ["verify", "one.jpg"]])
def test_usage_errors_are_one_error_line(args: list[str]) -> None:
    code, out, err = run(*args)
    assert code == 2 and out == ""
    one_error_line(err)


def test_newline_in_a_file_name_does_not_split_messages(fake: FakeEngine, home: Path, tmp_path: Path) -> None:
    odd = photo(tmp_path / "ali\nce.png", (ALICE, 40, 30, 60))
    missing = tmp_path / "gh\nost.png"
    code, out, err = run("enroll", "--name", "alice", odd, missing)
    assert code == 2
    assert one_error_line(err).endswith("gh\\nost.png: no such file")
    assert out.count("\n") == 2 and "ali\\nce.png" in out   # the enrolment line, then the summary line
    code, out, err = run("identify", odd, missing)
    assert err.count("\n") == 1 and out.count("\n") == 1 and "ali\\nce.png: alice" in out


def _read_only(home: Path) -> "Callable[[], None]":
    """Make the gallery unwritable for this process (555 home, 400 database; as root, whom permissions do not stop,
    the immutable attribute instead) and return the undo."""
    if os.geteuid() != 0:
        os.chmod(home / DB_FILE, 0o400)
        os.chmod(home, 0o555)

        def undo() -> None:
            os.chmod(home, 0o755)
            os.chmod(home / DB_FILE, 0o600)
        return undo
    targets = [str(home / DB_FILE), str(home)]
    done = subprocess.run(["chattr", "+i", *targets], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"running as root, and `chattr +i` is unavailable here ({done.stderr.strip()}), so nothing "
                    "can be made read-only for this test")
    return lambda: subprocess.run(["chattr", "-i", *targets], check=True)


def test_read_only_gallery_can_be_read(fake: FakeEngine, home: Path, tmp_path: Path) -> None:
    face = photo(tmp_path / "alice.png", (ALICE, 40, 30, 60))
    other = photo(tmp_path / "bob.png", (BOB, 40, 30, 60))
    assert run("enroll", face, other)[0] == 0
    (home / "index.json").unlink()             # a stale cache: reading must cope without writing it
    undo = _read_only(home)
    try:
        before = snapshot(home)
        code, out, _ = run("identify", face)
        assert code == 0 and out.startswith("alice")
        assert run("list")[0] == 0
        code, _, err = run("remove", "alice")
        assert code == 2 and "read-only" in one_error_line(err)
        assert snapshot(home) == before
    finally:
        undo()


def test_truncated_database_is_reported_at_open_without_a_full_scan(tmp_path: Path) -> None:
    """The cheap header check that replaced `PRAGMA quick_check` on every open still catches a truncated file."""
    rng = np.random.default_rng(1)
    with Gallery(tmp_path, "m", DIM) as g:
        for i in range(300):
            g.add_face(f"p{i}", rng.normal(size=DIM), _sha(i))
    data = (tmp_path / DB_FILE).read_bytes()
    (tmp_path / DB_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(GalleryError, match="corrupt .*truncated"):
        Gallery(tmp_path, "m", DIM)
    assert (tmp_path / DB_FILE).stat().st_size == len(data) // 2


# -- bulk enrolment --------------------------------------------------------------------------------------------------


def test_enrol_a_folder_recursively_in_batches_with_a_summary(fake: FakeEngine, home: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_cli import CAROL

    folder = tmp_path / "photos"
    photo(folder / "alice.png", (ALICE, 40, 30, 60))
    photo(folder / "bob" / "1.png", (BOB, 40, 30, 60))
    photo(folder / "bob" / "2.png", (BOB, 50, 40, 50))
    photo(folder / "carol" / "deep" / "x.png", (CAROL, 40, 30, 60))
    photo(folder / "empty_room.png")
    photo(folder / "group.png", (ALICE, 10, 10, 70), (BOB, 120, 20, 40))
    photo(folder / ".hidden.png", (ALICE, 40, 30, 60))
    photo(folder / ".cache" / "thumb.png", (ALICE, 40, 30, 60))
    (folder / "notes.txt").write_text("not a photo")
    calls: list[int] = []
    embed = FakeEngine.face_embeddings

    def counted(self: FakeEngine, crops: list) -> np.ndarray:   # type: ignore[type-arg]
        calls.append(len(crops))
        return embed(self, crops)

    monkeypatch.setattr(FakeEngine, "face_embeddings", counted)
    code, out, err = run("enroll", folder)
    assert code == 1     # two photos refused
    assert calls == [4]  # the four usable photos in one network call
    assert "enrolled 'alice'" in out and "enrolled 'bob'" in out and "added" in out and "enrolled 'carol'" in out
    assert out.splitlines()[-1] == ("summary: 6 photos: 1 added, 3 enrolled, 1 refused: no face, "
                                    "1 refused: several faces")
    assert err.count("error:") == 2
    code, out, _ = run("list")
    assert [line.split()[0] for line in out.splitlines()] == ["alice", "bob", "carol"]
    assert "(2 photos" in out.splitlines()[1]
    code, out, _ = run("enroll", folder / "group.png", "--json")
    assert code == 1 and json_reason(out) == "several faces"


def json_reason(out: str) -> str:
    import json

    return json.loads(out.splitlines()[0])["reason"]


def test_enrol_a_folder_without_photos(fake: FakeEngine, home: Path, tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "readme.txt").write_text("hi")
    code, _, err = run("enroll", tmp_path / "nothing")
    assert code == 2 and "no photos in it" in one_error_line(err)
    assert not (home / DB_FILE).exists()


def test_a_refused_photo_does_not_invalidate_the_cache(fake: FakeEngine, home: Path, tmp_path: Path) -> None:
    """A refusal rolls back its (empty) write transaction; the cache, untouched, must stay valid (no rebuild)."""
    photo(tmp_path / "alice.png", (ALICE, 40, 30, 60))
    photo(tmp_path / "twin.png", (ALICE, 44, 30, 60))
    assert run("enroll", tmp_path / "alice.png")[0] == 0
    meta = (home / "index.json").read_bytes()
    assert run("enroll", tmp_path / "twin.png")[0] == 1
    assert (home / "index.json").read_bytes() == meta
