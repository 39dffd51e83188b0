"""The Gallery: enrol, search and erase people, with SQL (SQLite or PostgreSQL) as the truth and FAISS as a cache.

Design choices (and why):

* One engine per Gallery, one short session per operation (or one held write transaction, ``locked``): nothing
  ORM-bound escapes, and another process or host can change the database between calls. Every change bumps
  ``meta.generation`` in the same transaction, and every search first reads the generation, so a stale index is
  noticed and brought up to date.
* The cache (``gallery.cache``) is changed in place, under the database's write lock and before the commit:
  enrolment appends a record, removal zeroes the person's records. A cache whose generation is not the database's
  (a crash, another host sharing a PostgreSQL database, a rolled-back block) is *reconciled*: ids the database no
  longer has are erased, ids it gained are appended, so a change elsewhere costs O(change) vectors, not a rebuild.
* Search asks the approximate index for candidates and re-ranks them with the exact vectors from the database, so
  distances are exact and a face removed a moment ago is never answered.
* Checks and writes that must not interleave with another writer (the "already matches someone else" rule of
  enrolment) run inside ``locked()``, one write transaction.

A Gallery is not thread-safe; use one per thread (several processes and hosts are fine).
"""
from __future__ import annotations

import os
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from sqlalchemy import Engine, Select, bindparam, case, delete, exists, func, or_, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from gallery import cache as cache_files
from gallery import db, index, migrations, pg
from gallery.cache import DiskCache, Loaded
from gallery.errors import GalleryError, UnknownPerson
from gallery.results import Match, PersonInfo, StaleFaces
from gallery.schema import META_ROW_ID, Face, Meta, Person, utcnow
from gallery.vectors import from_blob, ip_to_distance, to_blob, unit_rows

DB_FILE = "gallery.sqlite3"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NO_META = "gallery database {} has no meta row; it was not created by oneshot or was damaged"
RERANKED = 8       # re-ranked with the stored vectors (8-bit scores are within ~0.005 of the truth)
_WIDEN = 4
PAGE_SIZE = 16384
_CHUNK = 20_000          # rows per round trip when streaming vectors or looking up ids
# Identify's reads, as plain SQL: the ORM's statement building cost more than the reads themselves (0.44 vs 0.23 ms
# a search at 1M faces), on the path every door waits on.
_GENERATION_SQL = f"SELECT generation FROM meta WHERE id = {META_ROW_ID}"
_GENERATION = text(_GENERATION_SQL)
_FACES = text("SELECT id, person_id, vector FROM faces WHERE id IN :ids AND model_id = :model AND dim = :dim"
              ).bindparams(bindparam("ids", expanding=True))
_NAMES = text("SELECT id, name FROM people WHERE id IN :ids").bindparams(bindparam("ids", expanding=True))
FaceRows = dict[int, tuple[str, np.ndarray]]     # face id -> (name, stored vector)
_SQLITE_FACES = (f"SELECT ({_GENERATION_SQL}), faces.id, people.name, faces.vector "
                 "FROM faces JOIN people ON people.id = faces.person_id "
                 "WHERE faces.id IN ({}) AND faces.model_id = ? AND faces.dim = ?")


class Gallery:
    """Enrolled people and their face vectors: truth in ``home``'s SQLite file or in ``db_url``, cache in ``home``."""

    def __init__(self, home: Path, model_id: str, dim: int, *, db_url: str | None = None) -> None:
        """Open (creating if missing) the gallery for vectors of ``model_id`` with ``dim`` floats.

        ``db_url`` (``postgresql://...`` or ``sqlite:///path``) puts the truth elsewhere than ``home/gallery.sqlite3``;
        ``home`` still holds this host's cache. A home or database this process may not write is opened read-only:
        search and listing work, changes raise GalleryError. Raises GalleryError if ``home`` is not a usable
        directory, or the database is corrupt, empty or not a oneshot gallery (such a file is never modified);
        ValueError for a bad ``model_id``/``dim``.
        """
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model_id must be a non-empty string, got {model_id!r}")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.home = check_home(home)
        self.model_id = model_id
        self.dim = int(dim)
        self._loaded: Loaded | None = None
        self._tx: Session | None = None      # the held write transaction of a `locked()` block
        self._cache_touched = False          # the cache files changed inside the current `locked()` block
        self._closed = True                  # until the engine exists
        url = db_url or f"sqlite:///{self.home / DB_FILE}"
        self._sqlite_path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
        self.db_path = self._sqlite_path if self._sqlite_path is not None else Path(_redacted(url))
        self.read_only = not _writable(self.home, self._sqlite_path)
        if self._sqlite_path is not None:
            self.read_only = self.read_only or not _writable(self._sqlite_path.parent, self._sqlite_path)
        self._cache = DiskCache(self.home, model_id, self.dim)
        created = self._sqlite_path is not None and _create_sqlite(self._sqlite_path, self.read_only)
        if self._sqlite_path is not None:
            db.check_file(self._sqlite_path)  # before SQLite touches a foreign, empty or truncated file
        engine = db.make_engine(url, read_only=self.read_only)
        try:
            self._engine: Engine = engine
            self._writer: Engine = db.writer(engine)
            if not created:
                self._init_schema()
        except BaseException:
            engine.dispose()
            raise
        self._closed = False

    # ----------------------------------------------------------------------------------------------- public API

    @contextmanager
    def locked(self) -> Iterator[Gallery]:
        """Hold the database's write lock for a block: every read and write inside it is one transaction, so a
        check ("does this face match someone else?") and the write it guards cannot interleave with another
        process's. Commits at the end, rolls back (and invalidates the cache) on an exception. Re-entrant."""
        self._check_writable("change the gallery")
        if self._tx is not None:
            yield self
            return
        with db.translated(self.db_path, "change the gallery"), Session(self._writer) as session:
            session.begin()
            self._tx, self._cache_touched = session, False
            try:
                yield self
                session.commit()
            except BaseException:
                session.rollback()
                if self._cache_touched:   # the cache holds this block's uncommitted changes: make it stale
                    self._forget_index()
                    self._quietly(self._cache.discard_meta)
                raise
            finally:
                self._tx = None

    def add_face(
        self, name: str, vector: np.ndarray, photo_sha256: str, *, drop_other_models: bool = False
    ) -> tuple[int, bool]:
        """Store one face vector for ``name`` (creating the person if new) in one transaction.

        Returns ``(face_id, created_person)``. ``vector`` is (dim,) or (1, dim) floats; it is stored L2-normalised.
        With ``drop_other_models`` the person's faces made by other models are deleted in the same transaction:
        re-enrolment with a new model, after which their old vectors (useless to search) must not linger. Those
        faces were never in this model's index, so the index stays valid.
        """
        self._check_open()
        row = unit_rows(vector, self.dim, what="vector")
        if row.shape[0] != 1:
            raise ValueError(f"add_face takes one vector, got {row.shape[0]}")
        _check_name(name)
        sha = _check_sha256(photo_sha256)
        now = utcnow()
        with self.locked(), db.translated(self.db_path, f"add a face for {name!r}"):
            session = self._session()
            before = _read_generation(session)
            person = session.scalars(select(Person).where(Person.name == name)).one_or_none()
            created = person is None
            newcomer = created or not session.scalar(select(exists().where(
                Face.person_id == person.id, Face.model_id == self.model_id, Face.dim == self.dim)))
            if person is None:
                person = Person(name=name, created_at=now, updated_at=now)
                session.add(person)
            else:
                person.updated_at = now
                if drop_other_models:
                    session.execute(delete(Face).where(Face.person_id == person.id, Face.model_id != self.model_id))
            face = Face(person=person, model_id=self.model_id, dim=self.dim, vector=to_blob(row[0]),
                        photo_sha256=sha, created_at=now)
            session.add(face)
            generation = _bump_generation(session)
            session.flush()
            face_id = int(face.id)
            self._cache_change(session, before, generation, added=(np.array([face_id]), row),
                               people_delta=int(newcomer))
        return face_id, created

    def remove_person(self, name: str) -> int:
        """Erase ``name`` and all their faces (every model) in one transaction, and their codes in the cache.

        Returns the number of faces deleted; raises UnknownPerson if the name is not enrolled. With
        ``secure_delete`` the freed SQLite space is zeroed, the cache records are overwritten in place and leftover
        temporary files are deleted, so no file under the home directory keeps the name or the vectors afterwards.
        On PostgreSQL the partitions that held the rows are rewritten after the commit (``pg.vacuum``).
        """
        self._check_open()
        with self.locked(), db.translated(self.db_path, f"remove {name!r}"):
            session = self._session()
            before = _read_generation(session)
            person_id = session.scalar(select(Person.id).where(Person.name == name))
            if person_id is None:
                raise UnknownPerson(name)
            mine = [int(i) for i in session.scalars(select(Face.id).where(
                Face.person_id == person_id, Face.model_id == self.model_id, Face.dim == self.dim))]
            faces = session.scalar(select(func.count()).select_from(Face).where(Face.person_id == person_id))
            held = [] if db.is_sqlite(self._engine) else pg.partitions_holding(session.connection(), person_id)
            session.execute(delete(Face).where(Face.person_id == person_id))
            session.execute(delete(Person).where(Person.id == person_id))
            generation = _bump_generation(session)
            self._cache_change(session, before, generation, removed=np.array(sorted(mine), dtype=np.int64),
                               people_delta=-1 if mine else 0)
            self._clean_temp()
        self._after_erasure(held)
        return int(faces or 0)

    def people(self) -> list[PersonInfo]:
        """Every stored person, sorted by name (including people with only other-model faces)."""
        return list(self.iter_people())

    def iter_people(self) -> Iterator[PersonInfo]:
        """Every stored person, sorted by name, streamed in chunks (a million people never sit in memory)."""
        self._check_open()
        query = self._people_query().order_by(Person.name).execution_options(yield_per=1000)
        with self._reading("list people") as session:
            for row in session.execute(query):
                yield _person_info(*row)

    def person(self, name: str) -> PersonInfo:
        """One stored person, counted as ``people`` counts them; raises UnknownPerson if the name is not stored."""
        self._check_open()
        query = self._people_query().where(Person.name == name)
        with self._reading("look up a person") as session:
            row = session.execute(query).one_or_none()
        if row is None:
            raise UnknownPerson(name)
        return _person_info(*row)

    def stale_faces(self) -> StaleFaces:
        """How many people and faces were made by another model than this gallery's (see StaleFaces).

        First an index probe for any such face (O(log n)); only when one exists, one aggregate over a per-person
        GROUP BY.
        """
        self._check_open()
        with self._reading("count faces of other models") as session:
            if not session.scalar(select(exists().where(self._other_models()))):
                return StaleFaces()
            other = case((self._other_models(), 1), else_=0)
            mine = case((Face.model_id == self.model_id, 1), else_=0)
            per_person = (
                select(func.sum(other).label("other"), func.sum(mine).label("mine"))
                .group_by(Face.person_id)
                .having(func.sum(other) > 0)
                .subquery()
            )
            query = select(
                func.count(),
                func.coalesce(func.sum(per_person.c.other), 0),
                func.coalesce(func.sum(case((per_person.c.mine == 0, 1), else_=0)), 0),
            ).select_from(per_person)
            people, faces, unrecognisable = session.execute(query).one()
        return StaleFaces(people=int(people), faces=int(faces), unrecognisable=int(unrecognisable))

    def stale_names(self) -> list[str]:
        """Names of the people holding at least one face made by another model, sorted (they need re-enrolment)."""
        self._check_open()
        query = (
            select(Person.name)
            .join(Face, Face.person_id == Person.id)
            .where(self._other_models())
            .group_by(Person.id, Person.name)
            .order_by(Person.name)
        )
        with self._reading("list faces of other models") as session:
            return list(session.scalars(query).all())

    def person_count(self) -> int:
        """People with at least one face of this gallery's model (the N that search can return).

        Kept in the cache and updated with every change, so identify does not count a million rows each time.
        """
        self._check_open()
        return self._current_index().people

    def has_person(self, name: str) -> bool:
        """Whether ``name`` is stored at all (with faces of any model)."""
        self._check_open()
        with self._reading("look up a person") as session:
            return session.scalar(select(Person.id).where(Person.name == name)) is not None

    def has_photo(self, name: str, photo_sha256: str) -> bool:
        """Whether this exact photo (by sha256) is already one of ``name``'s faces for this model."""
        self._check_open()
        query = (select(Face.id).join(Person, Face.person_id == Person.id)
                 .where(Person.name == name, Face.photo_sha256 == photo_sha256, Face.model_id == self.model_id))
        with self._reading("look up a photo") as session:
            return session.scalar(query.limit(1)) is not None

    def generation(self) -> int:
        """The database's change counter (bumped by every add/remove); mainly for tests and diagnostics."""
        self._check_open()
        with self._reading("read the generation") as session:
            return _read_generation(session)

    def search(self, vectors: np.ndarray, k: int = 5) -> list[list[Match]]:
        """For each query row: up to ``k`` people at their best face, nearest first; only this model's faces.

        ``vectors`` is (n, dim) (or one (dim,) row, answered as a list of one); rows are L2-normalised here.
        Candidates come from the (approximate) index; their distances are computed from the exact stored vectors.
        """
        self._check_open()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        queries = unit_rows(vectors, self.dim, what="query vectors")
        if queries.shape[0] == 0:
            return []
        loaded = self._loaded if self._loaded is not None else self._current_index()
        results = self._search_in(loaded, queries, int(k), check_generation=True)
        if results is None:    # the database moved on since our index was loaded: catch up, then answer
            results = self._search_in(self._current_index(), queries, int(k), check_generation=False)
        assert results is not None
        return results

    def _search_in(self, loaded: Loaded, queries: np.ndarray, k: int, *,
                   check_generation: bool) -> list[list[Match]] | None:
        """Candidates from ``loaded``, re-ranked with exact vectors; None when ``check_generation`` finds that the
        database is no longer at ``loaded``'s generation (read in the same snapshot as the vectors, so one search
        costs one round trip)."""
        total = loaded.live
        results: list[list[Match]] = [[] for _ in range(len(queries))]
        want = min(total, max(_WIDEN * k, RERANKED))
        pending = list(range(len(queries))) if total else []
        with self._face_reader("search the gallery") as read:
            if not pending and check_generation and read(np.zeros(0, np.int64))[0] != loaded.generation:
                return None
            while pending:
                ids = loaded.search(queries[pending], want)
                generation, rows = read(np.unique(ids[ids >= 0]))
                if check_generation and generation != loaded.generation:
                    return None
                still_short = []
                for row, id_row in zip(pending, ids):
                    results[row] = _best_people(queries[row], id_row, rows, k)
                    exhausted = bool((id_row < 0).any())
                    if len(results[row]) < k and want < total and not exhausted:
                        still_short.append(row)
                pending = still_short
                want = min(total, want * _WIDEN)
        return results

    @contextmanager
    def _face_reader(self, action: str) -> Iterator[Callable[[np.ndarray], tuple[int, FaceRows]]]:
        """A function from face ids to (generation, {face id: (name, stored vector)}), both of one snapshot.

        SQLite: one plain statement on the driver connection (each statement is its own snapshot), the held write
        transaction's inside ``locked()`` so it sees that block's changes, else a pooled one: identify's whole
        database cost at 1M faces went from 0.25 to 0.08 ms, the ORM's part of a search every door waits on.
        PostgreSQL: the session's read transaction (``_face_rows``)."""
        if not db.is_sqlite(self._engine):
            with self._reading(action) as session:
                yield lambda ids: (_read_generation(session), self._face_rows(session, ids))
            return
        with db.translated(self.db_path, action):
            if self._tx is not None:
                self._tx.flush()
                held = self._tx.connection().connection.driver_connection
                yield lambda ids: self._sqlite_face_rows(held, ids)
                return
            pooled = self._engine.raw_connection()
            try:
                yield lambda ids: self._sqlite_face_rows(pooled.driver_connection, ids)
            finally:
                pooled.close()

    def _sqlite_face_rows(self, connection: sqlite3.Connection, ids: np.ndarray) -> tuple[int, FaceRows]:
        rows, generation = [], None
        for start in range(0, len(ids), _CHUNK):
            chunk = [int(i) for i in ids[start:start + _CHUNK]]
            sql = _SQLITE_FACES.format(",".join("?" * len(chunk)))
            for generation, *row in connection.execute(sql, [*chunk, self.model_id, self.dim]):
                rows.append(row)
        if generation is None:      # no rows: the generation on its own
            found = connection.execute(_GENERATION_SQL).fetchone()
            if found is None:
                raise GalleryError(_NO_META.format(self.db_path))
            generation = found[0]
        return int(generation), self._decoded(rows)

    def rebuild_index(self) -> None:
        """Rebuild (and retrain) the FAISS cache from the database and write it beside the database."""
        self._check_open()
        self._forget_index()
        if self.read_only:
            self._current_index()
            return
        try:
            with self.locked():
                self._rebuild(self._session())
        except OSError as exc:
            raise GalleryError(f"cannot write the face index in {self.home}: {exc}") from exc

    def close(self) -> None:
        """Release the database (the cache is always written as changes happen)."""
        if self._closed:
            return
        self._closed = True
        self._loaded = None
        self._engine.dispose()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Gallery(home={str(self.home)!r}, model_id={self.model_id!r}, dim={self.dim})"

    # ------------------------------------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise GalleryError(f"gallery {self.home} is closed")

    def _check_writable(self, action: str) -> None:
        self._check_open()
        if self.read_only:
            raise GalleryError(f"gallery {self.home} is read-only for this user; cannot {action}")

    def _session(self) -> Session:
        assert self._tx is not None
        return self._tx

    @contextmanager
    def _reading(self, action: str) -> Iterator[Session]:
        """The held write transaction inside ``locked()``, else a fresh read transaction (one snapshot)."""
        with db.translated(self.db_path, action):
            if self._tx is not None:
                yield self._tx
                return
            with Session(self._engine) as session, session.begin():
                yield session

    def _init_schema(self) -> None:
        """Check an existing database is a oneshot gallery of a known schema version; upgrade it if older.

        Only reads unless an upgrade (or, for a server database, the first creation) is needed, so opening takes
        no write lock.
        """
        where = str(self.db_path)
        with db.translated(self.db_path, "open the gallery"):
            with self._engine.connect() as conn:
                present = migrations.tables(conn)
                current = migrations.version(conn, where) if present else None
                conn.rollback()
            if current == migrations.SCHEMA_VERSION:
                return
            if current is not None and current > migrations.SCHEMA_VERSION:
                migrations.upgrade_check(current, where)
            if self.read_only:
                raise GalleryError(f"gallery {self.home} is read-only for this user; cannot create or upgrade "
                                   "the gallery schema")
            with self._writer.begin() as conn:
                if migrations.tables(conn):
                    migrations.upgrade(conn, where)
                else:
                    migrations.create(conn)

    def _people_query(self) -> Select[tuple[str, int, int, datetime, datetime]]:
        """Name, faces of this model, faces of other models and timestamps per person: correlated counts, so a
        listing streams in name order and one person's lookup reads only their faces."""
        mine = (select(func.count()).select_from(Face)
                .where(Face.person_id == Person.id, Face.model_id == self.model_id).scalar_subquery())
        everything = select(func.count()).select_from(Face).where(Face.person_id == Person.id).scalar_subquery()
        return select(Person.name, mine, everything - mine, Person.created_at, Person.updated_at)

    def _other_models(self) -> Any:
        """Faces of another model, written as two index ranges (SQLite's planner uses none for ``!=``)."""
        return or_(Face.model_id < self.model_id, Face.model_id > self.model_id)

    def _mine(self) -> tuple[Any, Any]:
        """Only faces made by this gallery's model (at its dim) are indexed and searched."""
        return Face.model_id == self.model_id, Face.dim == self.dim

    def _forget_index(self) -> None:
        self._loaded = None

    def _face_rows(self, session: Session, ids: np.ndarray) -> FaceRows:
        """PostgreSQL: name and stored vector of each face id that still exists (ids removed meanwhile are simply
        absent), in two queries by id rather than a join: with literal id lists PostgreSQL plans (and locks) only
        the partitions holding those ids, while a join on ``person_id`` would plan and lock every partition of
        ``people`` and so wait for any partition an erasure is rewriting."""
        rows = []
        for start in range(0, len(ids), _CHUNK):
            chunk = {"ids": [int(i) for i in ids[start:start + _CHUNK]], "model": self.model_id, "dim": self.dim}
            faces = session.execute(_FACES, chunk).all()
            owners = sorted({int(person_id) for _, person_id, _ in faces})
            names = dict(session.execute(_NAMES, {"ids": owners}).all()) if owners else {}
            rows += [(face_id, names[person_id], blob) for face_id, person_id, blob in faces if person_id in names]
        return self._decoded(rows)

    def _decoded(self, rows: Any) -> FaceRows:
        """(face id, name, blob) rows as {face id: (name, vector)}; a damaged vector is left out, not fatal."""
        out: FaceRows = {}
        for face_id, name, blob in rows:
            vector = from_blob(blob, self.dim)
            if vector is not None:
                out[int(face_id)] = (name, vector)
        return out

    def _current_index(self) -> Loaded:
        """The index for the current generation: in memory, else from the cache files, else reconciled/rebuilt."""
        with self._reading("read the gallery") as session:
            generation = _read_generation(session)
        if self._loaded is not None and self._loaded.generation == generation:
            return self._loaded
        loaded = self._cache.load()
        if loaded is not None and loaded.generation == generation:
            self._loaded = loaded
            return loaded
        if self.read_only:
            with self._reading("read the gallery") as session:
                self._loaded = self._build(session, save=False)
            return self._loaded
        try:
            with self.locked():
                session = self._session()
                if loaded is None or self._cache.meta() != loaded.meta:
                    loaded = self._cache.load()   # another process changed the files meanwhile
                self._loaded = self._sync(session, _read_generation(session), loaded)
        except OSError:
            # Only the cache could not be written; build in memory from the database.
            with self._reading("read the gallery") as session:
                self._loaded = self._build(session, save=False)
        return self._loaded

    def _cache_change(self, session: Session, before: int, generation: int, *,
                      added: tuple[np.ndarray, np.ndarray] | None = None, removed: np.ndarray | None = None,
                      people_delta: int = 0) -> None:
        """Apply one change (database at ``before`` → ``generation``, uncommitted, lock held) to the cache files
        and the in-memory index; reconcile first when the cache is not at ``before``. Cache write failures
        (a full disk) are not the enrolment's failure: the cache is invalidated and rebuilt later."""
        self._cache_touched = True
        # the in-memory index follows the change when it was at ``before``; otherwise it is dropped (and reloaded)
        follow = self._loaded if self._loaded is not None and self._loaded.generation == before else None
        try:
            meta = self._cache.meta()
            if meta is None or meta.generation != before:
                self._loaded = self._sync(session, generation, self._cache.load())
                return
            if added is not None and len(added[0]):
                ids, vectors = added
                encoder = self._cache.encoder(meta)
                if encoder is None or int(ids.min()) <= self._last_id(meta):
                    self._loaded = self._sync(session, generation, None)
                    return
                codes = index.encode(encoder, vectors)
                meta = self._cache.append(meta, ids, codes, generation, meta.people + people_delta)
                if follow is not None:
                    follow.appended(self._cache, meta, ids, codes)
            if removed is not None:
                meta = self._cache.erase(meta, removed, generation, meta.people + people_delta)
                if follow is not None:
                    follow.erased(self._cache, meta, removed)
            if follow is not None:
                follow.meta = meta
            self._loaded = follow
            if index.needs_retraining(meta.nlist, meta.live):
                self._loaded = self._rebuild(session)
        except OSError:
            self._forget_index()
            self._quietly(self._cache.discard_meta)

    def _last_id(self, meta: cache_files.Meta) -> int:
        """The largest face id ever cached (the slots file is sorted by id; erased records keep theirs)."""
        slots = self._cache.slots(meta) if meta.records else None
        return int(slots["id"][meta.records - 1]) if slots is not None and len(slots) else -1

    def _sync(self, session: Session, generation: int, loaded: Loaded | None) -> Loaded:
        """Bring a cache of another generation up to ``generation`` (lock held): erase ids the database no longer
        has, append ids it gained; rebuild when that is impossible or the index needs retraining."""
        self._cache_touched = True
        self._clean_temp()
        if loaded is None:
            return self._rebuild(session)
        meta = loaded.meta
        cached = self._cache.live_ids(meta)
        truth = np.array(session.scalars(select(Face.id).where(*self._mine()).order_by(Face.id)).all(),
                         dtype=np.int64)
        if cached is None:
            return self._rebuild(session)
        gone = np.setdiff1d(cached, truth, assume_unique=True)
        new = np.setdiff1d(truth, cached, assume_unique=True)
        people = self._count_people(session)
        if len(new) and int(new.min()) <= self._last_id(meta):
            return self._rebuild(session)
        if index.needs_retraining(meta.nlist, len(truth)):
            return self._rebuild(session)
        encoder = self._cache.encoder(meta)
        if encoder is None:
            return self._rebuild(session)
        if len(gone):
            meta = self._cache.erase(meta, gone, generation, people)
            loaded.erased(self._cache, meta, gone)
        for start in range(0, len(new), _CHUNK):
            ids, vectors = self._vectors(session, new[start:start + _CHUNK])
            codes = index.encode(encoder, vectors)
            meta = self._cache.append(meta, ids, codes, generation, people)
            loaded.appended(self._cache, meta, ids, codes)
        meta = replace(meta, generation=generation, people=people)
        self._cache.write_meta(meta)
        loaded.meta = meta
        return loaded

    def _vectors(self, session: Session, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = session.execute(select(Face.id, Face.vector).where(Face.id.in_([int(i) for i in ids]))
                               .order_by(Face.id)).all()
        return self._decode(rows)

    def _decode(self, rows: Any) -> tuple[np.ndarray, np.ndarray]:
        ids, vectors = [], []
        for face_id, blob in rows:
            vector = from_blob(blob, self.dim)
            if vector is not None:       # damaged row: leave it out rather than fail every search
                ids.append(int(face_id))
                vectors.append(vector)
        matrix = np.stack(vectors) if vectors else np.zeros((0, self.dim), np.float32)
        return np.asarray(ids, dtype=np.int64), matrix

    def _count_people(self, session: Session) -> int:
        query = select(func.count(func.distinct(Face.person_id))).where(*self._mine())
        return int(session.scalar(query) or 0)

    def _build(self, session: Session, *, save: bool) -> Loaded:
        """Train an index for every face of this model and fill it, streaming vectors in chunks; write the three
        cache files when ``save`` (lock held)."""
        count = int(session.scalar(select(func.count()).select_from(Face).where(*self._mine())) or 0)
        nlist = index.lists_for(count)
        step = max(1, count // max(1, index.train_sample_size(nlist)))
        sample_rows = session.execute(
            select(Face.id, Face.vector).where(*self._mine(), Face.id % step == 0).limit(
                index.train_sample_size(nlist) * 2)
        ).all() if nlist > 1 else []
        _, sample = self._decode(sample_rows)
        if nlist > 1 and len(sample) < nlist:
            nlist = 1
        ivf = index.train(self.dim, sample, nlist)
        encoder = index.deserialize(index.serialize(ivf), self.dim)
        all_ids, all_codes = [], []
        query = select(Face.id, Face.vector).where(*self._mine()).order_by(Face.id)
        result = session.execute(query.execution_options(yield_per=_CHUNK))
        for chunk in result.partitions(_CHUNK):
            ids, vectors = self._decode(chunk)
            all_ids.append(ids)
            all_codes.append(index.encode(encoder, vectors))
        ids = np.concatenate(all_ids) if all_ids else np.zeros(0, np.int64)
        codes = np.concatenate(all_codes) if all_codes else np.zeros((0, index.code_size(ivf)), np.uint8)
        del all_codes
        people = self._count_people(session)
        generation = _read_generation(session)
        if save:
            meta = self._cache.write_full(ivf, ids, codes, generation, people, trained_for=len(ids))
            records = self._cache.slots(meta)
            if records is None:
                raise OSError(f"cannot read {self.home / cache_files.SLOTS_FILE}")
        else:
            meta = cache_files.Meta(cache_files.FORMAT, self.model_id, self.dim, generation, len(ids), len(ids),
                                    people, int(ivf.nlist), len(ids), index.code_size(ivf), "memory")
            records = cache_files.records_of(ids, codes)
        index.fill(ivf, ids, codes)
        del codes
        return Loaded(ivf, meta, records, cache_files.positions(ids))

    def _rebuild(self, session: Session) -> Loaded:
        """Build from the database and replace the cache files (lock held); leftovers of crashed writes go too."""
        self._clean_temp()
        self._loaded = self._build(session, save=True)
        return self._loaded

    def _clean_temp(self) -> None:
        """Delete temporary cache files crashed writes left in the home (lock held, and every cache write holds
        it, so none is in use): they may hold codes of people erased since. (A new database is made in a
        ``.gallery.sqlite3.*.tmp`` file without the lock, but holds only the empty schema: those are left alone.)"""
        cache_files.clean_temp(self.home, cache_files.TEMP_PREFIXES)

    def _after_erasure(self, relations: list[str]) -> None:
        """Make freed database space hold no trace: PostgreSQL rewrites the partitions that held the erased rows
        (SQLite's ``secure_delete`` has already zeroed the freed pages)."""
        if db.is_sqlite(self._engine) or not relations:
            return
        with db.translated(self.db_path, "vacuum after erasure"):
            pg.vacuum(self._engine, relations)

    @staticmethod
    def _quietly(action: Any) -> None:
        try:
            action()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------------- helpers


def check_home(home: Path | str) -> Path:
    """The gallery home as a Path, refusing ``""`` (it would silently mean the current directory) and an existing
    path that is not a directory (a regular file looks like an empty gallery otherwise)."""
    if isinstance(home, str) and not home.strip():
        raise GalleryError("gallery home is an empty path; give a directory")
    path = Path(home)
    if path.exists() and not path.is_dir():
        raise GalleryError(f"gallery home {path} exists but is not a directory")
    return path


def _writable(directory: Path, file: Path | None) -> bool:
    """Whether this process can create files in ``directory`` (creating it if missing) and write ``file``."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise GalleryError(f"gallery home {directory} exists but is not a directory") from None
    except OSError as exc:
        raise GalleryError(f"gallery home {directory} cannot be created: {exc.strerror or exc}") from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        return False
    return file is None or not file.exists() or os.access(file, os.W_OK)


def _create_sqlite(path: Path, read_only: bool) -> bool:
    """Create a new gallery database atomically (schema in a temp file, then a hard link to the final name), so
    an empty or half-made database never appears under ``path``. False when it already existed."""
    if path.exists():
        return False
    if read_only:
        raise GalleryError(f"cannot create gallery database {path}: the directory is read-only for this user")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o600)
    except OSError as exc:
        raise GalleryError(f"cannot create gallery database {path}: {exc.strerror or exc}") from exc
    try:
        os.unlink(tmp)   # SQLite must find no file (an empty one is what check_file refuses)
        conn = sqlite3.connect(tmp)
        try:
            # 1 KB vectors fill 4 KB pages badly (3 rows and ~0.5 KB unused each); 16 KB pages waste ~5x less
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("VACUUM")   # page_size takes effect on an empty database once it is written
            conn.close()
            os.chmod(tmp, 0o600)
            engine = db.make_engine(f"sqlite:///{tmp}")
            try:
                with db.writer(engine).begin() as sa_conn:
                    migrations.create(sa_conn)
            finally:
                engine.dispose()
        finally:
            conn.close()
        try:
            os.link(tmp, path)
            created = True
        except FileExistsError:
            created = False   # another process created it meanwhile: use theirs
        cache_files.fsync_dir(path.parent)
        return created
    except (OSError, sqlite3.Error, SQLAlchemyError) as exc:
        raise GalleryError(f"cannot create gallery database {path}: {db.one_line(exc)}") from exc
    finally:
        for leftover in (tmp, tmp + "-journal"):
            try:
                os.unlink(leftover)
            except OSError:
                pass


def _redacted(url: str) -> str:
    """A database URL without its password, for messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def _person_info(name: str, faces: int, others: int, created: datetime, updated: datetime) -> PersonInfo:
    return PersonInfo(name=name, faces=int(faces), created_at=created, updated_at=updated,
                      other_model_faces=int(others))


def _best_people(query: np.ndarray, id_row: np.ndarray, rows: dict[int, tuple[str, np.ndarray]],
                 k: int) -> list[Match]:
    """Exact distance of each candidate face, each person at their best face, the nearest ``k`` people."""
    found = [(int(i), *rows[int(i)]) for i in id_row if int(i) in rows]
    if not found:
        return []
    ips = np.stack([vector for _, _, vector in found]) @ query
    best: dict[str, Match] = {}
    for (face_id, name, _), distance in zip(found, ip_to_distance(ips)):
        if name not in best or distance < best[name].distance:
            best[name] = Match(name=name, distance=float(distance), face_id=face_id)
    return sorted(best.values(), key=lambda m: (m.distance, m.name))[:k]


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")


def _check_sha256(photo_sha256: str) -> str:
    if not isinstance(photo_sha256, str) or not _SHA256.fullmatch(photo_sha256.lower()):
        raise ValueError(f"photo_sha256 must be 64 hex digits, got {photo_sha256!r}")
    return photo_sha256.lower()


def _read_generation(session: Session) -> int:
    generation = session.scalar(_GENERATION)
    if generation is None:
        raise GalleryError(_NO_META.format(session.get_bind().url.database))
    return int(generation)


def _bump_generation(session: Session) -> int:
    """Increment the change counter inside the caller's transaction and return the new value."""
    generation = session.execute(
        update(Meta).where(Meta.id == META_ROW_ID).values(generation=Meta.generation + 1).returning(Meta.generation)
    ).scalar_one_or_none()
    if generation is None:
        raise GalleryError(_NO_META.format(session.get_bind().url.database))
    return int(generation)
