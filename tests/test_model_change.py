"""A gallery enrolled with an older model: its vectors cannot be compared with the current model's.

The product must say so (one warning line on stderr for list, identify, enroll and reenroll; counts in --json),
keep listing those people, and let them be re-enrolled — by name with `enroll`, or a folder with `reenroll` —
deleting their old vectors in the same transaction. The old faces are written through the Gallery API under the
model id "old"; everything else runs the CLI with the fake engine of test_cli (no real networks, never skips).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from gallery import Gallery
from tests.test_cli import (
    ALICE, BOB, CAROL, DAVE, ERIN, FAKE_CARD, FAKE_DIM, FakeEngine, fake, home, jsonl, one_error_line, photo, run,
)

__all__ = ["fake", "home"]  # fixtures, imported so pytest finds them here

OLD = "old"
WARNING = ("were enrolled with another model and cannot be recognised until re-enrolled: "
           "run `oneshot enroll --name NAME PHOTO` again or `oneshot reenroll DIR`")


def old_vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=FAKE_DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def blob(v: np.ndarray) -> bytes:
    """The vector as the gallery stores it."""
    from gallery.vectors import to_blob, unit_rows

    return to_blob(unit_rows(v, len(v))[0])


@pytest.fixture()
def old_gallery(home: Path) -> dict[str, list[np.ndarray]]:
    """alice (1 face), bob (2 faces) and carol (1 face) enrolled with model "old"; returns their old vectors."""
    vectors = {"alice": [old_vector(1)], "bob": [old_vector(2), old_vector(3)], "carol": [old_vector(4)]}
    with Gallery(home, OLD, FAKE_DIM) as g:
        for i, (name, rows) in enumerate(vectors.items()):
            for j, v in enumerate(rows):
                g.add_face(name, v, f"{10 * i + j:064x}")
        g.rebuild_index()                                  # the cache files hold the old model's vectors too
    return vectors


@pytest.fixture()
def shots(tmp_path: Path) -> Path:
    folder = tmp_path / "shots"
    photo(folder / "alice.png", (ALICE, 40, 30, 60))
    photo(folder / "bob.png", (BOB, 50, 40, 70))
    photo(folder / "bob.PNG", (BOB, 20, 20, 40))          # a second photo of bob (same stem)
    photo(folder / "carol.png")                            # no face in it
    photo(folder / "dave.png", (DAVE, 70, 20, 55))
    photo(folder / "erin.png", (ERIN, 60, 60, 50))
    (folder / "notes.txt").write_text("not a photo\n")
    return folder


def model_ids(home: Path, name: str) -> list[str]:
    with sqlite3.connect(home / "gallery.sqlite3") as conn:
        rows = conn.execute("SELECT f.model_id FROM faces f JOIN people p ON p.id = f.person_id WHERE p.name = ? "
                            "ORDER BY f.id", (name,)).fetchall()
    conn.close()
    return [row[0] for row in rows]


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


def test_list_counts_and_shows_people_of_another_model(fake: FakeEngine, home: Path, old_gallery: dict,
                                                       shots: Path) -> None:
    assert run("enroll", shots / "dave.png")[0] == 0
    code, out, err = run("list")
    assert code == 0
    assert warnings(err) == [f"warning: 3 people (4 faces) {WARNING}"] and len(err.splitlines()) == 1
    lines = out.splitlines()
    assert [line.split("  ")[0] for line in lines] == ["alice", "bob", "carol", "dave"]
    assert "not recognised: 2 photos from another model, re-enrol" in lines[1]
    assert "(1 photo; enrolled" in lines[3]

    code, out, err = run("list", "--json")
    assert code == 0 and len(warnings(err)) == 1 and "warning" not in out
    records = {r["name"]: r for r in jsonl(out)}
    assert [(r["current"], r["faces"], r["other_model_faces"]) for r in records.values()] == [
        (False, 0, 1), (False, 0, 2), (False, 0, 1), (True, 1, 0)]


def test_identify_warns_and_reports_the_count(fake: FakeEngine, home: Path, old_gallery: dict,
                                              shots: Path) -> None:
    code, out, err = run("identify", shots / "alice.png")
    assert code == 1 and out.startswith("unknown  (nobody is enrolled with the current model)")
    assert warnings(err) == [f"warning: 3 people (4 faces) {WARNING}"]
    code, out, err = run("identify", shots / "alice.png", "--json")
    assert code == 1 and len(warnings(err)) == 1
    record = jsonl(out)[0]
    assert record["name"] is None and (record["stale_people"], record["stale_faces"]) == (3, 4)


def test_no_warning_for_a_gallery_of_the_current_model(fake: FakeEngine, home: Path, shots: Path) -> None:
    code, _, err = run("enroll", shots / "dave.png")
    assert code == 0 and err == ""
    code, out, err = run("identify", shots / "dave.png", "--json")
    assert code == 0 and err == "" and jsonl(out)[0]["stale_people"] == 0
    assert run("list")[2] == ""


def test_enrolling_the_same_name_again_replaces_the_old_faces(fake: FakeEngine, home: Path, old_gallery: dict,
                                                              shots: Path) -> None:
    old_blobs = [blob(v) for v in old_gallery["bob"]]
    assert all(b in (home / "gallery.sqlite3").read_bytes() for b in old_blobs)      # positive control

    code, out, err = run("enroll", "--name", "bob", shots / "bob.png", "--json")
    assert code == 0
    record = jsonl(out)[0]
    assert record["status"] == "reenrolled" and record["replaced"] == 2 and record["faces"] == 1
    assert "deleting 2 faces made by another model" in record["message"]
    assert warnings(err) == [f"warning: 2 people (2 faces) {WARNING}"]                # alice and carol are left
    assert model_ids(home, "bob") == [FAKE_CARD["model_id"]]
    for path in home.iterdir():                                                      # gone from every file
        if path.is_file():
            assert not any(b in path.read_bytes() for b in old_blobs), path.name

    code, out, _ = run("identify", shots / "bob.PNG")
    assert code == 0 and out.startswith("bob  (distance")
    code, out, _ = run("list", "--json")
    bob = {r["name"]: r for r in jsonl(out)}["bob"]
    assert (bob["current"], bob["faces"], bob["other_model_faces"]) == (True, 1, 0)

    code, out, _ = run("enroll", "--name", "bob", shots / "bob.PNG")                 # nothing old left: added
    assert code == 0 and out.startswith("added") and "another model" not in out


def test_mixed_people_are_counted_apart(fake: FakeEngine, home: Path, old_gallery: dict, shots: Path) -> None:
    with Gallery(home, FAKE_CARD["model_id"], FAKE_DIM) as g:                        # carol has both now
        g.add_face("carol", old_vector(99), "f" * 64)
    code, _, err = run("list")
    assert code == 0 and warnings(err) == [
        "warning: 3 people (4 faces) were enrolled with another model; 2 of them cannot be recognised until "
        "re-enrolled: run `oneshot enroll --name NAME PHOTO` again or `oneshot reenroll DIR`"]


def test_reenroll_a_folder(fake: FakeEngine, home: Path, old_gallery: dict, shots: Path) -> None:
    assert run("enroll", shots / "dave.png")[0] == 0
    code, out, err = run("reenroll", shots, "--json")
    assert code == 1                                       # carol's photo has no face: a refused photo
    records = {Path(r["photo"]).name: r for r in jsonl(out)}
    assert sorted(records) == ["alice.png", "bob.PNG", "bob.png", "carol.png", "dave.png", "erin.png"]
    assert (records["alice.png"]["status"], records["alice.png"]["replaced"]) == ("reenrolled", 1)
    assert (records["bob.PNG"]["status"], records["bob.PNG"]["replaced"]) == ("reenrolled", 2)   # sorted first
    assert records["bob.png"]["status"] == "added" and records["bob.png"]["faces"] == 2
    assert records["carol.png"]["status"] == "refused" and "no face" in records["carol.png"]["message"]
    assert records["dave.png"]["status"] == "skipped" and records["erin.png"]["status"] == "skipped"
    assert warnings(err) == [f"warning: 1 person (1 face) {WARNING.replace('were', 'was')}"]
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [
        f"error: {shots / 'carol.png'}: no face found"]
    assert model_ids(home, "alice") == model_ids(home, "bob")[:1] == [FAKE_CARD["model_id"]]
    assert model_ids(home, "carol") == [OLD] and model_ids(home, "dave") == [FAKE_CARD["model_id"]]
    assert not any(b in (home / "gallery.sqlite3").read_bytes() for v in old_gallery["bob"] for b in [blob(v)])

    photo(shots / "carol.png", (CAROL, 30, 70, 45))
    code, out, err = run("reenroll", shots)                 # the rest: carol; everyone else is skipped
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 6 and sum(line.startswith("skipped ") for line in lines) == 5
    assert f"re-enrolled 'carol' from {shots / 'carol.png'} with the current model, deleting 1 face" in out
    assert f"skipped {shots / 'erin.png'}: nobody named 'erin' holds faces of another model" in out
    assert run("list")[2] == ""


def test_reenroll_bad_folders(fake: FakeEngine, home: Path, old_gallery: dict, tmp_path: Path,
                              shots: Path) -> None:
    for folder, problem in ((tmp_path / "nowhere", "no such directory"), (shots / "alice.png", "not a directory")):
        code, out, err = run("reenroll", folder)
        assert code == 2 and out == "" and problem in one_error_line(err) and str(folder) in err
    (tmp_path / "empty").mkdir()
    code, _, err = run("reenroll", tmp_path / "empty")
    assert code == 2 and "no photos" in one_error_line(err)
    assert model_ids(home, "bob") == [OLD, OLD]


def test_reenroll_without_a_gallery_creates_nothing(fake: FakeEngine, tmp_path: Path, shots: Path) -> None:
    home = tmp_path / "fresh"
    code, out, err = run("--home", home, "reenroll", shots)
    assert code == 0 and err == "" and all(line.startswith("skipped ") for line in out.splitlines())
    assert not home.exists()


def test_service_api(fake: FakeEngine, home: Path, old_gallery: dict, shots: Path) -> None:
    from enroll.service import OneShot

    photo(shots / "bell\x07.png", (ALICE, 10, 10, 50))    # a stem that is no valid name: skipped, not an error
    (shots / ".alice.png").write_bytes((shots / "alice.png").read_bytes())             # hidden: not a photo
    with OneShot(home) as oneshot:
        stale = oneshot.stale_faces()
        assert stale is not None and (stale.people, stale.faces, stale.unrecognisable) == (3, 4, 3)
        results = {Path(r.photo).name: r for r in oneshot.reenroll(shots)}
        assert ".alice.png" not in results and "notes.txt" not in results
        assert results["bell\x07.png"].status == "skipped" and "not a valid name" in results["bell\x07.png"].message
        assert results["alice.png"].ok and results["alice.png"].replaced == 1
        assert [p.name for p in oneshot.people() if not p.current] == ["carol"]
    with OneShot(home / "nothing-here") as empty:
        assert empty.stale_faces() is None and not (home / "nothing-here").exists()


def test_reenroll_help(fake: FakeEngine) -> None:
    code, out, _ = run("reenroll", "--help")
    assert code == 0 and "DIR" in out and "another model" in out
    assert "reenroll" in run("--help")[1]
