"""PostgreSQL-only layout of the gallery tables: hash partitions, so that erasure rewrites a few small files.

Erasure on PostgreSQL needs the deleted tuples' bytes gone from the table files. ``DELETE`` and plain ``VACUUM`` leave
them in the pages' free space; only a rewrite (``VACUUM FULL``) writes new files without them, and it holds an ACCESS
EXCLUSIVE lock on what it rewrites. Both tables are therefore hash-partitioned by id into ``PARTITIONS`` partitions
and a removal rewrites only the partitions that held the person's rows (``vacuum``): identify, which reads faces and
people by id, plans and locks only the partitions holding its candidates, so it waits only when a candidate shares a
partition being rewritten, and then for one partition's rewrite (1/PARTITIONS of the table), not the table's.

Consequences handled here:

* a partitioned table cannot have ``UNIQUE (name)`` (a unique constraint must include the partition key), so a
  trigger enforces name uniqueness under the gallery's write lock (``UNIQUE_NAME``);
* every index is per partition, so a partition's rewrite also rebuilds its indexes (a global index on ``name``
  would keep an erased name);
* ``ANALYZE`` copies sample values of every column into ``pg_statistic`` (histogram bounds, common values), which a
  rewrite of our tables does not touch: the columns that hold personal data get statistics target 0.
"""
from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from gallery.db import WRITE_LOCK_KEY

PARTITIONS = 64
PARTITIONED = ("people", "faces")       # parents before children (the foreign key)
PERSONAL_COLUMNS = {"people": ("name",), "faces": ("vector", "photo_sha256")}

UNIQUE_NAME = f"""
CREATE OR REPLACE FUNCTION oneshot_unique_name() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({WRITE_LOCK_KEY});
    IF EXISTS (SELECT 1 FROM people WHERE name = NEW.name AND id <> NEW.id) THEN
        RAISE EXCEPTION 'duplicate key value violates unique constraint "people_name_key"'
            USING ERRCODE = 'unique_violation', DETAIL = format('Key (name)=(%s) already exists.', NEW.name);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER people_unique_name BEFORE INSERT OR UPDATE OF name ON people
    FOR EACH ROW EXECUTE FUNCTION oneshot_unique_name();
"""


def is_postgres(conn: Connection | Engine) -> bool:
    return conn.dialect.name == "postgresql"


def partition_name(table: str, remainder: int) -> str:
    return f"{table}_p{remainder:02d}"


def create_partitions(conn: Connection) -> None:
    """The partitions of the (just created, empty) partitioned tables; their indexes follow the parents'."""
    for table in PARTITIONED:
        for remainder in range(PARTITIONS):
            conn.exec_driver_sql(
                f"CREATE TABLE {partition_name(table, remainder)} PARTITION OF {table} "
                f"FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {remainder})"
            )


def protect(conn: Connection) -> None:
    """Name uniqueness by trigger, and no statistics samples of personal columns (see the module docstring).
    ``ALTER TABLE`` on a partitioned table applies the statistics target to every partition."""
    conn.exec_driver_sql(UNIQUE_NAME)
    for table, columns in PERSONAL_COLUMNS.items():
        conn.exec_driver_sql(f"ALTER TABLE {table} "
                             + ", ".join(f"ALTER COLUMN {c} SET STATISTICS 0" for c in columns))


def finish_create(conn: Connection) -> None:
    """After ``create_all`` of a new PostgreSQL gallery: partitions, trigger, statistics targets."""
    create_partitions(conn)
    protect(conn)


def partitions_holding(conn: Connection, person_id: int) -> list[str]:
    """The partitions (faces' and people's) that hold ``person_id``'s rows: what erasing them must rewrite."""
    rows = conn.execute(text(
        "SELECT DISTINCT tableoid::regclass::text FROM faces WHERE person_id = :p "
        "UNION SELECT tableoid::regclass::text FROM people WHERE id = :p"), {"p": person_id})
    return sorted(str(name) for (name,) in rows)


def vacuum(engine: Engine, relations: list[str]) -> None:
    """Rewrite each relation into a new file (``VACUUM FULL``), one statement each, so each exclusive lock is held
    for one partition's rewrite only. Faces first: their partitions are the larger."""
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        for relation in sorted(relations, key=lambda r: (not r.startswith("faces"), r)):
            conn.exec_driver_sql(f"VACUUM FULL {relation}")


def partition_v1(conn: Connection) -> None:
    """Schema 1 → 2 on PostgreSQL: copy the unpartitioned tables into partitioned ones, in the caller's write
    transaction (all or nothing). Face and person ids are kept, and each new sequence continues from the old one's
    value, so no id is ever reused (the FAISS caches stay valid)."""
    from gallery.schema import Face, Person

    sequences = {t: _sequence_state(conn, t) for t in PARTITIONED}
    for table in reversed(PARTITIONED):
        conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {table}_v1")
        _drop_constraints_and_indexes(conn, f"{table}_v1")
    Person.__table__.create(conn)
    Face.__table__.create(conn)
    create_partitions(conn)
    columns = {t: ", ".join(c.name for c in m.__table__.columns) for t, m in (("people", Person), ("faces", Face))}
    for table in PARTITIONED:
        conn.exec_driver_sql(f"INSERT INTO {table} ({columns[table]}) SELECT {columns[table]} FROM {table}_v1")
    for table in reversed(PARTITIONED):
        conn.exec_driver_sql(f"DROP TABLE {table}_v1")
    for table, (last_value, is_called) in sequences.items():
        _continue_sequence(conn, table, last_value, is_called)
    protect(conn)


def _sequence_state(conn: Connection, table: str) -> tuple[int, bool]:
    name = conn.scalar(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table})
    last_value, is_called = conn.execute(text(f"SELECT last_value, is_called FROM {name}")).one()
    return int(last_value), bool(is_called)


def _continue_sequence(conn: Connection, table: str, last_value: int, is_called: bool) -> None:
    """Give ``table``'s new serial sequence the old one's position and the usual name ``<table>_id_seq``."""
    name = conn.scalar(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table})
    conn.execute(text("SELECT setval(:s, :v, :c)"), {"s": name, "v": last_value, "c": is_called})
    wanted = f"public.{table}_id_seq"
    if name != wanted:
        conn.exec_driver_sql(f"ALTER SEQUENCE {name} RENAME TO {table}_id_seq")


def _drop_constraints_and_indexes(conn: Connection, table: str) -> None:
    """Free the names (``faces_pkey``, ``ix_faces_person_id``, ...) the new tables' constraints and indexes take;
    the old table is only read once more, in full."""
    constraints = conn.scalars(text(
        "SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass) ORDER BY contype = 'p'"),
        {"t": table}).all()
    for name in constraints:
        conn.exec_driver_sql(f'ALTER TABLE {table} DROP CONSTRAINT IF EXISTS "{name}" CASCADE')
    for name in conn.scalars(text("SELECT indexname FROM pg_indexes WHERE tablename = :t"), {"t": table}).all():
        conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{name}"')
