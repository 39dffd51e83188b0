"""SQLite engine setup, integrity checks and error translation for the gallery database.

SQLite: every connection gets ``secure_delete=ON`` (deleted rows are overwritten with zeros, so erased biometric data does
not linger in free pages), ``foreign_keys=ON`` (faces cascade with their person) and a rollback journal
(``journal_mode=DELETE``: no WAL file keeps old pages around after a commit).

Transactions are begun explicitly: the stdlib driver would otherwise run SELECTs outside any transaction, and a
generation read plus a face read must see one snapshot. Writers use ``BEGIN IMMEDIATE`` so two processes enrolling
at once queue on the lock instead of failing on a read→write upgrade.
"""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
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


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """Create the (one per Gallery) engine: SQLite with the pragmas and explicit BEGIN described above, or
    PostgreSQL, whose writers serialise on a transaction-level advisory lock (``WRITE_LOCK_KEY``)."""
    if url.startswith("postgresql"):
        return _postgres_engine(url)
    path = url.removeprefix("sqlite:///")
    if read_only:
        engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true", connect_args={"timeout": BUSY_TIMEOUT_S})
    else:
        engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, see _on_begin
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.execute("PRAGMA foreign_keys=ON")
            if not read_only:
                cursor.execute("PRAGMA journal_mode=DELETE")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


WRITE_LOCK_KEY = 0x6F6E6573686F74  # "oneshot": pg_advisory_xact_lock key every writer takes first


def _postgres_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url, pool_pre_ping=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # psycopg prepares a statement run five times, and PostgreSQL may then plan it generically, without the
        # ids: such a plan locks every partition (gallery.pg), so a read would wait for any partition's rewrite.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET plan_cache_mode = force_custom_plan")
        dbapi_connection.commit()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(WRITE_OPTION, False):
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")

    return engine


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def writer(engine: Engine) -> Engine:
    """A view of ``engine`` (same pool, same events) whose transactions take the gallery's write lock first."""
    return engine.execution_options(**{WRITE_OPTION: True})


def check_file(db_path: Path) -> None:
    """Refuse an existing database file that cannot be ours *before* SQLite touches it, in words a user understands.

    A 0-byte file is refused rather than taken for a new gallery: we create databases atomically (never empty), so an
    empty file is someone else's or the remains of an accident, and silently starting over would hide that. A file
    shorter than its header's page count says is truncated: SQLite itself would notice only when reading the
    missing pages, so this replaces a full ``PRAGMA quick_check`` on every open (O(1) instead of O(database)).
    """
    try:
        with db_path.open("rb") as fh:
            head = fh.read(100)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise GalleryError(f"gallery database {db_path}: cannot read it: {one_line(exc)}") from exc
    if not head:
        raise GalleryError(
            f"gallery database {db_path} is an empty (0-byte) file, not a oneshot gallery; it was left untouched - "
            "move it aside to start an empty gallery"
        )
    if head[: len(SQLITE_MAGIC)] != SQLITE_MAGIC or len(head) < 100:
        raise GalleryError(corrupt_message(db_path, "not a SQLite database"))
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    valid_for = int.from_bytes(head[92:96], "big")
    change_counter = int.from_bytes(head[24:28], "big")
    if pages and valid_for == change_counter and size < pages * page_size:
        raise GalleryError(corrupt_message(db_path, f"truncated: {size} bytes of {pages * page_size}"))


def corrupt_message(db_path: Path, detail: str) -> str:
    """One line that says which file is broken and that it was not modified."""
    return (
        f"gallery database {db_path} is corrupt ({detail}); it was left untouched - "
        "restore it from a backup or move it aside to start an empty gallery"
    )
