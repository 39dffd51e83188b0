"""SQLite engine setup, integrity checks and error translation for the gallery database.

Every connection gets ``secure_delete=ON`` (deleted rows are overwritten with zeros, so erased biometric data does
not linger in free pages), ``foreign_keys=ON`` (faces cascade with their person) and a rollback journal
(``journal_mode=DELETE``: no WAL file keeps old pages around after a commit).

Transactions are begun explicitly: the stdlib driver would otherwise run SELECTs outside any transaction, and a
generation read plus a face read must see one snapshot. Writers use ``BEGIN IMMEDIATE`` so two processes enrolling
at once queue on the lock instead of failing on a read→write upgrade.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from gallery.errors import GalleryError

SQLITE_MAGIC = b"SQLite format 3\x00"
WRITE_OPTION = "gallery_write"  # execution option marking an engine whose transactions take the write lock
BUSY_TIMEOUT_S = 30.0
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26


def one_line(exc: BaseException) -> str:
    """The driver's own message on one line (SQLAlchemy's str() adds the SQL and a help link on extra lines)."""
    orig = getattr(exc, "orig", None)
    message = str(orig if orig is not None else exc) or type(exc).__name__
    return " ".join(message.split())


@contextmanager
def translated(db_path: Path, action: str) -> Iterator[None]:
    """Turn database-level failures into a one-line GalleryError naming the file and what was being done."""
    try:
        yield
    except GalleryError:
        raise
    except (SQLAlchemyError, sqlite3.Error) as exc:
        if is_corruption(exc):
            raise GalleryError(corrupt_message(db_path, one_line(exc))) from exc
        raise GalleryError(f"gallery database {db_path}: cannot {action}: {one_line(exc)}") from exc


def is_corruption(exc: BaseException) -> bool:
    """True for SQLITE_CORRUPT / SQLITE_NOTADB, as opposed to e.g. a locked or unopenable file."""
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (SQLITE_CORRUPT, SQLITE_NOTADB)
    return type(orig) is sqlite3.DatabaseError  # Python < 3.11: corruption surfaces as the bare base class


def make_engine(db_path: Path) -> Engine:
    """Create the (one per Gallery) engine with the pragmas and explicit-BEGIN behaviour described above."""
    engine = create_engine(
        f"sqlite:///{db_path}",
        connect_args={"timeout": BUSY_TIMEOUT_S},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, see _on_begin
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=DELETE")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def writer(engine: Engine) -> Engine:
    """A view of ``engine`` (same pool, same events) whose transactions start with BEGIN IMMEDIATE."""
    return engine.execution_options(**{WRITE_OPTION: True})


def check_header(db_path: Path) -> None:
    """Refuse a non-empty file that is not SQLite *before* SQLite touches it, with a message a user understands.

    An empty or missing file is fine: SQLite treats it as a new database.
    """
    try:
        with db_path.open("rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise GalleryError(f"gallery database {db_path}: cannot read it: {one_line(exc)}") from exc
    if head and head != SQLITE_MAGIC:
        raise GalleryError(corrupt_message(db_path, "not a SQLite database"))


def check_integrity(engine: Engine, db_path: Path) -> None:
    """Run SQLite's quick_check (read-only) so a truncated or damaged file is reported at open, not mid-write."""
    try:
        with engine.connect() as conn:
            rows = [str(r[0]) for r in conn.execute(text("PRAGMA quick_check")).fetchall()]
            conn.rollback()
    except (SQLAlchemyError, sqlite3.Error) as exc:
        if is_corruption(exc):
            raise GalleryError(corrupt_message(db_path, one_line(exc))) from exc
        raise GalleryError(f"gallery database {db_path}: cannot open it: {one_line(exc)}") from exc
    if rows != ["ok"]:
        raise GalleryError(corrupt_message(db_path, "; ".join(rows[:3]) or "integrity check failed"))


def corrupt_message(db_path: Path, detail: str) -> str:
    """One line that says which file is broken and that it was not modified."""
    return (
        f"gallery database {db_path} is corrupt ({detail}); it was left untouched - "
        "restore it from a backup or move it aside to start an empty gallery"
    )
