"""Exceptions the gallery raises.

Callers (the CLI) print ``str(exc)`` to the user, so every message is one line that names the file or the person
involved; the original low-level exception stays reachable through ``__cause__`` for debugging.
"""
from __future__ import annotations


class GalleryError(Exception):
    """The gallery cannot do its job: corrupt database, unwritable home directory, locked database, ..."""


class UnknownPerson(GalleryError):
    """A name that is not enrolled was asked for (remove/get); a GalleryError so one ``except`` catches both."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no person named {name!r} is enrolled")
        self.name = name
