"""ORM tables of the gallery database, the source of truth (the FAISS index is only a cache of ``faces``).

Deliberately minimal: a person is a unique name; each face row holds one vector, the model that made it and the
sha256 of its photo (never the photo itself), so erasing a person means deleting exactly these rows.

On PostgreSQL both tables are hash-partitioned by id (``gallery.pg``): erasure rewrites only the partitions that held
the person's rows. A partitioned table cannot have a unique constraint on ``name`` (it must include the partition
key), so there ``name`` gets a plain index and a trigger enforces uniqueness; SQLite keeps ``UNIQUE (name)``.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, TypeDecorator, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA_VERSION = 2
META_ROW_ID = 1


def utcnow() -> datetime:
    """Current time as an aware UTC datetime (naive datetimes are ambiguous once they are stored)."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetime stored as ISO-8601 text; SQLite has no timezone-aware type of its own."""

    impl = String(32)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(timezone.utc).isoformat()

    def process_result_value(self, value: str | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of the gallery tables."""


class Person(Base):
    """An enrolled person; the name is the user-facing identity, so it is unique."""

    __tablename__ = "people"
    __table_args__ = (
        UniqueConstraint("name").ddl_if(dialect="sqlite"),
        Index("ix_people_name", "name").ddl_if(dialect="postgresql"),
        {"postgresql_partition_by": "HASH (id)"},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    faces: Mapped[list[Face]] = relationship(
        back_populates="person", cascade="all, delete-orphan", passive_deletes=True
    )


class Face(Base):
    """One face vector of a person; several per person are allowed (several photos, several models)."""

    __tablename__ = "faces"
    # AUTOINCREMENT: a face id (also the FAISS id and Match.face_id) is never reused after a deletion.
    # PostgreSQL: a serial (sequence) id, likewise never reused; the hash partitions of ``id`` let identify's
    # ``id IN (...)`` read (and lock) only the partitions holding the candidates.
    __table_args__ = {"sqlite_autoincrement": True, "postgresql_partition_by": "HASH (id)"}

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(String(128), index=True)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # unit-norm little-endian float16, dim * 2 bytes (float32 from earlier versions)
    photo_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    person: Mapped[Person] = relationship(back_populates="faces")


class Meta(Base):
    """A single row; ``generation`` is bumped in the same transaction as every change, so a cached index can
    tell whether it still matches the database."""

    __tablename__ = "meta"

    id: Mapped[int] = mapped_column(primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    schema_version: Mapped[int] = mapped_column(Integer, default=SCHEMA_VERSION)
