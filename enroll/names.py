"""Person names: what a user may type, checked once before anything reaches the gallery.

Names are shown on one line in the terminal and in JSON, and are the handle for `remove`; they never become file
paths, but a name with a path separator or control characters almost always means a mistake (a path pasted as a
name, a stray newline) and would make the one-line output lie. So those are refused with a one-line message, and
everything a real name needs — letters of any script, digits, spaces, apostrophes, hyphens, dots — is allowed.
"""
from __future__ import annotations

import os
import unicodedata
from pathlib import Path

MAX_NAME_LENGTH = 200


class InvalidName(ValueError):
    """A name that cannot be enrolled; the message is one line saying why."""


def validate_name(raw: str) -> str:
    """The name as stored: NFC-normalised, stripped, inner runs of spaces collapsed to one.

    NFC makes "é" typed as one code point or as e + accent the same person; collapsing spaces makes
    "Bob  Lee" and "Bob Lee" the same person. Raises `InvalidName` for an empty or whitespace-only name, one over
    `MAX_NAME_LENGTH` characters, or one containing `/`, `\\`, control or other invisible format characters.
    """
    if not isinstance(raw, str):
        raise InvalidName(f"name must be text, not {type(raw).__name__}")
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        raise InvalidName("name is empty; give a person's name")
    for char in name:
        if char in "/\\":
            raise InvalidName(f"name {_shown(name)} contains a path separator ({char!r}); give a person's name")
        if unicodedata.category(char)[0] == "C" or unicodedata.category(char) in ("Zl", "Zp"):
            raise InvalidName(
                f"name {_shown(name)} contains a control character (U+{ord(char):04X}); give a plain name"
            )
    name = " ".join(name.split())
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"name is too long ({len(name)} characters; the limit is {MAX_NAME_LENGTH})")
    return name


def name_from_path(path: str | os.PathLike[str]) -> str:
    """The name a photo enrols under when none is given: its file stem (`staff/alice.jpg` → `alice`)."""
    return Path(path).stem


def _shown(name: str) -> str:
    """The offending name for an error message: `repr` escapes invisible characters, so it stays on one line."""
    return repr(name if len(name) <= 60 else name[:57] + "...")
