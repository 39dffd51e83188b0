"""The oneshot service: enrol, identify, verify, remove, list, re-enrol — the CLI is a thin layer over this.

Every photo in a batch succeeds or fails on its own: failures are captured in its result (never raised), so the
good photos go through and the caller lists every failure. Only problems that make the whole gallery unusable — a
corrupt database, missing model weights — are raised, as one-line exceptions.

Heavy machinery (torch, faiss, SQLAlchemy) is imported on first use, and the gallery is opened lazily: reading a
bad photo needs neither the model nor the database, and `identify` against a home with no database creates none.

Vectors of different models are not comparable, so the gallery searches only the current model's faces. Faces an
older model made stay stored (and listed) until their person is re-enrolled: enrolling a person again with the
current model deletes their other-model faces in the same transaction, and `reenroll` does that for a folder of
photos named after the people.
"""
from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from enroll.decision import (
    DEFAULT_FPIR, backed_gallery_size, decide, impostor_pairs, threshold_for_gallery,
)
from enroll.names import InvalidName, name_from_path, validate_name

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from embedder.photo import PhotoBytes
    from embedder.types import Face
    from gallery import Gallery, PersonInfo, StaleFaces

DB_FILENAME = "gallery.sqlite3"
# Photos embedded in one network call and stored in one transaction by a bulk enrolment.
ENROL_BATCH = 16
# Gallery sizes shown in the threshold table of `oneshot model`.
TABLE_SIZES = (1, 10, 100, 1_000, 10_000, 100_000)
# What `reenroll DIR` treats as a photo (the formats embedder.photo reads); anything else in DIR is not looked at.
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm",
                            ".avif", ".heic", ".heif", ".mpo"})


class Engine(Protocol):
    """What the service needs from `embedder` (its flat API); tests substitute a fake with the same shape."""

    def load_photo(self, path: str | os.PathLike[str]) -> "Image.Image": ...
    def detect_faces(self, image: "Image.Image") -> list["Face"]: ...
    def aligned_faces(self, image: "Image.Image", faces: Sequence["Face"]) -> list[Any]: ...
    def face_embeddings(self, crops: Sequence[Any]) -> "np.ndarray": ...
    def enrolment_problem(self, image: "Image.Image", face: "Face") -> str | None: ...
    def model_card(self) -> dict[str, Any]: ...
    def model_id(self) -> str: ...


class ModelUnavailable(RuntimeError):
    """The shipped model (weights or card) cannot be loaded; nothing that needs faces can work."""


class Refused(Exception):
    """A readable photo that this operation will not accept (no face, several faces, looks like someone else).

    `reason` is the short kind of refusal a bulk enrolment's summary counts."""

    def __init__(self, message: str, reason: str = "refused") -> None:
        super().__init__(message)
        self.reason = reason


# Outcomes of one photo. "invalid" is bad input (exit 2), "error" an internal failure (exit 3); "refused" and
# "unknown" are a negative answer about a readable photo (exit 1). "reenrolled": added, and the person's faces made
# by another model deleted; "skipped": `reenroll` found nobody to re-enrol under this photo's name (not a failure).
ENROLLED, ADDED, DUPLICATE, REFUSED, INVALID, ERROR = "enrolled", "added", "duplicate", "refused", "invalid", "error"
REENROLLED, SKIPPED = "reenrolled", "skipped"


def default_engine() -> Engine:
    """The real embedder (imported here so that importing the service stays cheap)."""
    import embedder

    return embedder  # type: ignore[return-value]


def default_db(environ: dict[str, str] | None = None) -> str | None:
    """Where the gallery's truth lives when `--db` is not given: `$ONESHOT_DB` (e.g. `postgresql://host/db`), else
    None, meaning `gallery.sqlite3` in the home directory (which always holds this host's index cache)."""
    env = os.environ if environ is None else environ
    return env.get("ONESHOT_DB") or None


def default_home(environ: dict[str, str] | None = None) -> Path:
    """Where the gallery lives when `--home` is not given: `$ONESHOT_HOME`, else a per-user data directory.

    The data directory follows the XDG convention on Linux (`$XDG_DATA_HOME/oneshot`, default
    `~/.local/share/oneshot`), `~/Library/Application Support/oneshot` on macOS and `%LOCALAPPDATA%\\oneshot` on
    Windows, so biometric data never lands in the current directory by accident.
    """
    env = os.environ if environ is None else environ
    if env.get("ONESHOT_HOME"):
        return Path(env["ONESHOT_HOME"]).expanduser()
    if sys.platform == "win32" and env.get("LOCALAPPDATA"):
        return Path(env["LOCALAPPDATA"]) / "oneshot"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "oneshot"
    if env.get("XDG_DATA_HOME"):
        return Path(env["XDG_DATA_HOME"]).expanduser() / "oneshot"
    return Path.home() / ".local" / "share" / "oneshot"


Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class FaceAnswer:
    """One face of an identified photo. `distance` is to the nearest enrolled person (None: nobody enrolled);
    `name` is that person only when `distance < threshold`, else None (unknown)."""

    box: Box
    name: str | None
    distance: float | None
    threshold: float
    nearest: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"box": _rounded_box(self.box), "name": self.name, "distance": _round(self.distance),
                "threshold": _round(self.threshold)}


@dataclass
class Identification:
    """The answer for one photo: every face, the main face first, or the error that kept the photo from being read."""

    photo: str
    faces: list[FaceAnswer] = field(default_factory=list)
    threshold: float | None = None
    status: str = "ok"                       # "ok" or INVALID / ERROR
    error: str | None = None
    exc: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def largest(self) -> FaceAnswer | None:
        return self.faces[0] if self.faces else None

    @property
    def name(self) -> str | None:
        """The main face's name (None when unknown, no face, or the photo failed)."""
        return self.largest.name if self.largest else None

    @property
    def known(self) -> bool:
        """True when the photo was read, has a face, and its main face was named.

        The photo's answer is its main face (the person in front of the camera: the largest of the confidently
        detected faces, `embedder.detector.main_face_first`; smaller faces are often
        bystanders), so this is what `oneshot identify p.jpg && open_door` relies on.
        """
        return self.error is None and self.largest is not None and self.largest.name is not None

    def to_json(self) -> dict[str, Any]:
        largest = self.largest
        out: dict[str, Any] = {
            "photo": self.photo,
            "name": largest.name if largest else None,
            "distance": _round(largest.distance) if largest else None,
            "threshold": _round(largest.threshold if largest else self.threshold),
            "box": _rounded_box(largest.box) if largest else None,
            "faces": [face.to_json() for face in self.faces],
        }
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class Enrolment:
    """What happened to one photo of an `enroll` batch."""

    photo: str
    name: str | None
    status: str                              # ENROLLED / ADDED / REENROLLED / DUPLICATE / SKIPPED / REFUSED / ...
    message: str
    faces: int = 0                           # the person's photos after this one (when it went in)
    box: Box | None = None
    matched: str | None = None               # the *other* person this face looks like (refused or forced)
    distance: float | None = None            # distance to `matched`
    exc: BaseException | None = field(default=None, repr=False, compare=False)
    replaced: int = 0                        # the person's faces of another model deleted with this enrolment
    reason: str | None = None                # REFUSED: the short kind of refusal (summaries count these)

    @property
    def ok(self) -> bool:
        """Not a failure: the photo went in, was already there, or (reenroll) was not needed."""
        return self.status in (ENROLLED, ADDED, REENROLLED, DUPLICATE, SKIPPED)

    def to_json(self) -> dict[str, Any]:
        return {"photo": self.photo, "name": self.name, "status": self.status, "message": self.message,
                "faces": self.faces, "box": _rounded_box(self.box) if self.box else None,
                "matched": self.matched, "distance": _round(self.distance), "replaced": self.replaced,
                "reason": self.reason}


@dataclass
class Verification:
    """Are the main faces of two photos the same person (one comparison at the card's threshold)?"""

    photo_a: str
    photo_b: str
    same: bool | None
    distance: float | None
    threshold: float | None
    status: str = "ok"                       # "ok", REFUSED (no face) or INVALID / ERROR
    error: str | None = None
    exc: BaseException | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"photo_a": self.photo_a, "photo_b": self.photo_b, "same": self.same,
                               "distance": _round(self.distance), "threshold": _round(self.threshold)}
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class Removal:
    name: str
    faces: int

    def to_json(self) -> dict[str, Any]:
        return {"removed": self.name, "faces": self.faces}


@dataclass(frozen=True)
class Person:
    name: str
    faces: int
    created_at: str
    updated_at: str
    other_model_faces: int = 0

    @property
    def current(self) -> bool:
        """Whether identification can find this person: they have a face made by the current model."""
        return self.faces > 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "faces": self.faces, "created_at": self.created_at,
                "updated_at": self.updated_at, "other_model_faces": self.other_model_faces,
                "current": self.current}


def base_network(card: dict[str, Any]) -> str | None:
    """Which pretrained network the embedder starts from, with its licence: one line for `oneshot model`."""
    base = card.get("base_network") or {}
    if not base:
        return None
    return f"{base.get('network')} ({base.get('source')}), {base.get('licence')}"


@dataclass(frozen=True)
class ModelInfo:
    """The model card summary shown by `oneshot model`, plus the identification threshold τ(N) for gallery sizes."""

    model_id: str
    dim: int
    input_size: int | None
    loss: str | None
    margin: float | None
    threshold: float
    threshold_far: float | None
    data: Any
    steps: Any
    metrics: dict[str, Any]
    fpir: float
    thresholds: list[tuple[int, float]]
    home: str
    people: int | None
    base: str | None = None          # the pretrained network the embedder derives from, and its licence
    changes: str | None = None       # what our training changed in it
    # The largest N whose per-comparison FAR target the held-out impostor pairs can back (rule of three); beyond
    # it τ(N) is extrapolated. None: the card does not record how many impostor pairs its ROC rests on.
    backed_up_to: int | None = None
    impostor_pairs: int | None = None

    def extrapolated(self, n_people: int) -> bool | None:
        """Whether τ(n_people) lies beyond what the held-out data back (None: unknown, an older card)."""
        return None if self.backed_up_to is None else n_people > self.backed_up_to

    def to_json(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "dim": self.dim, "input_size": self.input_size, "loss": self.loss,
                "margin": self.margin, "threshold": self.threshold, "threshold_far": self.threshold_far,
                "data": self.data, "steps": self.steps,
                "metrics": self.metrics, "fpir": self.fpir,
                "thresholds": [{"people": n, "threshold": round(t, 4), "extrapolated": self.extrapolated(n)}
                               for n, t in self.thresholds],
                "backed_up_to": self.backed_up_to, "impostor_pairs": self.impostor_pairs,
                "home": self.home, "people": self.people, "base_network": self.base, "changes": self.changes}


class OneShot:
    """Enrol people from one photo each, identify faces in photos, verify pairs, remove people.

    `home` is the gallery directory (default: `default_home()`); `fpir` is the target probability that a stranger
    is named as someone in the gallery, from which the per-gallery-size threshold follows (see enroll.decision).
    """

    def __init__(self, home: Path | str | None = None, *, engine: Engine | None = None,
                 fpir: float = DEFAULT_FPIR, db: str | None = None) -> None:
        if isinstance(home, str) and not home.strip():
            from gallery import GalleryError

            raise GalleryError("gallery home is an empty path; give a directory")
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.db = db if db is not None else default_db()
        self.fpir = fpir
        self._engine = engine
        self._gallery: Gallery | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._gallery is not None:
            self._gallery.close()
            self._gallery = None

    def __enter__(self) -> "OneShot":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- public operations -----------------------------------------------------------------------------------

    def enroll(self, paths: Iterable[str | os.PathLike[str]], name: str | None = None, *, largest: bool = False,
               force: bool = False) -> list[Enrolment]:
        """Enrol each photo (one person per photo; `name` or else the file stem). See `enroll_one`."""
        return list(self.enroll_iter(paths, name, largest=largest, force=force))

    def enroll_iter(self, paths: Iterable["str | os.PathLike[str] | tuple[str, str | None]"],
                    name: str | None = None, *, largest: bool = False, force: bool = False) -> Iterator[Enrolment]:
        """Like `enroll`, yielding each photo's result in order as its batch is done (the CLI prints as it goes).

        A folder stands for every photo under it (`expand_photos`); an item may also be a `(path, person)` pair
        from `expand_photos`. Photos are embedded ENROL_BATCH at a time (one network call) and each batch is
        stored in one write transaction.
        """
        batch: list[tuple[str, str | None]] = []
        for item in expand_photos(paths):
            batch.append(item)
            if len(batch) == ENROL_BATCH:
                yield from self._enroll_batch(batch, name, largest, force)
                batch = []
        if batch:
            yield from self._enroll_batch(batch, name, largest, force)

    def enroll_one(self, path: str | os.PathLike[str], name: str | None = None, *, largest: bool = False,
                   force: bool = False) -> Enrolment:
        """Enrol one photo. Rules, in order:

        - the name (given, else the file stem) must be valid; the photo must be readable;
        - a photo with no face is refused; several faces are refused unless `largest` (then the main face is used);
        - a main face too small, blurred or turned away to be a good reference is refused (`embedder.quality`);
        - the same photo (sha256) already enrolled for this person is reported, not stored twice;
        - a face that already matches a *different* person (distance below the gallery's threshold) is refused,
          naming them, unless `force`;
        - a new name creates the person; an existing name gets this photo added.
        """
        return self._enroll_batch([(path, None)], name, largest, force)[0]

    def _enroll_batch(self, items: "Sequence[tuple[str | os.PathLike[str] | PhotoBytes, str | None]]",
                      name: str | None, largest: bool,
                      force: bool) -> list[Enrolment]:
        """Read and check each photo, embed the good ones in one call, store them in one write transaction."""
        results: list[Enrolment | None] = []
        ready: list[tuple[int, str, str, Any, Any, str]] = []    # (slot, shown, who, image, face, digest)
        for path, person in items:
            shown, who = _shown(path), None
            try:
                who = validate_name(name if name is not None else person or name_from_path(shown))
                image = self._engine_().load_photo(path)
                digest = _digest(path)
                faces = self._detect(image)
                if not faces:
                    raise Refused(f"{shown}: no face found", "no face")
                if len(faces) > 1 and not largest:
                    raise Refused(f"{shown}: {len(faces)} faces found; enrol one person per photo, or use "
                                  "--largest to enrol the largest face", "several faces")
                problem = self._engine_().enrolment_problem(image, faces[0])
                if problem:
                    raise Refused(f"{shown}: {problem}", "face not good enough")
                ready.append((len(results), shown, who, image, faces[0], digest))
                results.append(None)
            except Exception as exc:  # noqa: BLE001 - _failed re-raises what must end the batch
                results.append(self._failed(shown, who, exc))
        if ready:
            try:
                vectors = self._embed_many([(image, face) for _, _, _, image, face, _ in ready])
            except Exception as exc:  # noqa: BLE001
                for slot, shown, who, *_ in ready:
                    results[slot] = self._failed(shown, who, exc)
                ready = []
            gallery = self._open_gallery(create=True) if ready else None
            if gallery is not None:
                with gallery.locked():   # checks and writes in one transaction: no enrolment slips between
                    for (slot, shown, who, _, face, digest), vector in zip(ready, vectors):
                        try:
                            results[slot] = self._store_locked(gallery, shown, who, vector, digest, face.box,
                                                               force)
                        except Exception as exc:  # noqa: BLE001
                            results[slot] = self._failed(shown, who, exc)
        return [r for r in results if r is not None]

    @staticmethod
    def _failed(shown: str, who: str | None, exc: Exception) -> Enrolment:
        """One photo's failure as its result; what makes the whole gallery or model unusable is re-raised."""
        if isinstance(exc, (InvalidName, _photo_error())):
            message = str(exc) if isinstance(exc, _photo_error()) else f"{shown}: {exc}"
            return Enrolment(shown, who, INVALID, message, exc=exc)
        if isinstance(exc, Refused):
            return Enrolment(shown, who, REFUSED, str(exc), exc=exc, reason=exc.reason)
        if isinstance(exc, (ModelUnavailable, _gallery_error())):
            raise exc
        return Enrolment(shown, who, ERROR, f"{shown}: internal error: {_one_line(exc)}", exc=exc)

    def _embed_many(self, faces: Sequence[tuple["Image.Image", "Face"]]) -> "np.ndarray":
        """One network call for the main face of every photo of a batch."""
        engine = self._engine_()
        crops = [crop for image, face in faces for crop in engine.aligned_faces(image, [face])]
        try:
            return engine.face_embeddings(crops)
        except (FileNotFoundError, RuntimeError) as exc:
            if isinstance(exc, FileNotFoundError) or "weights" in str(exc).lower():
                raise ModelUnavailable(f"cannot load the embedder: {_one_line(exc)}; reinstall oneshot") from exc
            raise

    def identify(self, paths: Iterable[str | os.PathLike[str]]) -> list[Identification]:
        """Name every face in each photo, largest first; unknown faces have name None."""
        return list(self.identify_iter(paths))

    def identify_iter(self, paths: Iterable[str | os.PathLike[str]]) -> Iterator[Identification]:
        for path in paths:
            yield self.identify_one(path)

    def identify_one(self, path: str | os.PathLike[str]) -> Identification:
        """Every face of one photo, largest first, each named when its nearest person is within the threshold."""
        shown = _shown(path)
        try:
            image = self._engine_().load_photo(path)
            faces = self._detect(image)
            gallery = self._open_gallery(create=False)
            count = gallery.person_count() if gallery is not None else 0
            threshold = threshold_for_gallery(self._card(), count, self.fpir)
            if not faces:
                return Identification(shown, [], threshold)
            vectors = self._embed(image, faces)
            results = gallery.search(vectors, k=1) if gallery is not None and count else [[] for _ in faces]
            answers = []
            for face, matches in zip(faces, results):
                best = matches[0] if matches else None
                answers.append(FaceAnswer(
                    box=_box(face.box), name=decide(matches, threshold),
                    distance=float(best.distance) if best else None, threshold=threshold,
                    nearest=best.name if best else None,
                ))
            return Identification(shown, answers, threshold)
        except _photo_error() as exc:
            return Identification(shown, status=INVALID, error=str(exc), exc=exc)
        except (ModelUnavailable, _gallery_error()):
            raise
        except Exception as exc:  # noqa: BLE001 - one photo's failure must not end the batch
            return Identification(shown, status=ERROR, error=f"{shown}: internal error: {_one_line(exc)}", exc=exc)

    def verify(self, a: str | os.PathLike[str], b: str | os.PathLike[str]) -> Verification:
        """Same person? Compares the largest face of each photo at the card's (one-comparison) threshold."""
        shown_a, shown_b = _shown(a), _shown(b)
        try:
            vectors = []
            for path in (a, b):
                image = self._engine_().load_photo(path)
                faces = self._detect(image)
                if not faces:
                    raise Refused(f"{_shown(path)}: no face found")
                vectors.append(self._embed(image, faces[:1])[0])
            threshold = float(self._card()["threshold"])
            distance = _distance(vectors[0], vectors[1])
            return Verification(shown_a, shown_b, distance < threshold, distance, threshold)
        except _photo_error() as exc:
            return Verification(shown_a, shown_b, None, None, None, INVALID, str(exc), exc)
        except Refused as exc:
            return Verification(shown_a, shown_b, None, None, None, REFUSED, str(exc), exc)
        except ModelUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001
            return Verification(shown_a, shown_b, None, None, None, ERROR,
                                f"internal error: {_one_line(exc)}", exc)

    def remove(self, name: str) -> Removal:
        """Delete a person, every face vector and index entry, in one transaction (secure_delete on).

        Raises `InvalidName` or `gallery.UnknownPerson` (both one-line).
        """
        who = validate_name(name)
        gallery = self._open_gallery(create=False)
        if gallery is None:
            from gallery import UnknownPerson

            raise UnknownPerson(who)
        return Removal(who, gallery.remove_person(who))

    def people(self) -> list[Person]:
        """Everyone enrolled, sorted by name (an empty list when there is no gallery yet)."""
        return list(self.iter_people())

    def iter_people(self) -> Iterator[Person]:
        """Everyone enrolled, sorted by name, streamed from the database (nothing when there is no gallery yet)."""
        gallery = self._open_gallery(create=False)
        if gallery is None:
            return
        for p in gallery.iter_people():
            yield Person(p.name, p.faces, p.created_at.isoformat(timespec="seconds"),
                         p.updated_at.isoformat(timespec="seconds"), p.other_model_faces)

    def stale_faces(self) -> "StaleFaces | None":
        """How many enrolled people and faces were made by another model, which identification cannot use until
        those people are re-enrolled (None when this home has no gallery yet; nothing is created)."""
        gallery = self._open_gallery(create=False)
        return gallery.stale_faces() if gallery is not None else None

    def reenroll(self, directory: str | os.PathLike[str], *, largest: bool = False,
                 force: bool = False) -> list[Enrolment]:
        """Re-enrol people holding faces of another model from the photos in `directory`. See `reenroll_iter`."""
        return list(self.reenroll_iter(directory, largest=largest, force=force))

    def reenroll_iter(self, directory: str | os.PathLike[str], *, largest: bool = False,
                      force: bool = False) -> Iterator[Enrolment]:
        """For each photo directly in `directory` (sorted), named like `enroll` names it (the file stem): when that
        person holds faces made by another model, enrol the photo with the current model, which deletes those
        faces (see `enroll_one`); further photos of a person re-enrolled in this run are added to them. Every other
        photo is reported SKIPPED: nobody under its name needs re-enrolment.

        Raises OSError (one line) when `directory` is not a directory or holds no photo.
        """
        photos = photos_in(directory)
        gallery = self._open_gallery(create=False)
        stale = set(gallery.stale_names()) if gallery is not None else set()
        renewed: set[str] = set()
        for path in photos:
            who = _name_of(path)
            if who is not None and (who in stale or who in renewed):
                result = self.enroll_one(path, who, largest=largest, force=force)
                if result.ok:
                    renewed.add(who)
                yield result
            else:
                shown = os.fspath(path)
                why = (f"nobody named {who!r} holds faces of another model" if who is not None
                       else f"{Path(path).stem!r} is not a valid name")
                yield Enrolment(shown, who, SKIPPED, f"skipped {shown}: {why}")

    def model_info(self) -> ModelInfo:
        """The shipped model's card and the identification threshold for a range of gallery sizes."""
        card = self._card()
        try:
            gallery = self._open_gallery(create=False)
            people = gallery.person_count() if gallery is not None else None
        except _gallery_error():
            people = None           # describing the model must work even when the gallery is broken
        return ModelInfo(
            model_id=str(card.get("model_id")), dim=int(card.get("dim", 0)), input_size=card.get("input_size"),
            loss=card.get("loss"), margin=card.get("margin"), threshold=float(card["threshold"]),
            data=card.get("data"), steps=card.get("steps"),
            metrics={**(card.get("validation") or {}), **(card.get("metrics") or {})},
            threshold_far=card.get("threshold_far"),
            fpir=self.fpir, thresholds=[(n, threshold_for_gallery(card, n, self.fpir)) for n in TABLE_SIZES],
            home=str(self.home), people=people, base=base_network(card), changes=card.get("changes"),
            backed_up_to=backed_gallery_size(card, self.fpir), impostor_pairs=impostor_pairs(card),
        )

    def threshold(self) -> float:
        """The identification threshold for the gallery as it is now."""
        gallery = self._open_gallery(create=False)
        return threshold_for_gallery(self._card(), gallery.person_count() if gallery else 0, self.fpir)

    # -- internals -------------------------------------------------------------------------------------------

    def _store_locked(self, gallery: "Gallery", shown: str, who: str, vector: "np.ndarray", digest: str, box: Box,
                      force: bool) -> Enrolment:
        count = gallery.person_count()
        person = self._person(gallery, who)
        exists = person is not None
        # read before the write, for the message; the deletion itself happens inside add_face's transaction
        stale = person.other_model_faces if person is not None else 0
        matched: str | None = None
        distance: float | None = None
        if count:
            threshold = threshold_for_gallery(self._card(), count, self.fpir)
            matches = gallery.search(vector[None, :], k=5)[0]
            if exists and gallery.has_photo(who, digest):
                return Enrolment(shown, who, DUPLICATE, f"{shown} is already enrolled for {who!r}; nothing added",
                                 faces=self._face_count(gallery, who), box=_box(box))
            others = [m for m in matches if m.name != who and m.distance < threshold]
            if others:
                matched, distance = others[0].name, float(others[0].distance)
                if not force:
                    raise Refused(
                        f"{shown}: this face already matches {matched!r} (distance {distance:.2f}, threshold "
                        f"{threshold:.2f}); not enrolled as {who!r} - use --force if they are different people",
                        "already matches someone else")
        gallery.add_face(who, vector, digest, drop_other_models=True)
        faces = self._face_count(gallery, who)
        also = f" (it resembles {matched!r}, enrolled anyway with --force)" if matched else ""
        if stale:
            message = (f"re-enrolled {who!r} from {shown} with the current model, deleting {stale} "
                       f"face{'s' if stale != 1 else ''} made by another model{also}")
            return Enrolment(shown, who, REENROLLED, message, faces, _box(box), matched, distance, replaced=stale)
        if exists:
            message = f"added {shown} to {who!r}, who now has {faces} photo{'s' if faces != 1 else ''}{also}"
            return Enrolment(shown, who, ADDED, message, faces, _box(box), matched, distance)
        return Enrolment(shown, who, ENROLLED, f"enrolled {who!r} from {shown}{also}", faces, _box(box),
                         matched, distance)

    def _engine_(self) -> Engine:
        if self._engine is None:
            self._engine = default_engine()
        return self._engine

    def _card(self) -> dict[str, Any]:
        try:
            return self._engine_().model_card()
        except (OSError, ValueError, KeyError) as exc:
            raise ModelUnavailable(f"cannot load the model card: {_one_line(exc)}; reinstall oneshot") from exc

    def _detect(self, image: "Image.Image") -> list["Face"]:
        try:
            return self._engine_().detect_faces(image)
        except FileNotFoundError as exc:
            raise ModelUnavailable(f"cannot load the face detector: {_one_line(exc)}; reinstall oneshot") from exc

    def _embed(self, image: "Image.Image", faces: Sequence["Face"]) -> "np.ndarray":
        engine = self._engine_()
        crops = engine.aligned_faces(image, faces)
        try:
            return engine.face_embeddings(crops)
        except (FileNotFoundError, RuntimeError) as exc:
            if isinstance(exc, FileNotFoundError) or "weights" in str(exc).lower():
                raise ModelUnavailable(f"cannot load the embedder: {_one_line(exc)}; reinstall oneshot") from exc
            raise

    def _open_gallery(self, *, create: bool) -> "Gallery | None":
        """The gallery, opened once; with `create=False`, None when this home has no database yet."""
        if self._gallery is None:
            from gallery import Gallery, check_home

            check_home(self.home)   # a regular file or "" is an error, not an empty gallery
            if not create and self.db is None and not (self.home / DB_FILENAME).exists():
                return None
            card = self._card()
            model_id = str(self._engine_().model_id())
            self._gallery = Gallery(self.home, model_id, int(card["dim"]), db_url=self.db)
        return self._gallery

    @staticmethod
    def _person(gallery: "Gallery", name: str) -> "PersonInfo | None":
        """The stored person (one targeted query, not a listing of everyone), None when not enrolled."""
        from gallery import UnknownPerson

        try:
            return gallery.person(name)
        except UnknownPerson:
            return None

    @classmethod
    def _face_count(cls, gallery: "Gallery", name: str) -> int:
        """The person's faces of the current model."""
        person = cls._person(gallery, name)
        return person.faces if person is not None else 0


def photos_in(directory: str | os.PathLike[str]) -> list[Path]:
    """The photos directly in `directory` (by suffix, see PHOTO_SUFFIXES; hidden files skipped), sorted by name.

    Raises FileNotFoundError / NotADirectoryError, or FileNotFoundError when it holds no photo: a one-line OSError
    naming the path, since `reenroll` on the wrong folder should say so rather than quietly do nothing.
    """
    folder = Path(directory)
    if not folder.exists():
        raise FileNotFoundError(f"{os.fspath(directory)}: no such directory")
    if not folder.is_dir():
        raise NotADirectoryError(f"{os.fspath(directory)}: not a directory")
    photos = sorted(p for p in folder.iterdir()
                    if p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith(".") and p.is_file())
    if not photos:
        raise FileNotFoundError(f"{os.fspath(directory)}: no photos in it ({', '.join(sorted(PHOTO_SUFFIXES))})")
    return photos


def expand_photos(args: Iterable["str | os.PathLike[str] | tuple[str, str | None]"]
                  ) -> list[tuple[str, str | None]]:
    """`enroll`'s arguments as (photo, person) pairs: a file stands for itself (person None: its stem names it);
    a folder for every photo under it, recursively, sorted (hidden files and folders skipped). A photo directly
    in the folder is named by its stem, one in a subfolder by the subfolder's name (`photos/alice/1.jpg` enrols
    'alice'), so both a flat folder and one folder per person work.

    Raises FileNotFoundError (one line) for a folder that holds no photo."""
    out: list[tuple[str, str | None]] = []
    for arg in args:
        if isinstance(arg, tuple):
            out.append(arg)
            continue
        text = os.fspath(arg)
        folder = Path(text)
        if not folder.is_dir():
            out.append((text, None))
            continue
        found = []
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel = Path(root).relative_to(folder)
            person = rel.parts[0] if rel.parts else None
            found += [(os.path.join(root, f), person) for f in sorted(files)
                      if Path(f).suffix.lower() in PHOTO_SUFFIXES and not f.startswith(".")]
        if not found:
            raise FileNotFoundError(f"{text}: no photos in it ({', '.join(sorted(PHOTO_SUFFIXES))})")
        out += found
    return out


def _name_of(path: Path) -> str | None:
    """The valid name `enroll` would give this photo (its stem), or None when the stem is not a valid name."""
    try:
        return validate_name(name_from_path(path))
    except InvalidName:
        return None


def _photo_error() -> type[Exception]:
    from embedder.photo import PhotoError

    return PhotoError


def _gallery_error() -> type[Exception]:
    from gallery import GalleryError

    return GalleryError


def _shown(photo: "str | os.PathLike[str] | PhotoBytes") -> str:
    """How results and messages name a photo: the path as given, or an in-memory photo's name."""
    from embedder.photo import PhotoBytes

    return photo.name if isinstance(photo, PhotoBytes) else os.fspath(photo)


def _digest(photo: "str | os.PathLike[str] | PhotoBytes") -> str:
    """The sha256 of the photo's bytes (of the file, or in memory), which spots the same photo enrolled twice."""
    from embedder.photo import PhotoBytes

    if isinstance(photo, PhotoBytes):
        return hashlib.sha256(photo.data).hexdigest()
    return _sha256(Path(photo))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _distance(a: "np.ndarray", b: "np.ndarray") -> float:
    """The embedder's distance between two vectors (`embedder.api.distance`), imported when first needed."""
    from embedder.api import distance

    return float(distance(a, b))


def _box(box: Sequence[float]) -> Box:
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1, y1, x2, y2)


def _rounded_box(box: Sequence[float] | None) -> list[float] | None:
    return None if box is None else [round(float(v), 1) for v in box]


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
