"""Creating and upgrading the gallery schema, explicitly and under the write lock, for SQLite and PostgreSQL alike.

A database is created with ``create`` (the tables of ``gallery.schema`` and the meta row, in one transaction). An
existing database records its ``schema_version`` in the meta row; ``upgrade`` applies the steps in ``STEPS`` one by
one (each a function of the open connection, run in the caller's write transaction, so a failed step changes
nothing). Nothing ever calls ``create_all`` on a database that already holds tables: a file or database that is not
a oneshot gallery is refused, not taken over.

Schema 2 hash-partitions ``faces`` and ``people`` on PostgreSQL (``gallery.pg``: erasure rewrites a partition, not
the table); the tables' columns are those of schema 1, so on SQLite the step from 1 to 2 changes nothing.
"""
from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import inspect, insert, select
from sqlalchemy.engine import Connection

from gallery import pg
from gallery.errors import GalleryError
from gallery.schema import META_ROW_ID, SCHEMA_VERSION, Base, Meta


def _partition_postgres(conn: Connection) -> None:
    """1 → 2: partition the PostgreSQL tables; SQLite's tables are already what schema 2 describes."""
    if pg.is_postgres(conn):
        pg.partition_v1(conn)


# version v -> the step that upgrades a database from v to v + 1. Version 1 is the first released schema.
STEPS: dict[int, Callable[[Connection], None]] = {1: _partition_postgres}
TABLES = frozenset(Base.metadata.tables)


def tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def create(conn: Connection) -> None:
    """Create every table and the meta row in an empty database."""
    Base.metadata.create_all(conn)
    if pg.is_postgres(conn):
        pg.finish_create(conn)
    conn.execute(insert(Meta).values(id=META_ROW_ID, generation=0, schema_version=SCHEMA_VERSION))


def version(conn: Connection, where: str) -> int:
    """The database's schema version; GalleryError when it is not a oneshot gallery."""
    present = tables(conn)
    if not TABLES <= present:
        missing = ", ".join(sorted(TABLES - present))
        raise GalleryError(
            f"{where} is not a oneshot gallery (it has no {missing} table); it was left untouched - "
            "give oneshot a directory or database of its own"
        )
    found = conn.scalar(select(Meta.schema_version).where(Meta.id == META_ROW_ID))
    if found is None:
        raise GalleryError(f"gallery database {where} has no meta row; it was not created by oneshot or was damaged")
    return int(found)


def upgrade_check(current: int, where: str) -> None:
    """Refuse a schema newer than this program's."""
    if current > SCHEMA_VERSION:
        raise GalleryError(
            f"gallery database {where} has schema version {current}, newer than this program understands "
            f"({SCHEMA_VERSION}); upgrade oneshot"
        )


def upgrade(conn: Connection, where: str) -> None:
    """Bring the schema to SCHEMA_VERSION (caller holds the write transaction); refuse a newer one."""
    current = version(conn, where)
    upgrade_check(current, where)
    while current < SCHEMA_VERSION:
        STEPS[current](conn)
        current += 1
        conn.execute(Meta.__table__.update().where(Meta.id == META_ROW_ID).values(schema_version=current))
