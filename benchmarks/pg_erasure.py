"""How long a PostgreSQL erasure stalls identify: schema 1 (whole-table VACUUM FULL) against schema 2 (partitions).

    python -m benchmarks.pg_erasure --people 100000 --json

Starts a throwaway server (.ci/postgres.sh) and fills two databases with N people of one face each by bulk SQL
(random 512-byte vectors, as float16 at 256-d): ``old`` with schema 1's unpartitioned tables, ``new`` created by
``Gallery`` (schema 2, hash partitions). In each, one thread runs identify's database reads back to back (the
generation, then ``gallery.store.RERANKED`` random face ids with their names, in one read transaction: the old join, or the new two
queries by id) while the main thread removes 10 people as ``Gallery.remove_person`` does on the database (delete
under the write lock, commit, then rewrite: old ``VACUUM FULL faces`` and ``people``, new the partitions that held
the rows). Reported per layout: read latency before the removals (the lookup's cost) and the longest read
while they ran (the stall), and each removal's time. The FAISS cache is left out: it is the same in both.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, delete, func, select, text, update
from sqlalchemy.orm import Session

from benchmarks.machine import RESULTS, cpu_name, load_average, write_result
from gallery import pg
from gallery.store import RERANKED

ROOT = Path(__file__).resolve().parents[1]
DIM = 256
REMOVALS = 10
LOOKUP = RERANKED      # the candidates one identify reads back from the database
BASELINE_S = 3.0
# the tables as schema 1 created them (tests/test_backends.py upgrades a database made from this too)
SCHEMA_1 = """
CREATE TABLE meta (id SERIAL NOT NULL, generation INTEGER NOT NULL, schema_version INTEGER NOT NULL, PRIMARY KEY (id));
CREATE TABLE people (id SERIAL NOT NULL, name VARCHAR(256) NOT NULL, created_at VARCHAR(32) NOT NULL,
    updated_at VARCHAR(32) NOT NULL, PRIMARY KEY (id), UNIQUE (name));
CREATE TABLE faces (id SERIAL NOT NULL, person_id INTEGER NOT NULL, model_id VARCHAR(128) NOT NULL, dim INTEGER NOT NULL,
    vector BYTEA NOT NULL, photo_sha256 VARCHAR(64) NOT NULL, created_at VARCHAR(32) NOT NULL, PRIMARY KEY (id),
    FOREIGN KEY(person_id) REFERENCES people (id) ON DELETE CASCADE);
CREATE INDEX ix_faces_person_id ON faces (person_id);
CREATE INDEX ix_faces_model_id ON faces (model_id);
INSERT INTO meta VALUES (1, 0, 1);
"""
FILL = """
SET session_replication_role = replica;  -- bulk load: no per-row trigger or foreign-key check
INSERT INTO people (id, name, created_at, updated_at)
    SELECT i, 'person-' || i, '2024-01-01T00:00:00+00:00', '2024-01-01T00:00:00+00:00' FROM generate_series(1, {n}) i;
INSERT INTO faces (id, person_id, model_id, dim, vector, photo_sha256, created_at)
    SELECT i, i, 'm', {dim}, decode(repeat(md5(i::text || 'v'), {reps}), 'hex'), md5(i::text) || md5(i::text || 's'),
           '2024-01-01T00:00:00+00:00' FROM generate_series(1, {n}) i;
SET session_replication_role = origin;
SELECT setval(pg_get_serial_sequence('people', 'id'), {n});
SELECT setval(pg_get_serial_sequence('faces', 'id'), {n});
"""


def start_server() -> str:
    done = subprocess.run(["bash", str(ROOT / ".ci" / "postgres.sh")], capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def stop_server(url: str) -> None:
    host = re.search(r"host=([^&]+)", url)
    if not host:
        return
    user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    subprocess.run([*user, str(bindir / "pg_ctl"), "-D", f"{host.group(1)}/data", "-m", "immediate", "stop"],
                   capture_output=True)
    shutil.rmtree(host.group(1), ignore_errors=True)


def new_database(server: str, name: str) -> str:
    import psycopg

    with psycopg.connect(server.replace("postgresql://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return re.sub(r"/oneshot(\?|$)", rf"/{name}\1", server, count=1)


def fill(engine: Engine, people: int, *, old: bool) -> float:
    """Bulk-load ``people`` people of one face each; returns seconds."""
    start = time.perf_counter()
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        if old:
            conn.exec_driver_sql(SCHEMA_1)
        conn.exec_driver_sql(FILL.format(n=people, dim=DIM, reps=DIM * 2 // 16))
        conn.exec_driver_sql("VACUUM ANALYZE")
    return time.perf_counter() - start


def identify_reads(engine: Engine, people: int, *, old: bool, stop: threading.Event,
                   log: list[tuple[float, float]]) -> None:
    """Identify's database part, back to back: (start, seconds) of each read appended to ``log``."""
    from gallery.schema import Face, Meta, Person

    rng = np.random.default_rng(0)
    while not stop.is_set():
        ids = [int(i) for i in rng.choice(people, LOOKUP, replace=False) + 1]
        t0 = time.perf_counter()
        with Session(engine) as session, session.begin():
            session.scalar(select(Meta.generation).where(Meta.id == 1))
            if old:
                session.execute(select(Face.id, Person.name, Face.vector).join(Person, Face.person_id == Person.id)
                                .where(Face.id.in_(ids), Face.model_id == "m", Face.dim == DIM)).all()
            else:
                rows = session.execute(select(Face.id, Face.person_id, Face.vector)
                                       .where(Face.id.in_(ids), Face.model_id == "m", Face.dim == DIM)).all()
                session.execute(select(Person.id, Person.name).where(Person.id.in_([r[1] for r in rows]))).all()
        log.append((t0, time.perf_counter() - t0))


def remove(engine: Engine, writer: Engine, name: str, *, old: bool) -> float:
    """What Gallery.remove_person does to the database (the cache left out); returns seconds."""
    from gallery.schema import Face, Meta, Person

    t0 = time.perf_counter()
    with Session(writer) as session, session.begin():
        person_id = session.scalar(select(Person.id).where(Person.name == name))
        session.scalar(select(func.count()).select_from(Face).where(Face.person_id == person_id))
        held = [] if old else pg.partitions_holding(session.connection(), person_id)
        session.execute(delete(Face).where(Face.person_id == person_id))
        session.execute(delete(Person).where(Person.id == person_id))
        session.execute(update(Meta).where(Meta.id == 1).values(generation=Meta.generation + 1))
    if old:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("VACUUM FULL faces")
            conn.exec_driver_sql("VACUUM FULL people")
    else:
        pg.vacuum(engine, held)
    return time.perf_counter() - t0


def run_layout(server: str, people: int, *, old: bool, home: Path) -> dict[str, Any]:
    from gallery import Gallery, db

    url = new_database(server, "old" if old else "new")
    if not old:
        Gallery(home, "m", DIM, db_url=url).close()     # schema 2, as a new gallery gets it
    engine = db.make_engine(url)
    writer = db.writer(engine)
    try:
        fill_s = fill(engine, people, old=old)
        with engine.connect() as conn:
            size = conn.scalar(text("SELECT coalesce(sum(pg_total_relation_size(relid)), pg_total_relation_size('faces')) "
                                    "FROM pg_partition_tree('faces') WHERE relid <> 'faces'::regclass"))
        log: list[tuple[float, float]] = []
        stop = threading.Event()
        reader = threading.Thread(target=identify_reads, args=(engine, people), kwargs={
            "old": old, "stop": stop, "log": log})
        reader.start()
        time.sleep(BASELINE_S)
        removals_start = time.perf_counter()
        victims = np.random.default_rng(1).choice(people, REMOVALS, replace=False) + 1
        removal_s = [remove(engine, writer, f"person-{int(v)}", old=old) for v in victims]
        removals_end = time.perf_counter()
        time.sleep(0.5)
        stop.set()
        reader.join()
    finally:
        engine.dispose()
    before = np.array([d for t, d in log if t < removals_start]) * 1000
    during = np.array([d for t, d in log if removals_start <= t < removals_end]) * 1000
    ms = lambda xs, q: round(float(np.percentile(xs, q)), 2) if len(xs) else None  # noqa: E731
    return {
        "layout": "schema 1: unpartitioned, VACUUM FULL faces + people" if old else
                  f"schema 2: {pg.PARTITIONS} hash partitions each, VACUUM FULL of the erased rows' partitions",
        "fill_s": round(fill_s, 1), "faces_table_mb": round(int(size) / 2**20),
        "read_p50_ms_before": ms(before, 50), "read_p99_ms_before": ms(before, 99),
        "read_max_ms_before": ms(before, 100), "reads_during_removals": len(during),
        "read_p50_ms_during": ms(during, 50), "read_p99_ms_during": ms(during, 99),
        "longest_read_stall_ms": ms(during, 100),
        "removal_median_ms": ms(np.array(removal_s) * 1000, 50), "removal_max_ms": ms(np.array(removal_s) * 1000, 100),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, required=True, help="gallery size N (one face each)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", type=Path, help="results file (default benchmarks/results/pg_erasure_N.json)")
    args = parser.parse_args(argv)
    load_before = load_average()
    server = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            layouts = {name: run_layout(server, args.people, old=name == "old", home=Path(tmp) / name)
                       for name in ("old", "new")}
    finally:
        stop_server(server)
    result = {"people": args.people, "removals": REMOVALS, "ids_per_read": LOOKUP, **layouts,
              "machine": cpu_name(), "cpus": os.cpu_count(), "load_before": load_before, "load_after": load_average()}
    write_result(args.out or RESULTS / f"pg_erasure_{args.people}.json", result)
    print(json.dumps(result, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
