"""`oneshot identify --annotate DIR`: copies with each face's box and name drawn (fake engine; never skips)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image

from enroll.annotate import KNOWN, UNKNOWN
from tests.test_cli import ALICE, BOB, fake, home, jsonl, one_error_line, photo, photos, run  # noqa: F401


def test_annotated_copies_show_boxes_and_names(fake, home: Path, photos: Path, tmp_path: Path) -> None:  # noqa: F811
    assert run("enroll", photos / "alice.png")[0] == 0
    (photos / "notes.jpg").write_text("not a photo")
    out = tmp_path / "out" / "nested"
    code, stdout, stderr = run("identify", "--json", "--annotate", out, photos / "group.png",
                               photos / "alice2.png", photos / "empty_room.png", photos / "notes.jpg")
    assert code == 2 and "notes.jpg: not an image" in stderr
    records = jsonl(stdout)
    assert [r.get("annotated") for r in records] == [str(out / "group.png"), str(out / "alice2.png"),
                                                     str(out / "empty_room.png"), None]
    assert sorted(p.name for p in out.iterdir()) == ["alice2.png", "empty_room.png", "group.png"]
    group = Image.open(out / "group.png").convert("RGB")
    assert group.size == (200, 150)
    assert group.getpixel((10, 45)) == KNOWN            # alice's box (10, 10, 80, 80): her name, in green
    assert group.getpixel((120, 40)) == UNKNOWN         # bob's box (120, 20, 160, 60): not enrolled, red
    assert group.getpixel((45, 45)) == ALICE and group.getpixel((140, 40)) == BOB   # the faces are untouched
    assert Image.open(out / "empty_room.png").convert("RGB").getpixel((100, 75)) == (128, 128, 128)


def test_annotate_never_overwrites_and_keeps_every_copy(fake, home: Path, photos: Path,  # noqa: F811
                                                        tmp_path: Path) -> None:
    original = hashlib.sha256((photos / "alice2.png").read_bytes()).hexdigest()
    other = photo(tmp_path / "elsewhere" / "alice2.png", (ALICE, 20, 20, 40))
    code, stdout, stderr = run("identify", "--annotate", photos, photos / "alice2.png", other)
    assert code == 1 and "Traceback" not in stderr                # nobody enrolled: unknown
    assert hashlib.sha256((photos / "alice2.png").read_bytes()).hexdigest() == original
    assert sorted(p.name for p in photos.glob("alice2*")) == ["alice2-annotated-2.png", "alice2-annotated.png",
                                                             "alice2.png"]


def test_annotate_into_a_file_is_one_error(fake, home: Path, photos: Path, tmp_path: Path) -> None:  # noqa: F811
    target = tmp_path / "a_file"
    target.write_text("x")
    code, stdout, stderr = run("identify", "--annotate", target, photos / "alice.png")
    assert code == 2 and stdout == ""
    assert one_error_line(stderr) == f"error: {target}: not a directory (--annotate needs a folder)"
