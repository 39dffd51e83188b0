"""The `oneshot` CLI as a user meets it: every command, exit code and bad-input case of the issue.

Two ways in:

* typer's CliRunner, in process, with a *fake* face engine (faces are coloured squares; a colour is a person), so
  the enrolment rules, JSON shapes and exit codes are tested exactly and without models or datasets: never skips;
* the installed `oneshot` console script in a real subprocess, with the real models: every bad-input case (these
  need no faces, never skip) and a tour on real LFW photos (skips, saying why, without weights or dataset).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from embedder.photo import load_photo
from embedder.types import Face
from enroll import cli, service
from enroll.service import OneShot, default_home

# -- a fake engine: faces are solid squares on a grey background; the square's colour is the person -------------

BACKGROUND = (128, 128, 128)
FAKE_DIM = 64
FAKE_CARD: dict[str, Any] = {
    "model_id": "fake-model-0001", "dim": FAKE_DIM, "input_size": 112, "loss": "triplet", "margin": 0.3,
    "threshold": 0.9, "data": "synthetic squares", "steps": 0, "metrics": {"lfw_accuracy": 0.5},
    "roc": {"distance": [0.2, 0.5, 0.8, 1.0, 1.2], "far": [0.0, 0.0, 0.001, 0.01, 0.1],
            "tar": [0.2, 0.7, 0.9, 0.95, 0.99]},
    "base_network": {"network": "fake-net-0001", "source": "a test", "licence": "Apache-2.0"},
    "changes": "the last stage fine-tuned with the triplet loss",
}
ALICE, BOB, CAROL, DAVE, ERIN = (200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)


class FakeEngine:
    """The shape of `embedder`'s flat API; photos are read with the real `load_photo`."""

    def __init__(self) -> None:
        self.fail_detection = False

    load_photo = staticmethod(load_photo)

    def detect_faces(self, image: Image.Image) -> list[Face]:
        if self.fail_detection:
            raise RuntimeError("detector exploded")
        pixels = np.asarray(image)
        faces = []
        for colour in {tuple(c) for c in pixels.reshape(-1, 3).tolist()} - {BACKGROUND}:
            ys, xs = np.nonzero(np.all(pixels == colour, axis=2))
            x1, y1, x2, y2 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
            w, h = x2 - x1, y2 - y1
            marks = ((x1 + w * .3, y1 + h * .4), (x1 + w * .7, y1 + h * .4), (x1 + w * .5, y1 + h * .6),
                     (x1 + w * .35, y1 + h * .8), (x1 + w * .65, y1 + h * .8))
            faces.append(Face((x1, y1, x2, y2), 0.99, marks))
        return sorted(faces, key=lambda f: -f.area)

    def aligned_faces(self, image: Image.Image, faces: Sequence[Face]) -> list[tuple[tuple[int, ...], tuple]]:
        centre = [(int((f.box[0] + f.box[2]) / 2), int((f.box[1] + f.box[3]) / 2)) for f in faces]
        return [(image.getpixel(c), f.box) for c, f in zip(centre, faces)]

    def face_embeddings(self, crops: Sequence[tuple[tuple[int, ...], tuple]]) -> np.ndarray:
        rows = []
        for colour, box in crops:
            person = np.random.default_rng(list(colour)).normal(size=FAKE_DIM)
            person /= np.linalg.norm(person)
            photo = np.random.default_rng([int(v) for v in box]).normal(size=FAKE_DIM) * 0.02
            row = person + photo
            rows.append(row / np.linalg.norm(row))
        return np.array(rows, dtype=np.float32).reshape(-1, FAKE_DIM)

    def enrolment_problem(self, image: Image.Image, face: Face) -> str | None:
        return "face too small to enrol (fake)" if face.box[2] - face.box[0] < 8 else None

    def model_card(self) -> dict[str, Any]:
        return FAKE_CARD

    def model_id(self) -> str:
        return FAKE_CARD["model_id"]


def photo(path: Path, *faces: tuple[tuple[int, int, int], int, int, int], size: tuple[int, int] = (200, 150)) -> Path:
    """A PNG with a square "face" per (colour, x, y, side); PNG so colours survive exactly."""
    image = Image.new("RGB", size, BACKGROUND)
    for colour, x, y, side in faces:
        image.paste(colour, (x, y, x + side, y + side))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    engine = FakeEngine()
    monkeypatch.setattr(service, "default_engine", lambda: engine)
    return engine


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own gallery home, through $ONESHOT_HOME (the --home flag is tested separately)."""
    path = tmp_path / "home"
    monkeypatch.setenv("ONESHOT_HOME", str(path))
    return path


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    photo(folder / "alice.png", (ALICE, 40, 30, 60))
    photo(folder / "alice2.png", (ALICE, 90, 50, 50))
    photo(folder / "IMG_0042.png", (BOB, 50, 40, 70))
    photo(folder / "bob2.png", (BOB, 20, 20, 40))
    photo(folder / "carol2.png", (CAROL, 30, 70, 45))
    photo(folder / "stranger.png", (ERIN, 60, 60, 50))
    photo(folder / "staff" / "carol.png", (CAROL, 10, 10, 80))
    photo(folder / "staff" / "dave.png", (DAVE, 70, 20, 55))
    photo(folder / "group.png", (ALICE, 10, 10, 70), (BOB, 120, 20, 40))
    photo(folder / "empty_room.png")
    return folder


Result = tuple[int, str, str]


def run(*args: str | Path) -> Result:
    """Run the CLI in process; returns (exit code, stdout, stderr)."""
    result = CliRunner().invoke(cli.app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under a gallery home: proves "the gallery is unchanged"."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


# -- bad photos, made without any face ---------------------------------------------------------------------------


def make_bad_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("definitely not a photo\n" * 10)
    (folder / "a_directory").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(folder / "whole.jpg", quality=95)
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    Image.new("L", (8, 8)).save(folder / "huge.png")
    header = bytearray((folder / "huge.png").read_bytes())
    header[16:24] = struct.pack(">II", 30000, 30000)
    header[29:33] = struct.pack(">I", zlib.crc32(bytes(header[12:29])) & 0xFFFFFFFF)
    (folder / "huge.png").write_bytes(bytes(header))
    return {
        "missing": folder / "missing.jpg",
        "directory": folder / "a_directory",
        "empty": folder / "empty.jpg",
        "truncated": folder / "truncated.jpg",
        "text": folder / "notes.jpg",
        "huge": folder / "huge.png",
    }


BAD_KINDS = {
    "missing": "no such file", "directory": "directory", "empty": "empty", "truncated": "truncated",
    "text": "not an image", "huge": "too large",
}
BAD_NAMES = ["", "   ", "x" * 201, "staff/alice", "back\\slash", "new\nline", "nul\x00byte", "bell\x07"]


# ================================================================================================================
# In process (CliRunner) with the fake engine
# ================================================================================================================


def test_help_documents_commands_and_exit_codes() -> None:
    code, out, _ = run("--help")
    assert code == 0
    for command in ("enroll", "identify", "verify", "list", "remove", "model"):
        assert command in out
    assert "Exit codes" in out and "open_door" in out
    for number in ("0  success", "1  a negative answer", "2  bad input", "3  an internal error"):
        assert number in out
    code, out, _ = run("identify", "--help")
    assert code == 0 and "--json" in out


def test_usage_errors_exit_2() -> None:
    assert run()[0] in (0, 2)                  # no arguments shows help
    assert run("identify")[0] == 2             # missing PHOTO
    assert run("no-such-command")[0] == 2
    assert run("list", "--bogus")[0] == 2


def test_the_tour(fake: FakeEngine, home: Path, photos: Path) -> None:
    code, out, err = run("enroll", photos / "alice.png")
    assert code == 0 and "enrolled 'alice'" in out and err == ""

    code, out, _ = run("enroll", "--name", "Bob Lee", photos / "IMG_0042.png")
    assert code == 0 and "enrolled 'Bob Lee'" in out

    code, out, _ = run("enroll", *sorted((photos / "staff").glob("*.png")))
    assert code == 0 and "enrolled 'carol'" in out and "enrolled 'dave'" in out

    code, out, _ = run("identify", photos / "alice2.png")
    assert code == 0
    assert out.startswith("alice  (distance ") and "threshold" in out

    code, out, _ = run("identify", photos / "stranger.png")
    assert code == 1 and out.startswith("unknown")

    code, out, _ = run("identify", photos / "alice2.png", photos / "carol2.png", "--json")
    assert code == 0
    first, second = jsonl(out)
    assert first["photo"] == str(photos / "alice2.png") and first["name"] == "alice"
    assert second["name"] == "carol"
    assert set(first) >= {"photo", "faces", "name", "distance", "threshold", "box"}
    assert first["faces"][0]["name"] == "alice" and len(first["faces"][0]["box"]) == 4
    assert first["distance"] < first["threshold"]

    code, out, _ = run("verify", photos / "alice.png", photos / "alice2.png")
    assert code == 0 and out.startswith("yes")
    code, out, _ = run("verify", photos / "alice.png", photos / "bob2.png")
    assert code == 1 and out.startswith("no")
    code, out, err = run("verify", photos / "alice.png", photos / "empty_room.png", "--json")
    assert code == 1 and "no face found" in one_error_line(err) and jsonl(out)[0]["same"] is None

    code, out, _ = run("list")
    assert code == 0 and [line.split("  ")[0] for line in out.splitlines()] == ["Bob Lee", "alice", "carol", "dave"]
    code, out, _ = run("list", "--json")
    assert [p["name"] for p in jsonl(out)] == ["Bob Lee", "alice", "carol", "dave"]

    code, out, _ = run("remove", "Bob Lee")
    assert code == 0 and "removed 'Bob Lee'" in out
    code, out, _ = run("identify", photos / "bob2.png", "--json")
    assert code == 1 and jsonl(out)[0]["name"] is None
    assert "Bob Lee" not in run("list")[1]


def test_model_command(fake: FakeEngine, home: Path) -> None:
    code, out, _ = run("model")
    assert code == 0
    for field in ("fake-model-0001", "triplet loss, margin 0.3", "threshold", "lfw_accuracy", "τ(N)", "N =  10,000",
                  "fake-net-0001 (a test), Apache-2.0", "the last stage fine-tuned"):
        assert field in out, field
    code, out, _ = run("model", "--json")
    info = jsonl(out)[0]
    assert info["threshold"] == 0.9 and info["loss"] == "triplet"
    taus = [row["threshold"] for row in info["thresholds"]]
    assert taus == sorted(taus, reverse=True) and taus[-1] < taus[0]      # bigger gallery, stricter threshold
    assert not home.exists()                                               # showing the model creates nothing


class BackedCardEngine(FakeEngine):
    """The fake engine with a card that records how many impostor pairs its ROC rests on (newer cards do)."""

    CARD = {**FAKE_CARD, "roc": {**FAKE_CARD["roc"], "impostor_pairs": 100_000}}

    def model_card(self) -> dict[str, Any]:
        return self.CARD


def test_model_command_says_how_far_the_data_back_tau(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    # 3 / 100,000 = 3e-5 per comparison; FPIR 1 %: N ≤ ln(0.99) / ln(1 − 3e-5) = 335.0 → backed up to 335 people.
    monkeypatch.setattr(service, "default_engine", BackedCardEngine)
    code, out, _ = run("model")
    assert code == 0
    assert ("FPIR 1 % target backed by held-out data (100,000 impostor pairs) up to N = 335 people; "
            "beyond that τ(N) is extrapolated") in out
    rows = [line for line in out.splitlines() if line.startswith("  N = ")]
    assert [row.endswith("(extrapolated)") for row in rows] == [False, False, False, True, True, True]
    info = jsonl(run("model", "--json")[1])[0]
    assert info["backed_up_to"] == 335 and info["impostor_pairs"] == 100_000
    assert [row["extrapolated"] for row in info["thresholds"]] == [False, False, False, True, True, True]
    taus = [row["threshold"] for row in info["thresholds"]]
    assert taus[2] > taus[3] > taus[4] > taus[5] > 0                     # still tightening past the backed size


def test_model_command_with_an_older_card(fake: FakeEngine, home: Path) -> None:
    code, out, _ = run("model")
    assert code == 0 and "does not record how many impostor pairs" in out and "(extrapolated)" not in out
    info = jsonl(run("model", "--json")[1])[0]
    assert info["backed_up_to"] is None and all(row["extrapolated"] is None for row in info["thresholds"])


def test_identify_every_face_largest_first(fake: FakeEngine, home: Path, photos: Path) -> None:
    run("enroll", photos / "alice.png")
    code, out, _ = run("identify", photos / "group.png", "--json")
    assert code == 0                                   # the photo's answer is its largest face; bob is a bystander
    result = jsonl(out)[0]
    assert [f["name"] for f in result["faces"]] == ["alice", None]
    assert result["name"] == "alice" and result["box"] == result["faces"][0]["box"]
    assert result["distance"] == result["faces"][0]["distance"]
    code, out, _ = run("identify", photos / "bob2.png", photos / "group.png")
    assert code == 1                                   # any photo whose (largest) face is unknown
    areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in result["faces"]]
    assert areas == sorted(areas, reverse=True)
    run("enroll", photos / "IMG_0042.png", "--name", "bob")
    code, out, _ = run("identify", photos / "group.png")
    assert code == 0 and "alice" in out and "bob" in out and "face 1 of 2" in out


def test_identify_photo_without_a_face(fake: FakeEngine, home: Path, photos: Path) -> None:
    run("enroll", photos / "alice.png")
    code, out, _ = run("identify", photos / "empty_room.png", "--json")
    assert code == 1
    result = jsonl(out)[0]
    assert result["faces"] == [] and result["name"] is None
    code, out, _ = run("identify", photos / "empty_room.png")
    assert code == 1 and "no face found" in out


def test_identify_against_an_empty_gallery_creates_nothing(fake: FakeEngine, home: Path, photos: Path) -> None:
    code, out, _ = run("identify", photos / "alice.png")
    assert code == 1 and "unknown" in out and "nobody is enrolled" in out
    assert not home.exists()


def test_enrol_rules(fake: FakeEngine, home: Path, photos: Path) -> None:
    code, _, err = run("enroll", photos / "empty_room.png")
    assert code == 1 and "no face found" in one_error_line(err)

    code, _, err = run("enroll", photo(photos / "tiny.png", (ALICE, 50, 50, 5)))
    assert code == 1 and "too small to enrol" in one_error_line(err)
    assert run("list", "--json")[1] == ""

    code, _, err = run("enroll", photos / "group.png")
    assert code == 1 and "2 faces" in one_error_line(err) and "--largest" in err
    assert run("list", "--json")[1] == ""

    code, out, _ = run("enroll", photos / "group.png", "--largest")
    assert code == 0 and "enrolled 'group'" in out

    code, out, _ = run("enroll", photos / "alice2.png", "--name", "group")
    assert code == 0 and "added" in out and "2 photos" in out

    before = snapshot(home)
    code, out, err = run("enroll", photos / "alice2.png", "--name", "group", "--json")
    assert code == 0 and err == ""
    record = jsonl(out)[0]
    assert record["status"] == "duplicate" and record["faces"] == 2 and "already enrolled" in record["message"]
    assert snapshot(home)["gallery.sqlite3"] == before["gallery.sqlite3"]

    # alice's face is already enrolled as "group": enrolling it as "alice" is refused, naming "group".
    code, _, err = run("enroll", photos / "alice.png")
    assert code == 1 and "'group'" in one_error_line(err) and "--force" in err
    assert [p["name"] for p in jsonl(run("list", "--json")[1])] == ["group"]

    code, out, _ = run("enroll", photos / "alice.png", "--force")
    assert code == 0 and "enrolled 'alice'" in out and "--force" in out
    assert [p["name"] for p in jsonl(run("list", "--json")[1])] == ["alice", "group"]


def test_enrol_json(fake: FakeEngine, home: Path, photos: Path) -> None:
    code, out, _ = run("enroll", photos / "alice.png", photos / "empty_room.png", "--json")
    assert code == 1
    ok, refused = jsonl(out)
    assert ok["status"] == "enrolled" and ok["name"] == "alice" and ok["faces"] == 1 and len(ok["box"]) == 4
    assert refused["status"] == "refused" and "no face" in refused["message"]


@pytest.mark.parametrize("kind", sorted(BAD_KINDS))
def test_bad_photo_enroll_and_identify(fake: FakeEngine, home: Path, photos: Path, tmp_path: Path,
                                        kind: str) -> None:
    bad = make_bad_inputs(tmp_path / "bad")[kind]
    run("enroll", photos / "alice.png")
    before = snapshot(home)
    for command in ("enroll", "identify"):
        code, out, err = run(command, bad)
        assert code == 2, (command, kind, out, err)
        line = one_error_line(err)
        assert str(bad) in line and BAD_KINDS[kind] in line
    code, _, err = run("verify", bad, photos / "alice.png")
    assert code == 2 and BAD_KINDS[kind] in one_error_line(err)
    assert snapshot(home) == before


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names(fake: FakeEngine, home: Path, photos: Path, name: str) -> None:
    run("enroll", photos / "alice.png")
    before = snapshot(home)
    code, _, err = run("enroll", "--name", name, photos / "IMG_0042.png")
    assert code == 2 and "name" in one_error_line(err)
    code, _, err = run("remove", name)
    assert code == 2 and "name" in one_error_line(err)
    assert snapshot(home) == before


def test_bad_name_from_a_file_stem(fake: FakeEngine, home: Path, tmp_path: Path) -> None:
    path = photo(tmp_path / "bad\x07name.png", (ALICE, 10, 10, 50))
    code, _, err = run("enroll", path)
    assert code == 2 and "control character" in one_error_line(err)
    assert not home.exists()


def test_remove_unknown_name(fake: FakeEngine, home: Path, photos: Path) -> None:
    code, _, err = run("remove", "nobody")
    assert code == 2 and "'nobody'" in one_error_line(err)
    run("enroll", photos / "alice.png")
    before = snapshot(home)
    code, _, err = run("remove", "bob")
    assert code == 2 and "no person named 'bob'" in one_error_line(err)
    assert snapshot(home) == before


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupted_database(fake: FakeEngine, home: Path, photos: Path, damage: str) -> None:
    run("enroll", photos / "alice.png")
    run("enroll", photos / "IMG_0042.png")
    db = home / "gallery.sqlite3"
    if damage == "garbage":
        db.write_bytes(b"this is not a database" * 100)
    else:
        data = db.read_bytes()
        db.write_bytes(data[:100] + b"\xff" * (len(data) - 100))
    before = snapshot(home)
    for args in (["list"], ["identify", photos / "alice2.png"], ["enroll", photos / "carol2.png"],
                 ["remove", "alice"], ["model"]):
        code, _, err = run(*args)
        if args == ["model"]:
            assert code == 0                                           # the model card does not need the gallery
            continue
        assert code == 2, args
        assert "corrupt" in one_error_line(err) or "gallery database" in err
    assert snapshot(home) == before


def test_batch_enrol_continues_past_failures(fake: FakeEngine, home: Path, photos: Path, tmp_path: Path) -> None:
    bad = make_bad_inputs(tmp_path / "bad")
    batch = [photos / "alice.png", bad["truncated"], photos / "empty_room.png", bad["missing"],
             photos / "staff" / "carol.png"]
    code, out, err = run("enroll", *batch)
    assert code == 2                                                   # the worst outcome: bad input
    assert "enrolled 'alice'" in out and "enrolled 'carol'" in out
    errors = err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)
    assert "truncated" in errors[0] and "no face" in errors[1] and "no such file" in errors[2]
    assert [p["name"] for p in jsonl(run("list", "--json")[1])] == ["alice", "carol"]


def test_batch_identify_continues_past_failures(fake: FakeEngine, home: Path, photos: Path,
                                                tmp_path: Path) -> None:
    bad = make_bad_inputs(tmp_path / "bad")
    run("enroll", photos / "alice.png")
    before = snapshot(home)
    code, out, err = run("identify", photos / "alice2.png", bad["text"], photos / "stranger.png", "--json")
    assert code == 2
    good, broken, stranger = jsonl(out)
    assert good["name"] == "alice"
    assert broken["photo"] == str(bad["text"]) and broken["faces"] == [] and broken["name"] is None
    assert "not an image" in broken["error"]
    assert stranger["name"] is None and stranger["faces"][0]["distance"] > stranger["threshold"]
    assert "not an image" in one_error_line(err)
    code, out, _ = run("identify", photos / "alice2.png", photos / "stranger.png")
    assert code == 1 and f"{photos / 'alice2.png'}: alice" in out and f"{photos / 'stranger.png'}: unknown" in out
    assert snapshot(home) == before


def test_no_traceback_without_debug(fake: FakeEngine, home: Path, photos: Path) -> None:
    fake.fail_detection = True
    code, _, err = run("identify", photos / "alice.png")
    assert code == 3 and "internal error" in one_error_line(err) and "detector exploded" in err
    code, _, err = run("--debug", "identify", photos / "alice.png")
    assert code == 3 and "Traceback" in err and "detector exploded" in err


def test_internal_errors_exit_3(fake: FakeEngine, home: Path, photos: Path, tmp_path: Path) -> None:
    """A failing model is not the user's input: exit 3, one `error:` line; bad input in the same batch stays 2."""
    bad = make_bad_inputs(tmp_path / "bad")
    fake.fail_detection = True
    for args in (["enroll", photos / "alice.png"], ["verify", photos / "alice.png", photos / "alice2.png"],
                 ["identify", photos / "alice.png", "--json"]):
        code, _, err = run(*args)
        assert code == 3 and "internal error" in one_error_line(err) and "detector exploded" in err, args
    code, _, err = run("enroll", bad["missing"], photos / "alice.png")   # the worst outcome wins
    lines = err.strip().splitlines()
    assert code == 3 and len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert run("enroll", bad["missing"])[0] == 2                     # bad input is still 2, usage too
    assert run("identify")[0] == 2 and run("list", "--bogus")[0] == 2
    fake.fail_detection = False
    assert run("enroll", photos / "alice.png")[0] == 0


def test_model_unavailable_exits_3(fake: FakeEngine, home: Path, photos: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> dict[str, Any]:
        raise FileNotFoundError("model card not found")

    monkeypatch.setattr(fake, "model_card", missing)
    for args in (["model"], ["enroll", photos / "alice.png"]):
        code, _, err = run(*args)
        assert code == 3 and "reinstall oneshot" in one_error_line(err), args


def test_unexpected_exception_exits_3(fake: FakeEngine, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: service.OneShot) -> list[Any]:
        raise KeyError("oops")

    monkeypatch.setattr(service.OneShot, "iter_people", broken)
    code, _, err = run("list")
    assert code == 3 and "internal error: KeyError" in one_error_line(err) and "--debug" in err


def test_version() -> None:
    from enroll.version import installed_version

    code, out, _ = run("--version")
    assert code == 0 and out.strip() == f"oneshot {installed_version()}"
    assert re.fullmatch(r"oneshot (\d+(\.\d+)*\S*|unknown)", out.strip())
    assert "--version" in run("--help")[1]


def test_version_unknown_when_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert run("--version")[:2] == (0, "oneshot unknown\n")


def test_home_option_beats_the_environment(fake: FakeEngine, home: Path, photos: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert run("--home", other, "enroll", photos / "alice.png")[0] == 0
    assert (other / "gallery.sqlite3").is_file() and not home.exists()
    assert "alice" in run("--home", other, "list")[1]
    assert "nobody is enrolled" in run("list")[1]


def test_default_home() -> None:
    assert default_home({"ONESHOT_HOME": "/data/g", "XDG_DATA_HOME": "/x"}) == Path("/data/g")
    if sys.platform.startswith("linux"):
        assert default_home({"XDG_DATA_HOME": "/x"}) == Path("/x/oneshot")
        assert default_home({}) == Path.home() / ".local" / "share" / "oneshot"


def test_remove_leaves_no_trace(fake: FakeEngine, home: Path, photos: Path) -> None:
    """After `remove`, neither the name nor the bytes of any of their vectors remain in any file in the home."""
    name = "Zebulon Quistgaard"
    run("enroll", "--name", name, photos / "alice.png")
    run("enroll", "--name", name, photos / "alice2.png")
    run("enroll", photos / "IMG_0042.png", "--name", "bob")
    run("identify", photos / "alice2.png")                             # make sure an index file exists
    with sqlite3.connect(home / "gallery.sqlite3") as conn:
        blobs = [bytes(row[0]) for row in conn.execute(
            "SELECT vector FROM faces JOIN people ON people.id = faces.person_id WHERE people.name = ?", (name,))]
    conn.close()
    assert len(blobs) == 2
    assert run("remove", name)[0] == 0
    needles = [name.encode(), name.encode("utf-16-le")] + blobs + [blob[:16] for blob in blobs]
    for path in home.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for needle in needles:
                assert needle not in content, f"{needle[:20]!r} left in {path.name}"
    assert "bob" in run("list")[1]


def test_service_results_are_plain_dataclasses(fake: FakeEngine, home: Path, photos: Path) -> None:
    with OneShot(home) as oneshot:
        first, second = oneshot.enroll([photos / "alice.png", photos / "missing.png"])
        assert first.ok and first.status == "enrolled" and not second.ok and second.status == "invalid"
        (result,) = oneshot.identify([photos / "alice2.png"])
        assert result.name == "alice" and result.known and result.largest is not None
        assert oneshot.verify(photos / "alice.png", photos / "alice2.png").same is True
        assert [p.name for p in oneshot.people()] == ["alice"]
        assert oneshot.remove("alice").faces == 1
        assert oneshot.model_info().thresholds[0][0] == 1


# ================================================================================================================
# The installed console script, in a real subprocess, with the real models
# ================================================================================================================

WEIGHTS = Path(__file__).resolve().parent.parent / "embedder" / "weights"


def test_shipped_models_are_in_the_package() -> None:
    """The tour needs no download: the three networks, the card and their licence ship in git, so their absence is a
    failure, not a skip."""
    for name in ("embedder.pt", "embedder.json", "detector.pt", "landmarks.pt", "LICENSE", "NOTICE"):
        assert (WEIGHTS / name).is_file(), f"{name} missing from {WEIGHTS}"


def oneshot_command() -> list[str]:
    exe = shutil.which("oneshot")
    return [exe] if exe else [sys.executable, "-m", "enroll.cli"]


def sh(home: Path, *args: str | Path, timeout: float = 300) -> Result:
    env = {**os.environ, "ONESHOT_HOME": str(home)}
    done = subprocess.run([*oneshot_command(), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)
    return done.returncode, done.stdout, done.stderr


def test_console_script_is_installed() -> None:
    assert shutil.which("oneshot"), "the `oneshot` console script is not on PATH (pip install -e .)"


def test_subprocess_help_is_fast_and_lazy(tmp_path: Path) -> None:
    code, out, _ = sh(tmp_path, "--help")
    assert code == 0 and "Exit codes" in out
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "enroll.cli", "--help"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0
    heavy = [line for line in done.stderr.splitlines() if any(m in line for m in ("torch", "faiss", "sqlalchemy"))]
    assert heavy == [], heavy[:5]


def test_subprocess_usage_errors(tmp_path: Path) -> None:
    assert sh(tmp_path, "identify")[0] == 2
    assert sh(tmp_path, "frobnicate")[0] == 2
    assert sh(tmp_path, "verify", "only-one.jpg")[0] == 2


@pytest.mark.parametrize("kind", sorted(BAD_KINDS))
def test_subprocess_bad_photos(tmp_path: Path, kind: str) -> None:
    bad = make_bad_inputs(tmp_path / "bad")[kind]
    home = tmp_path / "home"
    for command in (["enroll"], ["identify"], ["identify", "--json"], ["verify", str(bad)]):
        code, _, err = sh(home, *command, bad)
        assert code == 2, (command, err)
        assert BAD_KINDS[kind] in one_error_line(err)
    assert snapshot(home) == {}


def test_subprocess_bad_names_and_unknown_person(tmp_path: Path) -> None:
    home = tmp_path / "home"
    target = photo(tmp_path / "x.png")
    for name in (n for n in BAD_NAMES if "\x00" not in n):           # a NUL cannot be passed in argv at all
        code, _, err = sh(home, "enroll", "--name", name, target)
        assert code == 2 and "name" in one_error_line(err), repr(name)
    code, _, err = sh(home, "remove", "nobody")
    assert code == 2 and "'nobody'" in one_error_line(err)
    code, out, _ = sh(home, "list")
    assert code == 0 and "nobody is enrolled" in out
    assert snapshot(home) == {}


def test_subprocess_batch_of_only_bad_photos(tmp_path: Path) -> None:
    bad = make_bad_inputs(tmp_path / "bad")
    code, out, err = sh(tmp_path / "home", "identify", "--json", *bad.values())
    assert code == 2
    assert len(jsonl(out)) == len(bad) and all(r["faces"] == [] and r["name"] is None for r in jsonl(out))
    assert len(err.strip().splitlines()) == len(bad) and "Traceback" not in err


def test_subprocess_corrupted_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "gallery.sqlite3").write_bytes(b"not a database at all" * 50)
    before = snapshot(home)
    for args in (["list"], ["remove", "alice"], ["list", "--json"]):
        code, _, err = sh(home, *args)
        assert code == 2 and "corrupt" in one_error_line(err)
    assert snapshot(home) == before


def test_subprocess_model(tmp_path: Path) -> None:
    code, out, err = sh(tmp_path / "home", "model")
    assert code == 0, err
    assert "threshold" in out and "τ(N)" in out
    info = jsonl(sh(tmp_path / "home", "model", "--json")[1])[0]
    assert 0 < info["threshold"] < 2
    assert "Apache-2.0" in info["base_network"] and "Apache-2.0" in out    # the licence travels with the weights
    assert info["changes"] and info["backed_up_to"] > 1000


# -- a real tour on LFW photos ------------------------------------------------------------------------------------


def lfw_people(count: int, min_photos: int = 2) -> list[list[Path]]:
    """The first `count` LFW people (alphabetically) with at least `min_photos` photos: a deterministic choice."""
    from train.data_paths import data_root

    root = data_root()
    if root is None:
        pytest.skip("LFW not found ($ONESHOT_DATA or ../shared/datasets/lfw)")
    by_person: dict[str, list[Path]] = {}
    for line in (root / "lfw" / "manifest.csv").read_text().splitlines()[1:]:
        rel, identity = line.rsplit(",", 1)
        by_person.setdefault(identity, []).append(root / "lfw" / rel)
    chosen = [sorted(paths) for _, paths in sorted(by_person.items()) if len(paths) >= min_photos]
    return chosen[:count]


def detectable_people(count: int) -> list[list[Path]]:
    """The first LFW people (alphabetically, ≥ 2 photos) whose first photo the shipped detector finds a face in.

    The tour tests the plumbing; whether the detector finds every LFW face is its own benchmark's business.
    """
    from embedder import detect_faces

    chosen = []
    for paths in lfw_people(200):
        if detect_faces(load_photo(paths[0])):
            chosen.append(paths)
            if len(chosen) == count:
                return chosen
    pytest.fail(f"the detector found a face in fewer than {count} of 200 LFW photos")


@pytest.mark.slow
def test_subprocess_tour_on_real_photos(tmp_path: Path) -> None:
    """The README tour with the real models. Identifications use the enrolled photos themselves (under other file
    names), so this tests the plumbing, not the model's accuracy (that is test_end_to_end and benchmarks/)."""
    (a_first, a_second), (b_first, _) = (p[:2] for p in detectable_people(2))
    home = tmp_path / "home"
    staff = tmp_path / "staff"
    staff.mkdir()
    alice, door, bob_again = staff / "alice.jpg", tmp_path / "door.jpg", tmp_path / "b.jpg"
    shutil.copy(a_first, alice)
    shutil.copy(a_first, door)
    shutil.copy(b_first, bob_again)

    code, out, err = sh(home, "enroll", "--largest", alice)
    assert code == 0 and out.startswith("enrolled 'alice'"), err
    code, out, err = sh(home, "enroll", "--largest", "--name", "Bob Lee", b_first)
    assert code == 0 and "enrolled 'Bob Lee'" in out, err
    code, out, err = sh(home, "enroll", "--largest", alice)                 # the same photo again
    assert code == 0 and "already enrolled" in out, err

    code, out, err = sh(home, "identify", door)
    assert code == 0 and "alice  (distance 0.0" in out.splitlines()[0], (out, err)
    blank = photo(tmp_path / "blank.png")
    tiny = photo(tmp_path / "tiny.png", size=(3, 2))
    code, out, err = sh(home, "identify", "--json", door, bob_again, blank, tiny, a_second)
    assert code == 1, err
    records = jsonl(out)
    assert [r["photo"] for r in records] == [str(door), str(bob_again), str(blank), str(tiny), str(a_second)]
    assert [r["name"] for r in records[:4]] == ["alice", "Bob Lee", None, None]
    assert records[2]["faces"] == [] and records[3]["faces"] == []
    for record in records[:2]:
        assert set(record) >= {"photo", "faces", "name", "distance", "threshold", "box"}
        assert record["distance"] < record["threshold"] and record["box"] == record["faces"][0]["box"]

    code, out, _ = sh(home, "verify", alice, door)
    assert code == 0 and out.startswith("yes, the same person  (distance 0.00")
    code, out, err = sh(home, "verify", "--json", alice, b_first)
    verdict = jsonl(out)[0]
    assert code == (0 if verdict["same"] else 1) and set(verdict) >= {"same", "distance", "threshold"}, err

    code, out, _ = sh(home, "list", "--json")
    assert code == 0 and [(r["name"], r["faces"]) for r in jsonl(out)] == [("Bob Lee", 1), ("alice", 1)]
    code, out, _ = sh(home, "remove", "Bob Lee")
    assert code == 0 and "removed 'Bob Lee'" in out
    code, out, _ = sh(home, "identify", "--json", bob_again)
    assert code == 1 and jsonl(out)[0]["name"] != "Bob Lee"

    code, _, err = sh(home, "enroll", blank, tiny)
    assert code == 1 and err.count("no face found") == 2 and "Traceback" not in err

    for cache in ("index.faiss", "index.json"):                           # the index is only a cache
        (home / cache).unlink(missing_ok=True)
    code, out, _ = sh(home, "identify", "--json", door)
    assert code == 0 and jsonl(out)[0]["name"] == "alice"
