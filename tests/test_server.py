"""`oneshot serve` as a client meets it: every endpoint, status code, error line and safety rule of issue 33.

In process with FastAPI's TestClient and the fake face engine of test_cli (faces are coloured squares; a colour is
a person): exact, fast, never skips. The real models and real photos are in test_server_real.py and
test_page_browser.py.
"""
from __future__ import annotations

import io
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="fastapi is a runtime dependency: pip install -e '.[test]'")
from fastapi.testclient import TestClient  # noqa: E402

from embedder.photo import load_photo  # noqa: E402
from enroll import server  # noqa: E402
from enroll.server import ServeConfig, check_exposure, create_app, is_loopback  # noqa: E402
from tests.test_cli import ALICE, BACKGROUND, BOB, ERIN, FakeEngine, jsonl, make_bad_inputs, run  # noqa: E402


def png(*faces: tuple[tuple[int, int, int], int, int, int], size: tuple[int, int] = (200, 150),
        fmt: str = "PNG") -> bytes:
    """An in-memory photo with a square "face" per (colour, x, y, side)."""
    image = Image.new("RGB", size, BACKGROUND)
    for colour, x, y, side in faces:
        image.paste(colour, (x, y, x + side, y + side))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


ALICE_1, ALICE_2 = png((ALICE, 40, 30, 60)), png((ALICE, 90, 50, 50))
BOB_1, BOB_2 = png((BOB, 50, 40, 70)), png((BOB, 20, 20, 40))
STRANGER = png((ERIN, 60, 60, 50))
EMPTY_ROOM = png()


@pytest.fixture()
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("ONESHOT_HOME", str(path))    # the CLI in the same test uses the same gallery
    return path


def client_for(config: ServeConfig, engine: FakeEngine) -> TestClient:
    return TestClient(create_app(config, engine=engine), raise_server_exceptions=False)


@pytest.fixture()
def client(home: Path, engine: FakeEngine) -> Iterator[TestClient]:
    with client_for(ServeConfig(home=home), engine) as c:
        yield c


def enrol(client: TestClient, name: str, data: bytes, filename: str = "photo.png", **flags: str) -> Any:
    return client.post("/enroll", files={"photo": (filename, data, "image/png")}, data={"name": name, **flags})


def identify(client: TestClient, *photos: tuple[str, bytes]) -> Any:
    return client.post("/identify", files=[("photo", (n, d, "image/png")) for n, d in photos])


def one_line_error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert isinstance(message, str) and message and "\n" not in message and "Traceback" not in message
    return message


# -- the endpoints ------------------------------------------------------------------------------------------------


def test_enrol_identify_verify_list_remove(client: TestClient) -> None:
    r = enrol(client, "alice", ALICE_1, "alice.png")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "enrolled" and body["name"] == "alice" and body["photo"] == "alice.png"
    assert body["message"] == "enrolled 'alice' from alice.png" and "error" not in body
    assert enrol(client, "Bob Lee", BOB_1).json()["status"] == "enrolled"
    again = enrol(client, "alice", ALICE_1, "alice.png")
    assert again.status_code == 200 and again.json()["status"] == "duplicate"

    r = identify(client, ("door.png", ALICE_2), ("b.png", BOB_2), ("x.png", STRANGER), ("room.png", EMPTY_ROOM))
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["photo"] for x in results] == ["door.png", "b.png", "x.png", "room.png"]
    assert [x["name"] for x in results] == ["alice", "Bob Lee", None, None]    # negative answers are 200
    assert results[2]["distance"] > results[2]["threshold"] and results[3]["faces"] == []
    assert set(results[0]) == {"photo", "name", "distance", "threshold", "box", "faces", "stale_people",
                               "stale_faces"}        # the objects of `identify --json`
    assert results[0]["box"] == [90.0, 50.0, 140.0, 100.0] == results[0]["faces"][0]["box"]

    r = client.post("/verify", files=[("photo", ("a.png", ALICE_1)), ("photo", ("b.png", ALICE_2))])
    assert r.status_code == 200 and r.json()["same"] is True and r.json()["photo_a"] == "a.png"
    r = client.post("/verify", files=[("photo", ("a.png", ALICE_1)), ("photo", ("b.png", BOB_1))])
    assert r.status_code == 200 and r.json()["same"] is False
    r = client.post("/verify", files=[("photo", ("a.png", ALICE_1)), ("photo", ("room.png", EMPTY_ROOM))])
    assert r.status_code == 200 and r.json()["same"] is None and r.json()["error"] == "room.png: no face found"

    people = client.get("/people").json()
    assert [(p["name"], p["faces"], p["current"]) for p in people["people"]] == [("Bob Lee", 1, True),
                                                                                  ("alice", 1, True)]
    assert client.delete("/people/Bob Lee").json() == {"removed": "Bob Lee", "faces": 1}
    assert one_line_error(client.delete("/people/Bob Lee"), 404) == "no person named 'Bob Lee' is enrolled"
    assert identify(client, ("b.png", BOB_2)).json()["results"][0]["name"] is None
    assert [p["name"] for p in client.get("/people").json()["people"]] == ["alice"]


def test_model_and_health(client: TestClient) -> None:
    info = client.get("/model").json()
    assert info["model_id"] == "fake-model-0001" and info["thresholds"][0]["people"] == 1
    assert client.get("/healthz").json()["status"] == "ok"


def test_enrolment_rules_map_to_status_codes(client: TestClient) -> None:
    assert one_line_error(enrol(client, "nobody", EMPTY_ROOM, "room.png"), 422) == "room.png: no face found"
    group = png((ALICE, 10, 10, 70), (BOB, 120, 20, 40))
    assert "2 faces found" in one_line_error(enrol(client, "alice", group, "group.png"), 422)
    assert enrol(client, "alice", group, "group.png", largest="true").json()["status"] == "enrolled"
    refused = enrol(client, "alicia", ALICE_2, "alice2.png")
    assert "already matches 'alice'" in one_line_error(refused, 422) and refused.json()["status"] == "refused"
    forced = enrol(client, "alicia", ALICE_2, "alice2.png", force="1")
    assert forced.status_code == 200 and forced.json()["matched"] == "alice"


def test_bad_input_is_400_with_the_clis_line(client: TestClient, tmp_path: Path) -> None:
    """Each bad photo gives the same one line as the CLI's (the path replaced by the uploaded file's name)."""
    bad = make_bad_inputs(tmp_path / "bad")
    for kind in ("empty", "truncated", "text", "huge"):
        path = bad[kind]
        with pytest.raises(ValueError) as cli_error:
            load_photo(path)
        line = str(cli_error.value)
        for response in (enrol(client, "alice", path.read_bytes(), path.name),
                         identify(client, (path.name, path.read_bytes()))):
            assert one_line_error(response, 400) == line.replace(str(path), path.name), kind
    mixed = identify(client, ("ok.png", ALICE_1), ("notes.jpg", bad["text"].read_bytes()))
    assert one_line_error(mixed, 400).startswith("notes.jpg: not an image")
    assert mixed.json()["results"][0]["photo"] == "ok.png" and "error" not in mixed.json()["results"][0]

    assert "path separator" in one_line_error(enrol(client, "staff/alice", ALICE_1), 400)
    assert "name is empty" in one_line_error(enrol(client, "  ", ALICE_1), 400)
    assert one_line_error(client.post("/enroll", files={"photo": ("a.png", ALICE_1)}), 400) == \
        "missing the form field 'name'"
    assert "must be true or false" in one_line_error(enrol(client, "alice", ALICE_1, largest="maybe"), 400)
    assert "fields named 'photo'" in one_line_error(client.post("/identify", data={"name": "x"}), 400)
    assert "multipart/form-data" in one_line_error(client.post("/identify", json={"photo": "x"}), 400)
    assert "send 2 photos" in one_line_error(client.post("/verify", files={"photo": ("a.png", ALICE_1)}), 400)
    text_photo = client.post("/identify", data={"photo": "not a file"}, files={"other": ("a.png", ALICE_1)})
    assert "file upload" in one_line_error(text_photo, 400)
    assert "path separator" in one_line_error(client.delete("/people/a%5Cb"), 400)
    weird = enrol(client, "alice", b"", "../../etc/passwd")          # a client's file name is only a label
    assert one_line_error(weird, 400) == "passwd: file is empty (0 bytes)"
    from starlette.datastructures import UploadFile

    assert server._upload_name(UploadFile(io.BytesIO(), filename="C:\\x\\a\nb\x07c.jpg"), 1, 1) == "a b c.jpg"
    assert server._upload_name(UploadFile(io.BytesIO(), filename=""), 2, 3) == "photo 2"
    assert client.get("/people").json()["people"] == []              # nothing got in


def test_internal_error_is_500_one_line(client: TestClient, engine: FakeEngine) -> None:
    engine.fail_detection = True
    message = one_line_error(identify(client, ("a.png", ALICE_1)), 500)
    assert message == "a.png: internal error: RuntimeError: detector exploded"


# -- the same gallery as the CLI ----------------------------------------------------------------------------------


def test_cli_changes_are_seen_without_a_restart(client: TestClient, engine: FakeEngine, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from enroll import service

    monkeypatch.setattr(service, "default_engine", lambda: engine)
    assert identify(client, ("a.png", ALICE_2)).json()["results"][0]["name"] is None   # no gallery yet
    (tmp_path / "alice.png").write_bytes(ALICE_1)
    assert run("enroll", tmp_path / "alice.png")[0] == 0
    assert identify(client, ("a.png", ALICE_2)).json()["results"][0]["name"] == "alice"
    assert enrol(client, "bob", BOB_1).status_code == 200
    code, out, _ = run("list", "--json")
    assert code == 0 and [p["name"] for p in jsonl(out)] == ["alice", "bob"]
    assert run("remove", "alice")[0] == 0
    assert identify(client, ("a.png", ALICE_2)).json()["results"][0]["name"] is None
    assert [p["name"] for p in client.get("/people").json()["people"]] == ["bob"]


# -- concurrency --------------------------------------------------------------------------------------------------


def test_concurrent_writers_queue_and_the_gallery_stays_consistent(client: TestClient) -> None:
    colours = [(40 + 20 * i, 10, 220 - 20 * i) for i in range(8)]
    answers: dict[str, int] = {}

    def go(i: int) -> None:
        answers[f"p{i}"] = enrol(client, f"p{i}", png((colours[i], 30, 30, 50)), f"p{i}.png").status_code

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == {f"p{i}": 200 for i in range(8)}
    assert [(p["name"], p["faces"]) for p in client.get("/people").json()["people"]] == \
        [(f"p{i}", 1) for i in range(8)]
    named = identify(client, *[(f"q{i}.png", png((colours[i], 60, 40, 45))) for i in range(8)]).json()
    assert [r["name"] for r in named["results"]] == [f"p{i}" for i in range(8)]


def test_readers_are_not_blocked_by_a_writer(client: TestClient, engine: FakeEngine) -> None:
    """While one enrolment holds the writer's turn for a second, identification still answers at once."""
    assert enrol(client, "alice", ALICE_1).status_code == 200
    started = threading.Event()
    slow_problem = engine.enrolment_problem

    def slow(image: Image.Image, face: Any) -> str | None:
        started.set()
        time.sleep(1.5)
        return slow_problem(image, face)

    engine.enrolment_problem = slow  # type: ignore[method-assign]
    writer = threading.Thread(target=lambda: enrol(client, "bob", BOB_1))
    writer.start()
    assert started.wait(5)
    t0 = time.perf_counter()
    answer = identify(client, ("a.png", ALICE_2))
    waited = time.perf_counter() - t0
    writer.join()
    assert answer.json()["results"][0]["name"] == "alice"
    assert waited < 1.0, f"identify waited {waited:.2f} s behind the writer"


# -- safety -------------------------------------------------------------------------------------------------------


def test_loopback_rule() -> None:
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
        check_exposure(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.org"):
        assert not is_loopback(host), host
        with pytest.raises(ValueError, match="needs a token"):
            check_exposure(host, None)
        check_exposure(host, "a-long-random-token")
    with pytest.raises(ValueError, match="token is empty"):
        check_exposure("0.0.0.0", "  ")


def test_serve_refuses_a_public_address_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONESHOT_TOKEN", raising=False)
    code, out, err = run("serve", "--host", "0.0.0.0", "--port", "9")
    assert code == 2 and out == "" and err.startswith("error: --host 0.0.0.0 is reachable from other machines")
    assert len(err.splitlines()) == 1


def test_token_is_required_when_set(home: Path, engine: FakeEngine) -> None:
    with client_for(ServeConfig(home=home, token="s3cret-token"), engine) as c:
        for response in (c.get("/people"), c.get("/people", headers={"Authorization": "Bearer wrong"}),
                         c.get("/people", headers={"Authorization": "Basic s3cret-token"}),
                         c.post("/identify", files={"photo": ("a.png", ALICE_1)})):
            assert "needs a token" in one_line_error(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
        ok = {"Authorization": "Bearer s3cret-token"}
        assert c.get("/people", headers=ok).status_code == 200
        assert c.post("/enroll", files={"photo": ("a.png", ALICE_1)}, data={"name": "alice"},
                      headers=ok).status_code == 200
        for public in ("/", "/app.js", "/healthz", "/docs", "/openapi.json"):    # the page asks for the token
            assert c.get(public).status_code == 200, public


def test_request_size_limit(home: Path, engine: FakeEngine) -> None:
    big = png((ALICE, 40, 30, 60), size=(400, 300), fmt="BMP")      # 360 kB
    with client_for(ServeConfig(home=home, max_upload_bytes=100_000), engine) as c:
        message = one_line_error(c.post("/identify", files={"photo": ("big.bmp", big)}), 413)
        assert message.startswith("request is too large (0.4 MB; the limit is 0.1 MB)")

        def chunks() -> Iterator[bytes]:                              # no Content-Length: counted as it streams
            for _ in range(20):
                yield b"x" * 10_000

        streamed = c.post("/identify", content=chunks(), headers={"content-type": "multipart/form-data; b=x"})
        assert one_line_error(streamed, 413) == "request is too large (the limit is 0.1 MB)"
        assert enrol(c, "alice", ALICE_1).status_code == 200        # small requests still go through


def test_uploads_never_touch_the_disk(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4 MB upload (Starlette spools anything over 1 MB to a temporary file by default) stays in memory."""
    spilled: list[str] = []

    def no_disk(*_args: Any, **_kwargs: Any) -> Any:
        spilled.append("rollover")
        raise AssertionError("an upload was about to be written to a temporary file")

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", no_disk)
    big = png((ALICE, 300, 300, 200), size=(1400, 1000), fmt="BMP")
    assert len(big) > 4_000_000
    r = enrol(client, "alice", big, "big.bmp")
    assert r.status_code == 200 and r.json()["status"] == "enrolled", r.text
    assert identify(client, ("big.bmp", big)).json()["results"][0]["name"] == "alice"
    assert spilled == []


# -- the page and the docs ----------------------------------------------------------------------------------------


def test_page_and_docs_need_no_internet(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = client.get("/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    docs = client.get("/docs")
    assert docs.status_code == 200
    for text in (page.text, script.text, docs.text):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    for path in ("/enroll", "/identify", "/verify", "/people", "/people/{name}", "/model", "/healthz"):
        assert f"<code>{path}</code>" in docs.text.replace("{name}", "{name}"), path
    schema = client.get("/openapi.json").json()
    assert schema["paths"]["/enroll"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"][
        "required"] == ["photo", "name"]
    assert client.get("/redoc").status_code == 404          # FastAPI's CDN-based pages are switched off


def test_server_module_keeps_the_cli_light() -> None:
    """`oneshot --help` must not import FastAPI: the command imports the server only when it runs."""
    import subprocess
    import sys

    code = ("import sys, enroll.cli; "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert server.DEFAULT_HOST == "127.0.0.1"


def test_workers_close_once_and_lend_one_service_per_job(home: Path, engine: FakeEngine) -> None:
    from enroll.workers import Workers

    workers = Workers(home, 2, engine)
    seen: set[int] = set()
    inside = threading.Barrier(2)

    def job(service: Any) -> None:
        seen.add(id(service))
        inside.wait(5)               # both jobs hold a service at the same time: they must be different ones

    threads = [threading.Thread(target=workers.read, args=(job,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 2
    workers.close()
    workers.close()                  # a second close must not wait forever for services already closed


def test_a_corrupt_gallery_is_500_with_the_clis_line(home: Path, engine: FakeEngine,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from enroll import service

    monkeypatch.setattr(service, "default_engine", lambda: engine)
    home.mkdir(parents=True)
    (home / "gallery.sqlite3").write_bytes(b"this is not a database" * 100)
    code, _, err = run("list")
    with client_for(ServeConfig(home=home), engine) as c:
        for response in (c.get("/people"), identify(c, ("a.png", ALICE_1)), enrol(c, "alice", ALICE_1)):
            assert f"error: {one_line_error(response, 500)}" == err.strip()
        assert c.get("/healthz").status_code == 200          # the service itself is alive
