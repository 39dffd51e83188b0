"""Face gallery: SQL (SQLite by default, or PostgreSQL) is the source of truth, a FAISS index beside it is a cache.

Public API (contract in docs/ARCHITECTURE.md and docs/GALLERY.md)::

    from gallery import Gallery, GalleryError, UnknownPerson, Match, PersonInfo, StaleFaces

Importing this package loads SQLAlchemy and NumPy but neither torch nor faiss (faiss is imported on first search).
"""
from __future__ import annotations

from gallery.cache import INDEX_FILE, META_FILE, SLOTS_FILE
from gallery.errors import GalleryError, UnknownPerson
from gallery.results import Match, PersonInfo, StaleFaces
from gallery.store import DB_FILE, Gallery, check_home

__all__ = ["DB_FILE", "INDEX_FILE", "META_FILE", "SLOTS_FILE", "Gallery", "GalleryError", "Match", "PersonInfo",
           "StaleFaces", "UnknownPerson", "check_home"]
