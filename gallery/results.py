"""Plain, frozen result records, so callers never hold ORM objects bound to a closed session."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Match:
    """One person found by a search, at their best (nearest) face.

    ``distance`` is Euclidean between unit vectors (0..2), the same scale as the model card's threshold.
    """

    name: str
    distance: float
    face_id: int


@dataclass(frozen=True)
class PersonInfo:
    """A stored person.

    ``faces`` counts only faces made by the gallery's model (the ones search can use); ``other_model_faces``
    counts faces made by a different embedder, which need re-enrolment. Listing shows every stored person, even one
    with only other-model faces, so nobody whose data is held is hidden from the operator.
    """

    name: str
    faces: int
    created_at: datetime  # UTC, timezone-aware
    updated_at: datetime  # UTC, timezone-aware; bumped when a face is added
    other_model_faces: int = 0


@dataclass(frozen=True)
class StaleFaces:
    """Faces in the gallery made by another model than the gallery's: their vectors cannot be compared with this
    model's, so search skips them until the people are re-enrolled.

    ``people`` hold at least one such face; ``faces`` counts them; ``unrecognisable`` of those people have no face
    of this model at all, so search cannot return them.
    """

    people: int = 0
    faces: int = 0
    unrecognisable: int = 0

    def __bool__(self) -> bool:
        return self.faces > 0
