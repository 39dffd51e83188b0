"""Face gallery: SQLite (via SQLAlchemy 2) is the source of truth, a FAISS index beside it is a rebuildable cache.

Public API (contract in docs/ARCHITECTURE.md)::

    from gallery import Gallery, GalleryError, UnknownPerson, Match, PersonInfo, StaleFaces

Importing this package loads SQLAlchemy and NumPy but neither torch nor faiss (faiss is imported on first search).
"""
from __future__ import annotations

from gallery.errors import GalleryError, UnknownPerson
from gallery.results import Match, PersonInfo, StaleFaces
from gallery.store import DB_FILE, Gallery
from gallery.index import INDEX_FILE, META_FILE

__all__ = ["DB_FILE", "INDEX_FILE", "META_FILE", "Gallery", "GalleryError", "Match", "PersonInfo", "StaleFaces",
           "UnknownPerson"]
