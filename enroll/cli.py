"""The `oneshot` command line: a thin typer layer over `enroll.service.OneShot`.

Only typer is imported at module level; the service (and through it torch, faiss, SQLAlchemy) is imported inside
each command, so `oneshot --help` and usage errors answer instantly. Every failure becomes one `error: ...` line on
stderr and an exit code; a traceback is shown only with `--debug`.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path  # noqa: F401 - kept: other branches annotate with it
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer
from typer.core import TyperGroup
from typer.core import _click as click  # typer vendors click: its exceptions are typer._click's, not click's

if TYPE_CHECKING:
    from collections.abc import Iterable

    from enroll.service import Enrolment, Identification, ModelInfo, OneShot
    from gallery import StaleFaces

EXIT_OK = 0
EXIT_NEGATIVE = 1   # a readable photo, but: unknown face, no face, not the same person, enrolment refused
EXIT_BAD_INPUT = 2  # bad input or usage: unreadable photo, bad name, unknown person, corrupt gallery, ...
EXIT_INTERNAL = 3   # an internal error: a bug, or the shipped model failing (not the user's input)

EPILOG = """\b
Exit codes:
  0  success
  1  a negative answer: identify found a photo that is unknown (its main
     face is not enrolled) or has no face, so `oneshot identify p.jpg &&
     open_door` is safe; verify says different people or found no face;
     enroll or reenroll refused a photo (no face, several faces without
     --largest, a face too small, blurred or turned away, or a face that
     already matches someone else)
  2  bad input or usage: a missing, empty, truncated, non-image or too large
     photo, a bad name, removing an unknown name, a corrupt gallery, a bad
     option or argument
  3  an internal error: the shipped model cannot be loaded or fails, or a
     bug (not the user's input); --debug shows the traceback

In a batch every photo succeeds or fails on its own; the exit code is the worst outcome. Errors are one line on stderr;
--debug adds the traceback. People enrolled with another model (vectors of different models cannot be compared) are
kept and listed but not recognised until re-enrolled; list, identify and enroll warn about them on stderr.
"""

class OneLineErrors(TyperGroup):
    """Click prints a usage error as four lines (usage, hint, blank, message); we print one `error:` line, like
    every other failure, and exit 2."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except typer.Abort:
            print("error: interrupted", file=sys.stderr)
            sys.exit(130)
        except click.ClickException as exc:
            hint = ""
            ctx = getattr(exc, "ctx", None)
            if ctx is not None:
                hint = f" (see `{ctx.command_path} {ctx.help_option_names[0]}`)"
            print(f"error: {_printable(' '.join(exc.format_message().split()))}{hint}", file=sys.stderr)
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


app = typer.Typer(
    name="oneshot",
    cls=OneLineErrors,
    help="One-shot face enrolment: enrol a person from one photo, identify faces in photos, remove people.",
    epilog=EPILOG,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass(frozen=True)
class Globals:
    """Global options: the callback stores them as the typer context object (`ctx.obj`) for the commands."""

    home: Optional[str] = None
    debug: bool = False
    db: Optional[str] = None


JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output: one JSON object per line.")]


def _show_version(value: bool) -> None:
    if value:
        from enroll.version import installed_version

        print(f"oneshot {installed_version()}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _global(
    ctx: typer.Context,
    home: Annotated[Optional[str], typer.Option(
        "--home", metavar="DIR",
        help="Gallery directory. Default: $ONESHOT_HOME, else ~/.local/share/oneshot ($XDG_DATA_HOME/oneshot).",
    )] = None,
    db: Annotated[Optional[str], typer.Option(
        "--db", metavar="URL",
        help="Keep the gallery in this database (postgresql://user@host/db) instead of DIR/gallery.sqlite3; "
             "DIR still holds this host's index cache. Default: $ONESHOT_DB.",
    )] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks for errors.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Show the version and exit.", is_eager=True,
                                          callback=_show_version)] = False,
) -> None:
    """One-shot face enrolment: enrol a person from one photo, identify faces in photos, remove people."""
    ctx.obj = Globals(home, debug, db)


# Photo arguments are plain strings, not Path: results and JSON report each photo exactly as the user typed it
# (Path would turn "./door.jpg" into "door.jpg").


@app.command()
def enroll(
    ctx: typer.Context,
    photos: Annotated[list[str], typer.Argument(
        metavar="PHOTO", show_default=False,
        help="Photos, one person per photo, or folders of photos (recursively; photos in a subfolder are named "
             "after it).")],
    name: Annotated[Optional[str], typer.Option(
        "--name", "-n", help="Enrol every photo as this person (default: each file's stem).")] = None,
    largest: Annotated[bool, typer.Option("--largest", help="Enrol the main face when a photo has several.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Enrol even when the face already matches a different person.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Enrol people from photos: `oneshot enroll alice.jpg` enrols 'alice' (the file stem).

    Enrolling a name that exists adds the photo to that person. A photo with no face, several faces (without
    --largest), or a face that already matches a different person (without --force) is refused.
    """
    def run() -> int:
        from enroll.names import validate_name
        from enroll.progress import tracked

        from enroll.service import expand_photos

        if name is not None:
            validate_name(name)   # one bad --name is a usage error, not one error per photo
        items = expand_photos(photos)
        with _service(ctx) as service:
            results = _counted(service.enroll_iter(items, name, largest=largest, force=force), summary := {})
            code = _report_enrolments(ctx, service, tracked(results, len(items), "enrolling", as_json=as_json),
                                      as_json)
        if len(items) > 1 and not as_json:
            print(_summary_text(summary))
        return code

    _run(ctx, run)


def _counted(results: "Iterable[Enrolment]", summary: dict[str, int]) -> "Iterable[Enrolment]":
    """Pass results through, counting them by status (and refusals by reason) into ``summary``."""
    for result in results:
        key = f"refused: {result.reason}" if result.reason else result.status
        summary[key] = summary.get(key, 0) + 1
        yield result


def _summary_text(summary: dict[str, int]) -> str:
    """One line closing a bulk enrolment: how many photos went in, and how many were refused or failed and why."""
    parts = [f"{n} {key}" for key, n in sorted(summary.items())]
    return f"summary: {sum(summary.values())} photos: " + ", ".join(parts)


@app.command()
def reenroll(
    ctx: typer.Context,
    directory: Annotated[str, typer.Argument(metavar="DIR", help="A folder of photos named after the people.",
                                             show_default=False)],
    largest: Annotated[bool, typer.Option("--largest", help="Use the main face when a photo has several.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Re-enrol even when the face already matches a different person.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Re-enrol people whose faces were made by another model, from photos in DIR named like `enroll` names them.

    DIR/alice.jpg re-enrols 'alice' when she holds faces of another model: the photo is enrolled with the current
    model and her old faces are deleted. Further photos of someone re-enrolled in this run are added to them;
    photos of anyone else are skipped. Only files directly in DIR are read. Everyone still not re-enrolled
    afterwards is counted in a warning on stderr.
    """
    def run() -> int:
        with _service(ctx) as service:
            return _report_enrolments(ctx, service, service.reenroll_iter(directory, largest=largest, force=force),
                                      as_json)

    _run(ctx, run)


def _report_enrolments(ctx: typer.Context, service: "OneShot", results: "Iterable[Enrolment]",
                       as_json: bool) -> int:
    """Print each photo's enrolment as it happens, then the stale-model warning; the worst exit code."""
    worst = EXIT_OK
    for result in results:
        worst = max(worst, _enrol_code(result))
        _report_enrolment(result, as_json, debug=_globals(ctx).debug)
    _warn_stale(service.stale_faces())
    return worst


@app.command()
def identify(
    ctx: typer.Context,
    photos: Annotated[list[str], typer.Argument(metavar="PHOTO", help="Photos to identify.", show_default=False)],
    annotate: Annotated[Optional[Path], typer.Option(
        "--annotate", metavar="DIR", help="Also write a copy of each photo into DIR with every face's box and "
                                          "name (or 'unknown') drawn.", show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """Name every face in each photo, the main face first, or say unknown.

    A face is named when its nearest enrolled person is closer than the threshold, which gets stricter as the
    gallery grows. A photo's answer is its main face. Exit code 1 when any photo is unknown or has no face.
    """
    def run() -> int:
        from enroll.progress import tracked

        worst = EXIT_OK
        folder = _annotation_folder(annotate)
        taken = {Path(p).resolve() for p in photos} if folder is not None else set()  # never overwritten
        with _service(ctx) as service:
            stale = service.stale_faces()
            _warn_stale(stale)
            for result in tracked(service.identify_iter(photos), len(photos), "identifying", as_json=as_json):
                worst = max(worst, _identify_code(result))
                extra = {}
                if folder is not None and result.error is None:
                    try:
                        extra["annotated"] = str(_write_annotated(folder, result, taken))
                    except OSError as exc:
                        _error(_message(exc), exc, debug=_globals(ctx).debug)
                        worst = max(worst, EXIT_BAD_INPUT)
                _report_identification(result, as_json, prefix=len(photos) > 1, stale=stale,
                                       debug=_globals(ctx).debug, extra=extra)
        return worst

    _run(ctx, run)


@app.command()
def verify(
    ctx: typer.Context,
    photo_a: Annotated[str, typer.Argument(metavar="PHOTO_A", show_default=False)],
    photo_b: Annotated[str, typer.Argument(metavar="PHOTO_B", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Same person? Compares the main face of two photos (the gallery is not used). Exit 1 when not."""
    def run() -> int:
        from enroll.service import INVALID, ERROR, REFUSED

        with _service(ctx) as service:
            result = service.verify(photo_a, photo_b)
        if result.error is not None:
            _error(result.error, result.exc, debug=_globals(ctx).debug)
        if as_json:
            _print_json(result.to_json())
        elif result.same is not None:
            answer = "yes, the same person" if result.same else "no, different people"
            print(f"{answer}  (distance {result.distance:.2f}, threshold {result.threshold:.2f})")
        if result.status == ERROR:
            return EXIT_INTERNAL
        if result.status == INVALID:
            return EXIT_BAD_INPUT
        if result.status == REFUSED:
            return EXIT_NEGATIVE
        return EXIT_OK if result.same else EXIT_NEGATIVE

    _run(ctx, run)


@app.command("list")
def list_people(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List everyone enrolled, with their number of photos.

    People whose photos were all enrolled with another model are listed as needing re-enrolment (JSON: "current"
    false; "faces" counts the current model's photos, "other_model_faces" the rest).
    """
    def run() -> int:
        with _service(ctx) as service:   # streamed: a million people never sit in memory
            _warn_stale(service.stale_faces())
            listed = 0
            for listed, person in enumerate(service.iter_people(), 1):
                if as_json:
                    _print_json(person.to_json())
                else:
                    print(f"{person.name}  ({_photos_text(person.faces, person.other_model_faces)}; "
                          f"enrolled {person.created_at})")
            if not listed and not as_json:
                print("nobody is enrolled")
        return EXIT_OK

    _run(ctx, run)


@app.command()
def remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Remove a person: their name, every face vector and index entry, erased in one transaction."""
    def run() -> int:
        with _service(ctx) as service:
            removal = service.remove(name)
        if as_json:
            _print_json(removal.to_json())
        else:
            print(f"removed {removal.name!r} ({removal.faces} photo{'s' if removal.faces != 1 else ''})")
        return EXIT_OK

    _run(ctx, run)


@app.command()
def model(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the shipped model: its base network and licence, what training changed, threshold, metrics and τ(N)."""
    def run() -> int:
        with _service(ctx) as service:
            info = service.model_info()
        if as_json:
            _print_json(info.to_json())
            return EXIT_OK
        print(f"model      {info.model_id}  ({info.dim}-d vectors, {info.input_size}px crops)")
        if info.base:
            print(_wrapped("base       ", info.base))
        if info.changes:
            print(_wrapped("changes    ", info.changes))
        print(_wrapped("calibrated ", info.data))
        trained = f"{info.loss} loss, " if info.loss else ""
        print(f"margin     {trained}margin {info.margin}  (threshold band: mean genuine distance + margin / 2)")
        at_far = f" at false accept rate {info.threshold_far:g}" if info.threshold_far is not None else ""
        print(f"threshold  {info.threshold:.3f}  (one comparison{at_far}; used by verify)")
        if info.metrics:
            print("metrics")
            for key, value in info.metrics.items():
                print(f"  {key:<24} {_value(value)}")
        print(f"identify threshold τ(N) for N enrolled people (false identification rate {info.fpir:g}):")
        for n, tau in info.thresholds:
            print(f"  N = {n:>7,}   τ = {tau:.3f}{'  (extrapolated)' if info.extrapolated(n) else ''}")
        print(f"  {_backing_text(info)}")
        people = ("no gallery yet" if info.people is None
                  else f"{info.people} {'person' if info.people == 1 else 'people'} enrolled")
        print(f"gallery    {info.home}  ({people})")
        return EXIT_OK

    _run(ctx, run)


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on. Anything but loopback needs a token.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
    token: Annotated[Optional[str], typer.Option(
        "--token", help="Require 'Authorization: Bearer TOKEN' on the API. Default: $ONESHOT_TOKEN (preferred: "
                        "a command line is visible to other users).", show_default=False)] = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.1, help="Largest request accepted.")]
    = 20.0,
) -> None:
    """Run the HTTP service and its page at http://HOST:PORT/ (JSON API described at /docs).

    The models load once; the gallery is the same as the CLI's, so both can be used side by side. Stops cleanly
    on SIGTERM or Ctrl-C.
    """
    def run() -> int:
        try:
            from enroll import server
        except ImportError as exc:
            raise RuntimeError(f"the service needs fastapi, uvicorn and python-multipart ({exc}); "
                               "reinstall oneshot") from None
        config = server.ServeConfig(home=_globals(ctx).home, db=_globals(ctx).db, host=host, port=port,
                                    token=server.environ_token(token), max_upload_bytes=int(max_upload_mb * 1e6))
        try:
            server.check_exposure(host, config.token)
        except ValueError as exc:
            raise _UsageError(str(exc)) from None
        return server.run(config)

    _run(ctx, run)


class _UsageError(OSError):
    """A bad combination of options (reported like bad input: one line, exit 2)."""


# -- plumbing ---------------------------------------------------------------------------------------------------


def _globals(ctx: typer.Context) -> Globals:
    """The global options, as the callback stored them (the defaults when it did not run)."""
    obj = ctx.find_object(Globals)
    return obj if obj is not None else Globals()


def _service(ctx: typer.Context) -> "OneShot":
    from enroll.service import OneShot

    return OneShot(_globals(ctx).home, db=_globals(ctx).db)


def _run(ctx: typer.Context, body: Any) -> NoReturn:
    """Run a command body; map every exception to one `error:` line and an exit code: 2 for bad input, 3 for an
    internal error (a traceback only with --debug)."""
    try:
        code = body()
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        _error("interrupted", None, debug=_globals(ctx).debug)
        raise typer.Exit(130) from None
    except BrokenPipeError:
        # `oneshot list | head -1`: the reader left; stop quietly (and keep Python from complaining at exit).
        _silence_stdout()
        raise typer.Exit(EXIT_OK) from None
    except Exception as exc:  # noqa: BLE001 - the user gets one line, never a traceback
        _error(_message(exc), exc, debug=_globals(ctx).debug)
        raise typer.Exit(EXIT_BAD_INPUT if _bad_input(exc) else EXIT_INTERNAL) from None
    raise typer.Exit(code)


def _bad_input(exc: BaseException) -> bool:
    """The user's input is at fault: an unusable photo, a bad name, a path of theirs, an unknown person or a corrupt
    gallery. Anything else (the model failing to load or run, a bug) is an internal error."""
    from enroll.names import InvalidName

    expected: tuple[type[BaseException], ...] = (InvalidName, OSError)
    try:
        from embedder.photo import PhotoError
        from gallery import GalleryError

        expected = (*expected, PhotoError, GalleryError)
    except Exception:  # noqa: BLE001 - failing to import them is itself an internal error
        pass
    return isinstance(exc, expected)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _message(exc: BaseException) -> str:
    """One line for the user: our own exceptions already say what and where; anything else is a bug."""
    from enroll.names import InvalidName

    text = " ".join(str(exc).split())
    known = (InvalidName, OSError)
    try:
        from enroll.service import ModelUnavailable
        from gallery import GalleryError

        known = (*known, ModelUnavailable, GalleryError)
    except Exception:  # noqa: BLE001 - the gallery itself failing to import is reported below
        pass
    if isinstance(exc, known) and text:
        return text
    return f"internal error: {type(exc).__name__}: {text}"


def _error(message: str, exc: BaseException | None, *, debug: bool) -> None:
    if debug and exc is not None:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    elif "internal error" in message and "--debug" not in message:
        message += " (run with --debug for details)"
    print(f"error: {_printable(message)}", file=sys.stderr)


def _printable(text: str) -> str:
    """``text`` on one line: control characters (a newline in a file name) are shown escaped, so one message is
    always one line for scripts that read stderr or stdout line by line."""
    return text.translate(_CONTROL_ESCAPES)


_CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(32), 127)} | {10: "\\n", 13: "\\r", 9: "\\t"}


def _print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, ensure_ascii=False))


def _enrol_code(result: "Enrolment") -> int:
    from enroll.service import ERROR, REFUSED

    if result.ok:
        return EXIT_OK
    if result.status == ERROR:
        return EXIT_INTERNAL
    return EXIT_NEGATIVE if result.status == REFUSED else EXIT_BAD_INPUT


def _report_enrolment(result: "Enrolment", as_json: bool, *, debug: bool) -> None:
    if as_json:
        _print_json(result.to_json())
    if not result.ok:
        _error(result.message, result.exc, debug=debug)
    elif not as_json:
        print(_printable(result.message))


def _identify_code(result: "Identification") -> int:
    from enroll.service import ERROR

    if result.error is not None:
        return EXIT_INTERNAL if result.status == ERROR else EXIT_BAD_INPUT
    return EXIT_OK if result.known else EXIT_NEGATIVE


def _report_identification(result: "Identification", as_json: bool, *, prefix: bool,
                           stale: "StaleFaces | None" = None, debug: bool = False,
                           extra: dict[str, Any] | None = None) -> None:
    if result.error is not None:
        _error(result.error, result.exc, debug=debug)
    if as_json:
        record = {**result.to_json(), **(extra or {})}
        # people the answer cannot include: enrolled with another model (see _warn_stale)
        record["stale_people"] = stale.people if stale else 0
        record["stale_faces"] = stale.faces if stale else 0
        _print_json(record)
        return
    if result.error is not None:
        return
    lead = f"{_printable(result.photo)}: " if prefix else ""
    if not result.faces:
        print(f"{lead}no face found")
        return
    for i, face in enumerate(result.faces, 1):
        which = f"face {i} of {len(result.faces)} at {_box_text(face.box)}: " if len(result.faces) > 1 else ""
        if face.distance is None:
            nobody = "nobody is enrolled with the current model" if stale else "nobody is enrolled"
            print(f"{lead}{which}unknown  ({nobody})")
        elif face.name is not None:
            print(f"{lead}{which}{face.name}  (distance {face.distance:.2f}, threshold {face.threshold:.2f})")
        else:
            print(f"{lead}{which}unknown  (nearest {face.nearest!r} at distance {face.distance:.2f}, "
                  f"threshold {face.threshold:.2f})")


def _annotation_folder(folder: Optional[Path]) -> Optional[Path]:
    """The --annotate folder, created, before any photo is read (a bad folder is one error, not one per photo)."""
    if folder is None:
        return None
    from enroll.annotate import prepare_folder

    return prepare_folder(folder)


def _write_annotated(folder: Path, result: "Identification", taken: set[Path]) -> Path:
    """The photo's annotated copy in `folder` (read again: the service does not keep decoded photos)."""
    from embedder.photo import load_photo
    from enroll.annotate import annotated_path, write

    return write(load_photo(result.photo), result, annotated_path(folder, result.photo, taken))


def _warn_stale(stale: "StaleFaces | None") -> None:
    """One warning line on stderr (never stdout, so --json output stays clean) counting the people enrolled with
    another model: their vectors cannot be compared with this model's, so they are not recognised."""
    if not stale:
        return
    who = f"{stale.people} {'person' if stale.people == 1 else 'people'} ({_count(stale.faces, 'face')})"
    enrolled = f"{'was' if stale.people == 1 else 'were'} enrolled with another model"
    if stale.unrecognisable == stale.people:
        what = f"{enrolled} and cannot be recognised until re-enrolled"
    else:
        what = f"{enrolled}; {stale.unrecognisable} of them cannot be recognised until re-enrolled"
    print(f"warning: {who} {what}: run `oneshot enroll --name NAME PHOTO` again or `oneshot reenroll DIR`",
          file=sys.stderr)


def _photos_text(faces: int, other_model_faces: int) -> str:
    """`list`'s count of a person's photos; someone with only other-model photos is marked as needing re-enrolment."""
    if other_model_faces and not faces:
        return f"not recognised: {_count(other_model_faces, 'photo')} from another model, re-enrol"
    extra = f", {other_model_faces} from another model" if other_model_faces else ""
    return f"{_count(faces, 'photo')}{extra}"


def _backing_text(info: "ModelInfo") -> str:
    """How far the held-out data back the FPIR target of the τ(N) table (see enroll.decision)."""
    target = f"FPIR {info.fpir * 100:g} % target"
    if info.backed_up_to is None:
        return (f"{target}: the model card does not record how many impostor pairs its ROC was measured on, "
                "so up to which gallery size τ(N) is backed by held-out data is unknown")
    pairs = f"{info.impostor_pairs:,} impostor pairs"
    if info.backed_up_to == 0:
        return f"{target} not backed by held-out data ({pairs}) even for N = 1; τ(N) is extrapolated"
    return (f"{target} backed by held-out data ({pairs}) up to N = {info.backed_up_to:,} "
            f"{'person' if info.backed_up_to == 1 else 'people'}; beyond that τ(N) is extrapolated")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _box_text(box: tuple[float, float, float, float]) -> str:
    return "[" + ", ".join(str(round(v)) for v in box) + "]"


def _wrapped(label: str, value: Any) -> str:
    import textwrap

    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return textwrap.fill(text, width=100, initial_indent=label, subsequent_indent=" " * len(label))


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return _short(value)


def _short(value: Any, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main() -> None:
    """Console-script entry point: runs the app; the last line of defence against a traceback."""
    try:
        app(prog_name="oneshot")
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001
        if "--debug" in sys.argv[1:]:   # the context holding the global options is gone by now
            traceback.print_exc()
        print(f"error: internal error: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
