"""`oneshot serve`: the long-running HTTP service and its page, over the same `OneShot` service as the CLI.

Why a service: every CLI call loads torch and the models again (seconds), while recognising a face takes tens of
milliseconds. Here the models load once at start and each request borrows a ready service (`enroll.workers`).
The gallery home is the CLI's, and the gallery re-reads its generation on every search, so enrolments and
removals made with the CLI are seen without a restart.

The JSON mirrors `--json` of the CLI, and status codes mirror its exit codes: 0 → 200; a negative answer (unknown
face, different people, no face in a verify photo) → 200 with `name`/`same` null or false; an enrolment refused
(no face, several faces, matches someone else) → 422; bad input (unreadable photo, bad name, missing field) →
400; an unknown person → 404; a token missing → 401; too large → 413; an internal error → 500. Every error
response carries `error`: the CLI's one-line message. Uploaded photos are parsed and decoded in memory
(`embedder.photo.PhotoBytes`) and never written to disk.

FastAPI is imported by this module, which only the `serve` command imports, so the rest of the CLI starts
without it.
"""
from __future__ import annotations

import ipaddress
import os
import re
import signal
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from enroll.gate import Gate
from enroll.version import installed_version
from enroll.workers import Workers

if TYPE_CHECKING:
    from enroll.service import Engine, OneShot

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 20.0     # a whole request; a phone photo is 2-10 MB, and `identify` takes several
MAX_PHOTOS = 16                  # photos in one identify request
TOKEN_ENV = "ONESHOT_TOKEN"
# The page may load its own script and show pictures it made (blob:/data:) and the camera stream; nothing else,
# in particular nothing from the internet.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; "
            "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class ServeConfig:
    """Everything `oneshot serve` is started with."""

    home: Path | str | None = None
    db: str | None = None          # a database URL (`--db`): the gallery's truth outside the home
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1e6)
    workers: int = 2


class BadRequest(ValueError):
    """The request itself is wrong (a missing or repeated field, a bad flag value): 400 with this one line."""


def is_loopback(host: str) -> bool:
    """Only this machine can reach `host`: `localhost` or a loopback address (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False       # a host name: it may resolve to anything


def check_exposure(host: str, token: str | None) -> None:
    """Safe by default: any address other than loopback needs a token. Raises ValueError (one line) if not."""
    if token is not None and not token.strip():
        raise ValueError(f"the token is empty; give a long random one with --token or ${TOKEN_ENV}")
    if not is_loopback(host) and token is None:
        raise ValueError(f"--host {host} is reachable from other machines, so it needs a token: set ${TOKEN_ENV} "
                         "(or --token) to a long random string; clients send it as 'Authorization: Bearer <token>'")


def create_app(config: ServeConfig, *, engine: "Engine | None" = None, workers: Workers | None = None,
               warm: bool = True) -> "Gate":
    """The ASGI app: the gate (token, size limit) around the FastAPI routes.

    `workers`: services made (and warmed up) beforehand, as `run` does so that a model that fails to load is one
    error line before the server starts; otherwise they are made at startup, with `engine` in place of the real
    embedder (tests), and `warm` loads the models then rather than during the first request.
    """
    from contextlib import asynccontextmanager

    state: dict[str, Workers] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        pool = workers
        if pool is None:
            pool = Workers(config.home, config.workers, engine, db=config.db)
            if warm:
                await run_in_threadpool(pool.read, warm_up)
        state["workers"] = pool
        _log(f"the gallery in {pool.home}, at http://{_url_host(config.host)}:{config.port}/"
             f"{' (token required)' if config.token else ''}")
        try:
            yield
        finally:
            state.pop("workers", None)
            pool.close()

    app = FastAPI(title="oneshot", version=installed_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description=(__doc__ or "").split("\n\n")[0])

    async def read(job: "Callable[[OneShot], Any]") -> Any:
        return await run_in_threadpool(state["workers"].read, job)

    async def write(job: "Callable[[OneShot], Any]") -> Any:
        return await run_in_threadpool(state["workers"].write, job)

    @app.exception_handler(HTTPException)
    async def _http_error(_request: "Request", exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: "Request", exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"error": f"bad request: {problems}"}, 400)

    @app.exception_handler(BadRequest)
    async def _bad_request(_request: "Request", exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, 400)

    @app.exception_handler(Exception)
    async def _failure(_request: "Request", exc: Exception) -> JSONResponse:
        return JSONResponse({"error": failure_message(exc)}, failure_status(exc))

    photo_form = _form_schema

    @app.post("/enroll", summary="Enrol one photo under a name (like `oneshot enroll --name NAME PHOTO --json`)",
              openapi_extra=photo_form({"photo": "the photo (one)", "name": "the person's name (required)",
                                        "largest": "true: enrol the main face when there are several",
                                        "force": "true: enrol even if the face matches someone else"},
                                       required=["photo", "name"]))
    async def enroll(request: "Request") -> JSONResponse:
        form = await _form(request, config.max_upload_bytes)
        photos = await _photos(form, 1, 1)
        name = _text(form, "name", required=True)
        largest, force = _flag(form, "largest"), _flag(form, "force")
        result = await write(lambda s: s.enroll_one(photos[0], name, largest=largest, force=force))
        from enroll.service import ERROR, INVALID, REFUSED

        body = result.to_json()
        if not result.ok:
            body["error"] = result.message
        status = 200 if result.ok else {REFUSED: 422, INVALID: 400, ERROR: 500}.get(result.status, 500)
        return JSONResponse(body, status)

    @app.post("/identify", summary="Name every face of each photo (like `oneshot identify --json PHOTO...`)",
              openapi_extra=photo_form({"photo": f"a photo; repeat the field for up to {MAX_PHOTOS} photos"},
                                       required=["photo"], repeated="photo"))
    async def identify(request: "Request") -> JSONResponse:
        form = await _form(request, config.max_upload_bytes)
        photos = await _photos(form, 1, MAX_PHOTOS)

        def job(service: "OneShot") -> tuple[list[Any], Any]:
            return [service.identify_one(p) for p in photos], service.stale_faces()

        results, stale = await read(job)
        from enroll.service import ERROR

        records = []
        for result in results:
            record = result.to_json()
            record["stale_people"] = stale.people if stale else 0
            record["stale_faces"] = stale.faces if stale else 0
            records.append(record)
        body: dict[str, Any] = {"results": records}
        failed = [r for r in results if r.error is not None]
        status = 200
        if failed:
            status = 500 if any(r.status == ERROR for r in failed) else 400
            body["error"] = failed[0].error
        return JSONResponse(body, status)

    @app.post("/verify", summary="Are two photos the same person? (like `oneshot verify --json A B`)",
              openapi_extra=photo_form({"photo": "exactly two photo fields"}, required=["photo"], repeated="photo"))
    async def verify(request: "Request") -> JSONResponse:
        form = await _form(request, config.max_upload_bytes)
        photos = await _photos(form, 2, 2)
        result = await read(lambda s: s.verify(photos[0], photos[1]))
        from enroll.service import ERROR, INVALID

        return JSONResponse(result.to_json(), {INVALID: 400, ERROR: 500}.get(result.status, 200))

    @app.get("/people", summary="Everyone enrolled (like `oneshot list --json`)")
    async def people() -> dict[str, Any]:
        found, stale = await read(lambda s: (s.people(), s.stale_faces()))
        return {"people": [p.to_json() for p in found], "stale_people": stale.people if stale else 0,
                "stale_faces": stale.faces if stale else 0}

    @app.delete("/people/{name}", summary="Remove a person and every face of theirs (like `oneshot remove`)")
    async def remove(name: str) -> dict[str, Any]:
        removal = await write(lambda s: s.remove(name))
        return removal.to_json()

    @app.get("/model", summary="The shipped model and its thresholds (like `oneshot model --json`)")
    async def model() -> dict[str, Any]:
        info = await read(lambda s: s.model_info())
        return info.to_json()

    @app.get("/healthz", summary="Liveness: the models are loaded and the service answers")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": installed_version()}

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_static("index.html"), headers={"content-security-policy": PAGE_CSP})

    @app.get("/app.js", include_in_schema=False)
    async def script() -> Response:
        return Response(_static("app.js"), media_type="text/javascript")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        from enroll.api_docs import render

        return HTMLResponse(render(app.openapi()), headers={"content-security-policy": PAGE_CSP})

    return Gate(app, token=config.token, max_bytes=config.max_upload_bytes)


def warm_up(service: "OneShot") -> None:
    """Load the detector, landmark and embedding networks and the model card now, so that the first request is as
    fast as the others (each loads on first use, once per process)."""
    from PIL import Image

    from embedder.types import Face

    engine = service._engine_()
    image = Image.new("RGB", (640, 480), (128, 128, 128))
    engine.detect_faces(image)
    face = Face((260.0, 180.0, 380.0, 300.0), 1.0,
                ((290.0, 220.0), (350.0, 220.0), (320.0, 250.0), (295.0, 280.0), (345.0, 280.0)))
    engine.face_embeddings(engine.aligned_faces(image, [face]))
    service.model_info()


def failure_status(exc: BaseException) -> int:
    """The HTTP status of an exception the service raised (the CLI's exit code, translated)."""
    from enroll.names import InvalidName

    try:
        from gallery import UnknownPerson
    except Exception:  # noqa: BLE001 - the gallery failing to import is an internal error
        UnknownPerson = ()  # type: ignore[assignment,misc]  # noqa: N806
    if isinstance(exc, UnknownPerson):
        return 404
    if isinstance(exc, InvalidName):
        return 400
    return 500


def failure_message(exc: BaseException) -> str:
    """The CLI's one line for the same failure (`enroll.cli._message`); a bug is an "internal error"."""
    from enroll.cli import _message

    return _message(exc)


async def _form(request: "Request", max_bytes: int) -> Any:
    """The multipart form, parsed from memory: uploads are kept in memory however large (the gate has capped
    the body), where Starlette would otherwise spill any file over 1 MB to a temporary file on disk."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise BadRequest("send the photos as multipart/form-data (fields named 'photo')")
    parser = MultiPartParser(request.headers, request.stream(), max_files=MAX_PHOTOS, max_fields=16,
                             max_part_size=64 * 1024)
    parser.spool_max_size = max_bytes + 1     # never roll over to disk
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise BadRequest(f"bad multipart form: {exc}") from None


async def _photos(form: Any, least: int, most: int) -> list[Any]:
    """The `photo` fields as in-memory photos named after their file names (as the CLI names them by path)."""
    from embedder.photo import PhotoBytes

    uploads = form.getlist("photo")
    if any(not isinstance(u, UploadFile) for u in uploads):
        raise BadRequest("the field 'photo' must be a file upload")
    if not least <= len(uploads) <= most:
        wanted = str(least) if least == most else f"{least} to {most}"
        raise BadRequest(f"send {wanted} photo{'s' if most > 1 else ''} as multipart fields named 'photo' "
                         f"(got {len(uploads)})")
    photos = []
    for i, upload in enumerate(uploads, 1):
        photos.append(PhotoBytes(_upload_name(upload, i, len(uploads)), await upload.read()))
        await upload.close()
    return photos


def _upload_name(upload: "UploadFile", index: int, count: int) -> str:
    """The client's file name, base name only, on one line and short; "photo" (or "photo N") when it sent none."""
    raw = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", " ", raw)
    name = " ".join(name.split())[:100]
    return name or ("photo" if count == 1 else f"photo {index}")


def _text(form: Any, field: str, *, required: bool = False) -> str | None:
    values = form.getlist(field)
    if len(values) > 1:
        raise BadRequest(f"the field {field!r} was sent {len(values)} times; send it once")
    if not values:
        if required:
            raise BadRequest(f"missing the form field {field!r}")
        return None
    if not isinstance(values[0], str):
        raise BadRequest(f"the field {field!r} must be text, not a file")
    return values[0]


def _flag(form: Any, field: str) -> bool:
    value = (_text(form, field) or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadRequest(f"the field {field!r} must be true or false, got {value[:20]!r}")


def _form_schema(fields: dict[str, str], *, required: list[str], repeated: str | None = None) -> dict[str, Any]:
    """The multipart body for the OpenAPI description (the routes parse the form themselves, from memory)."""
    properties: dict[str, Any] = {}
    for field, text in fields.items():
        if field == "photo":
            one = {"type": "string", "format": "binary"}
            properties[field] = ({"type": "array", "items": one, "description": text} if repeated == field
                                 else {**one, "description": text})
        elif field in ("largest", "force"):
            properties[field] = {"type": "boolean", "default": False, "description": text}
        else:
            properties[field] = {"type": "string", "description": text}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "properties": properties, "required": required}}}}}


def _static(name: str) -> bytes:
    return resources.files("enroll").joinpath("static", name).read_bytes()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _log(line: str) -> None:
    print(f"oneshot serve: {line}", file=sys.stderr, flush=True)


def run(config: ServeConfig) -> int:
    """Serve until SIGTERM or Ctrl-C, then finish the requests in flight, close the gallery and return 0.

    uvicorn already shuts down gracefully on SIGTERM/SIGINT (stop accepting, finish requests in flight, then the
    lifespan closes the galleries); afterwards it re-raises the signal, which would end the process with the
    signal's status. A stop asked for is not a failure, so that last step exits 0 instead.
    """
    import uvicorn

    check_exposure(config.host, config.token)
    _check_port(config.host, config.port)   # before the models load: a port in use is said at once
    workers = Workers(config.home, config.workers, db=config.db)
    workers.read(warm_up)              # the models load now: a failure is one error line, before listening
    app = create_app(config, workers=workers)

    def stopped(_signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stopped)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=30,
                                           server_header=False, lifespan="on"))
    try:
        server.run()
    except SystemExit:
        if server.started:
            _log("stopped; the gallery is closed")
            raise SystemExit(0) from None
        workers.close()
        raise OSError(_cannot_listen(config.host, config.port, "the port is in use")) from None
    if not server.started:
        workers.close()
        raise OSError(_cannot_listen(config.host, config.port, "the port is in use"))
    _log("stopped; the gallery is closed")
    return 0


def _check_port(host: str, port: int) -> None:
    """Raise OSError (one line) when `host:port` cannot be listened on, the way uvicorn will try it."""
    import socket

    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(_cannot_listen(host, port, f"unknown address ({exc.strerror})")) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise OSError(_cannot_listen(host, port, exc.strerror or str(exc))) from None


def _cannot_listen(host: str, port: int, why: str) -> str:
    return f"cannot listen on {host}:{port}: {why}"


def environ_token(given: str | None) -> str | None:
    """`--token` if given, else $ONESHOT_TOKEN, else None."""
    return given if given is not None else (os.environ.get(TOKEN_ENV) or None)
