"""`oneshot serve` for real: the installed command, the real models, real LFW photos, the CLI beside it, SIGTERM.

Skips (saying why) without the LFW photos; needs no network.
"""
from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="fastapi is a runtime dependency: pip install -e '.[test]'")

from tests.serving import Server, call, oneshot_command  # noqa: E402
from tests.test_cli import detectable_people  # noqa: E402

pytestmark = pytest.mark.slow


def test_real_service_with_the_cli_beside_it(tmp_path: Path) -> None:
    first, second = detectable_people(1)[0][:2]
    home = tmp_path / "home"
    server = Server(home)
    try:
        server.wait_ready()
        url = server.url
        status, body = call("POST", f"{url}/enroll", [("photo", ("ada.jpg", first.read_bytes())),
                                                      ("name", "Ada Lovelace"), ("largest", "true")])
        assert status == 200 and body["status"] == "enrolled", body
        status, body = call("POST", f"{url}/identify", [("photo", (second.name, second.read_bytes()))])
        assert status == 200 and body["results"][0]["name"] == "Ada Lovelace", body
        status, body = call("POST", f"{url}/verify", [("photo", ("a.jpg", first.read_bytes())),
                                                      ("photo", ("b.jpg", second.read_bytes()))])
        assert status == 200 and body["same"] is True, body
        status, body = call("POST", f"{url}/identify", [("photo", ("notes.jpg", b"not a photo at all"))])
        assert status == 400 and body["error"].startswith("notes.jpg: not an image"), body

        # the CLI, another process on the same gallery, removes her: the running service sees it at once
        cli = subprocess.run([*oneshot_command(), "--home", str(home), "remove", "Ada Lovelace"],
                             capture_output=True, text=True, timeout=300)
        assert cli.returncode == 0, cli.stderr
        status, body = call("POST", f"{url}/identify", [("photo", (second.name, second.read_bytes()))])
        assert status == 200 and body["results"][0]["name"] is None, body
        assert call("GET", f"{url}/people") == (200, {"people": [], "stale_people": 0, "stale_faces": 0})
        status, body = call("POST", f"{url}/enroll", [("photo", ("ada.jpg", first.read_bytes())),
                                                      ("name", "Ada"), ("largest", "true")])
        assert status == 200, body
    finally:
        code = server.stop()
    log = server.output()
    assert code == 0 and "stopped; the gallery is closed" in log and "Traceback" not in log, log
    with sqlite3.connect(home / "gallery.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT name FROM people").fetchall() == [("Ada",)]


def test_public_address_needs_a_token_and_the_port_in_use_is_one_line(tmp_path: Path) -> None:
    with Server(tmp_path / "home", "--host", "0.0.0.0", env={"ONESHOT_TOKEN": "t0ken-for-a-test"}) as server:
        assert call("GET", f"{server.url}/people")[0] == 401
        assert call("GET", f"{server.url}/people", headers={"Authorization": "Bearer t0ken-for-a-test"})[0] == 200
        taken = subprocess.run([*oneshot_command(), "--home", str(tmp_path / "home"), "serve", "--port",
                                str(server.port)], capture_output=True, text=True, timeout=300)
        assert taken.returncode == 2 and "Traceback" not in taken.stderr, taken.stderr
        assert taken.stderr.strip().splitlines()[-1].startswith(f"error: cannot listen on 127.0.0.1:{server.port}")
        assert server.stop() == 0
