"""The Gallery: enrol, search and erase people, with SQLite as the truth and FAISS as a rebuildable cache.

Design choices (and why):

* One engine per Gallery, one short session per operation: nothing ORM-bound escapes, and another process can
  change the database between calls. Every change bumps ``meta.generation`` in the same transaction, and every
  search first reads the generation, so a stale in-memory or on-disk index is noticed and replaced.
* The on-disk index is written while holding SQLite's write lock and only if its generation is still current,
  so a process with an old in-memory index can never write back vectors of a person someone else just erased.
* ``add_face`` updates the in-memory index incrementally and writes the cache file lazily (at ``close`` or the
  next rebuild): writing the whole index after each of n enrolments in one process would cost O(n^2). A cache
  that was not written (no ``close``, a crash) is simply detected as stale and rebuilt by the next process.
* ``remove_person`` rewrites the cache immediately: the erased vectors must not survive in ``index.faiss``.

A Gallery is not thread-safe; use one per thread (several processes are fine).
"""
from __future__ import annotations

import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from types import TracebackType

import numpy as np
from sqlalchemy import ColumnElement, Engine, Select, case, delete, func, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from gallery import db, index
from gallery.errors import GalleryError, UnknownPerson
from gallery.results import Match, PersonInfo, StaleFaces
from gallery.schema import META_ROW_ID, SCHEMA_VERSION, Base, Face, Meta, Person, utcnow
from gallery.search import LoadedIndex
from gallery.vectors import from_blob, to_blob, unit_rows

DB_FILE = "gallery.sqlite3"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NO_META = "gallery database {} has no meta row; it was not created by oneshot or was damaged"


class Gallery:
    """Enrolled people and their face vectors under ``home`` (see docs/ARCHITECTURE.md, ``gallery/``)."""

    def __init__(self, home: Path, model_id: str, dim: int) -> None:
        """Open (creating if missing) the gallery in ``home`` for vectors of ``model_id`` with ``dim`` floats.

        Raises GalleryError if ``home`` cannot be created or written, or the database is corrupt (the corrupt
        file is never modified); ValueError for a bad ``model_id``/``dim``.
        """
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model_id must be a non-empty string, got {model_id!r}")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.home = Path(home)
        self.model_id = model_id
        self.dim = int(dim)
        self.db_path = self.home / DB_FILE
        self._loaded: LoadedIndex | None = None
        self._dirty = False  # in-memory index is newer than index.faiss
        self._closed = True  # until the engine exists

        _prepare_home(self.home)
        db.check_header(self.db_path)  # before SQLite touches a foreign file
        _create_private_file(self.db_path)
        engine = db.make_engine(self.db_path)
        try:
            db.check_integrity(engine, self.db_path)
            self._engine: Engine = engine
            self._writer: Engine = db.writer(engine)
            self._init_schema()
        except BaseException:
            engine.dispose()
            raise
        self._closed = False

    # ----------------------------------------------------------------------------------------------- public API

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
        if self._loaded is None:
            self._current_index()  # so this face is applied incrementally and close() leaves a current cache
        now = utcnow()
        with db.translated(self.db_path, f"add a face for {name!r}"), Session(self._writer) as session:
            with session.begin():
                person = session.scalars(select(Person).where(Person.name == name)).one_or_none()
                created = person is None
                if person is None:
                    person = Person(name=name, created_at=now, updated_at=now)
                    session.add(person)
                else:
                    person.updated_at = now
                    if drop_other_models:
                        session.execute(
                            delete(Face).where(Face.person_id == person.id, Face.model_id != self.model_id)
                        )
                face = Face(
                    person=person, model_id=self.model_id, dim=self.dim, vector=to_blob(row[0]),
                    photo_sha256=sha, created_at=now,
                )
                session.add(face)
                generation = _bump_generation(session)
                session.flush()
                face_id = int(face.id)
        loaded = self._loaded
        if loaded is not None and loaded.generation == generation - 1:
            loaded.add(face_id, name, row[0], generation)  # nobody else changed the DB meanwhile
            self._dirty = True
        else:
            self._forget_index()
        return face_id, created

    def remove_person(self, name: str) -> int:
        """Erase ``name`` and all their faces (every model) in one transaction, then rewrite the index.

        Returns the number of faces deleted; raises UnknownPerson if the name is not enrolled. With
        ``secure_delete`` the freed database space is zeroed, and the index files are replaced, so no file under
        the home directory keeps the name or the vectors afterwards.
        """
        self._check_open()
        with db.translated(self.db_path, f"remove {name!r}"), Session(self._writer) as session:
            with session.begin():
                person_id = session.scalar(select(Person.id).where(Person.name == name))
                if person_id is None:
                    raise UnknownPerson(name)
                faces = session.scalar(select(func.count()).select_from(Face).where(Face.person_id == person_id))
                session.execute(delete(Face).where(Face.person_id == person_id))
                session.execute(delete(Person).where(Person.id == person_id))
                _bump_generation(session)
        self._forget_index()  # drop the erased vectors from memory too
        try:
            self._rebuild()
        except (GalleryError, OSError) as exc:
            try:
                index.discard(self.home)
            except OSError as discard_exc:
                raise GalleryError(
                    f"{name!r} was removed from {self.db_path} but the old index in {self.home} could not be "
                    f"rewritten ({exc}) or deleted ({discard_exc}); delete {index.INDEX_FILE} by hand"
                ) from discard_exc
        return int(faces or 0)

    def people(self) -> list[PersonInfo]:
        """Every stored person, sorted by name (including people with only other-model faces)."""
        self._check_open()
        query = self._people_query().order_by(Person.name)
        with db.translated(self.db_path, "list people"), Session(self._engine) as session, session.begin():
            rows = session.execute(query).all()
        return [_person_info(*row) for row in rows]

    def person(self, name: str) -> PersonInfo:
        """One stored person, counted as ``people`` counts them; raises UnknownPerson if the name is not stored."""
        self._check_open()
        query = self._people_query().where(Person.name == name)
        with db.translated(self.db_path, "look up a person"), Session(self._engine) as session, session.begin():
            row = session.execute(query).one_or_none()
        if row is None:
            raise UnknownPerson(name)
        return _person_info(*row)

    def stale_faces(self) -> StaleFaces:
        """How many people and faces were made by another model than this gallery's (see StaleFaces).

        One aggregate over a per-person GROUP BY, so it costs one pass over the faces' (indexed) model ids.
        """
        self._check_open()
        other = case((Face.model_id != self.model_id, 1), else_=0)
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
        with db.translated(self.db_path, "count faces of other models"), Session(self._engine) as session:
            with session.begin():
                people, faces, unrecognisable = session.execute(query).one()
        return StaleFaces(people=int(people), faces=int(faces), unrecognisable=int(unrecognisable))

    def stale_names(self) -> list[str]:
        """Names of the people holding at least one face made by another model, sorted (they need re-enrolment)."""
        self._check_open()
        query = (
            select(Person.name)
            .join(Face, Face.person_id == Person.id)
            .where(Face.model_id != self.model_id)
            .group_by(Person.id)
            .order_by(Person.name)
        )
        with db.translated(self.db_path, "list faces of other models"), Session(self._engine) as session:
            with session.begin():
                return list(session.scalars(query).all())

    def person_count(self) -> int:
        """People with at least one face of this gallery's model (the N that search can return)."""
        self._check_open()
        query = select(func.count(func.distinct(Face.person_id))).where(Face.model_id == self.model_id)
        with db.translated(self.db_path, "count people"), Session(self._engine) as session, session.begin():
            return int(session.scalar(query) or 0)

    def has_person(self, name: str) -> bool:
        """Whether ``name`` is stored at all (with faces of any model)."""
        self._check_open()
        query = select(Person.id).where(Person.name == name)
        with db.translated(self.db_path, "look up a person"), Session(self._engine) as session, session.begin():
            return session.scalar(query) is not None

    def has_photo(self, name: str, photo_sha256: str) -> bool:
        """Whether this exact photo (by sha256) is already one of ``name``'s faces for this model."""
        self._check_open()
        query = (select(Face.id).join(Person, Face.person_id == Person.id)
                 .where(Person.name == name, Face.photo_sha256 == photo_sha256, Face.model_id == self.model_id))
        with db.translated(self.db_path, "look up a photo"), Session(self._engine) as session, session.begin():
            return session.scalar(query.limit(1)) is not None

    def generation(self) -> int:
        """The database's change counter (bumped by every add/remove); mainly for tests and diagnostics."""
        self._check_open()
        with db.translated(self.db_path, "read the generation"), Session(self._engine) as session:
            with session.begin():
                return _read_generation(session)

    def search(self, vectors: np.ndarray, k: int = 5) -> list[list[Match]]:
        """For each query row: up to ``k`` people at their best face, nearest first; only this model's faces.

        ``vectors`` is (n, dim) (or one (dim,) row, answered as a list of one); rows are L2-normalised here.
        """
        self._check_open()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        queries = unit_rows(vectors, self.dim, what="query vectors")
        if queries.shape[0] == 0:
            return []
        return self._current_index().search(queries, int(k))

    def rebuild_index(self) -> None:
        """Rebuild the FAISS cache from SQLite and write it (atomically) beside the database."""
        self._check_open()
        self._forget_index()
        try:
            self._rebuild()
        except OSError as exc:
            raise GalleryError(f"cannot write the face index in {self.home}: {exc}") from exc

    def close(self) -> None:
        """Write a pending index update (best effort: it is only a cache) and release the database."""
        if self._closed:
            return
        try:
            self._flush_index()
        finally:
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

    def _init_schema(self) -> None:
        """Create missing tables and the meta row under the write lock (two first runs may race)."""
        with db.translated(self.db_path, "create the schema"), self._writer.begin() as conn:
            Base.metadata.create_all(conn)
            conn.execute(
                sqlite_insert(Meta)
                .values(id=META_ROW_ID, generation=0, schema_version=SCHEMA_VERSION)
                .on_conflict_do_nothing()
            )
            version = conn.scalar(select(Meta.schema_version).where(Meta.id == META_ROW_ID))
        if version is None or version > SCHEMA_VERSION:
            raise GalleryError(
                f"gallery database {self.db_path} has schema version {version}, newer than this program "
                f"understands ({SCHEMA_VERSION}); upgrade oneshot"
            )

    def _people_query(self) -> Select[tuple[str, int, int, datetime, datetime]]:
        """Name, faces of this model, faces of other models and timestamps per person (one GROUP BY)."""
        mine = func.coalesce(func.sum(case((Face.model_id == self.model_id, 1), else_=0)), 0)
        others = func.count(Face.id) - mine
        return (
            select(Person.name, mine, others, Person.created_at, Person.updated_at)
            .outerjoin(Face, Face.person_id == Person.id)
            .group_by(Person.id)
        )

    def _my_faces(self) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
        """Only faces made by this gallery's model (at its dim) are indexed and searched."""
        return Face.model_id == self.model_id, Face.dim == self.dim

    def _forget_index(self) -> None:
        self._loaded = None
        self._dirty = False

    def _current_index(self) -> LoadedIndex:
        """The index for the current generation: in memory, else from disk if valid, else rebuilt."""
        with db.translated(self.db_path, "read the gallery"), Session(self._engine) as session, session.begin():
            generation = _read_generation(session)
            if self._loaded is not None and self._loaded.generation == generation:
                return self._loaded
            names = dict(
                session.execute(
                    select(Face.id, Person.name).join(Person).where(*self._my_faces())
                ).all()
            )
        cached = index.load(self.home, index.CacheKey(generation, self.model_id, self.dim, len(names)))
        if cached is not None and _ids_of(cached) == set(names):
            self._loaded = LoadedIndex(cached, generation, names)
            self._dirty = False
            return self._loaded
        try:
            return self._rebuild()
        except OSError:
            # Only the cache file could not be written; the rebuilt index is in memory and correct.
            assert self._loaded is not None
            return self._loaded

    def _rebuild(self) -> LoadedIndex:
        """Build from SQLite and save, holding the write lock so the file matches the database exactly.

        The in-memory index is set before saving, so an OSError from the save leaves a usable index.
        """
        with db.translated(self.db_path, "rebuild the face index"), Session(self._writer) as session:
            with session.begin():
                generation = _read_generation(session)
                rows = session.execute(
                    select(Face.id, Face.vector, Person.name).join(Person).where(*self._my_faces()).order_by(Face.id)
                ).all()
                ids, vectors, names = [], [], {}
                for face_id, blob, name in rows:
                    vector = from_blob(blob, self.dim)
                    if vector is None:
                        continue  # damaged row: leave it out rather than fail every search
                    ids.append(face_id)
                    vectors.append(vector)
                    names[face_id] = name
                matrix = np.stack(vectors) if vectors else np.zeros((0, self.dim), np.float32)
                built = index.build(self.dim, np.asarray(ids, dtype=np.int64), matrix)
                self._loaded = LoadedIndex(built, generation, names)
                self._dirty = True  # until saved; close() retries a failed save
                index.save(self.home, built, index.CacheKey(generation, self.model_id, self.dim, len(ids)))
                self._dirty = False
        return self._loaded

    def _flush_index(self) -> None:
        """Write the incrementally updated index, unless the database moved on (then it is stale: drop it)."""
        loaded = self._loaded
        if not self._dirty or loaded is None:
            return
        try:
            with Session(self._writer) as session, session.begin():
                if _read_generation(session) == loaded.generation:
                    key = index.CacheKey(loaded.generation, self.model_id, self.dim, int(loaded.index.ntotal))
                    index.save(self.home, loaded.index, key)
            self._dirty = False
        except (GalleryError, SQLAlchemyError, OSError):
            pass  # a missing or stale cache is detected and rebuilt by the next user


# ---------------------------------------------------------------------------------------------------- helpers


def _prepare_home(home: Path) -> None:
    """Create the home directory (private to the user) and prove we can create files in it."""
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=home)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise GalleryError(f"gallery home {home} is not a writable directory: {exc.strerror or exc}") from exc


def _create_private_file(path: Path) -> None:
    """Create an empty database file readable only by its owner (SQLite would use the umask, often 0644)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise GalleryError(f"cannot create gallery database {path}: {exc.strerror or exc}") from exc
    os.close(fd)


def _person_info(name: str, faces: int, others: int, created: datetime, updated: datetime) -> PersonInfo:
    return PersonInfo(name=name, faces=int(faces), created_at=created, updated_at=updated,
                      other_model_faces=int(others))


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")


def _check_sha256(photo_sha256: str) -> str:
    if not isinstance(photo_sha256, str) or not _SHA256.fullmatch(photo_sha256.lower()):
        raise ValueError(f"photo_sha256 must be 64 hex digits, got {photo_sha256!r}")
    return photo_sha256.lower()


def _read_generation(session: Session) -> int:
    generation = session.scalar(select(Meta.generation).where(Meta.id == META_ROW_ID))
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


def _ids_of(faiss_index: object) -> set[int]:
    """Face ids held by an IndexIDMap (checked against the database so a same-generation impostor is rejected)."""
    import faiss  # noqa: PLC0415 - lazy; only reached after index.load already imported it

    return set(faiss.vector_to_array(faiss_index.id_map).tolist())  # type: ignore[attr-defined]
