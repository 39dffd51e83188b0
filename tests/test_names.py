"""Names: real names of any script pass (normalised); mistakes are refused with one line."""
from __future__ import annotations

import pytest

from enroll.names import MAX_NAME_LENGTH, InvalidName, name_from_path, validate_name


@pytest.mark.parametrize("raw, stored", [
    ("alice", "alice"),
    ("  Bob Lee \n", "Bob Lee"),
    ("Bob   Lee", "Bob Lee"),
    ("Zoë O'Brien-Smith Jr.", "Zoë O'Brien-Smith Jr."),
    ("Zoe\u0308", "Zoë"),                       # decomposed accent → the same stored name as the composed one
    ("山田 太郎", "山田 太郎"),
    ("Анна-Мария", "Анна-Мария"),
    ("IMG_0042", "IMG_0042"),
    ("x" * MAX_NAME_LENGTH, "x" * MAX_NAME_LENGTH),
])
def test_valid_names(raw: str, stored: str) -> None:
    assert validate_name(raw) == stored


@pytest.mark.parametrize("raw, why", [
    ("", "empty"),
    ("   ", "empty"),
    ("\t\n", "empty"),
    ("x" * (MAX_NAME_LENGTH + 1), "too long"),
    ("staff/alice", "path separator"),
    ("staff\\alice", "path separator"),
    ("ali\x00ce", "control character"),
    ("ali\nce", "control character"),
    ("ali\x1bce", "control character"),
    ("ali\u200bce", "control character"),     # zero-width space (category Cf)
    ("ali\u2028ce", "control character"),     # line separator would break one-line output
])
def test_invalid_names(raw: str, why: str) -> None:
    with pytest.raises(InvalidName) as info:
        validate_name(raw)
    assert why in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_name_from_path_is_the_stem() -> None:
    assert name_from_path("staff/alice.jpg") == "alice"
    assert name_from_path("IMG_0042.JPG") == "IMG_0042"
    assert name_from_path("Bob Lee.png") == "Bob Lee"
