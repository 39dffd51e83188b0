"""One-shot open set on real photos with background: oneshot, dlib and the openvino reference, side by side.

    python -m benchmarks.real_photos                 # all systems, writes benchmarks/results/real_photos.json
    python -m benchmarks.real_photos --limit 12      # the first 12 people only (a quick check; writes nothing)
    python -m benchmarks.real_photos --no-dlib       # skip dlib (its HOG detector is the slow part)

Data: celeba-wild's validation people (`in_celeba_training = no`: 122 identities, 987 photos, none in any
training folder). Sorted by identity number, every third identity (index % 3 == 2) is a stranger; everyone else
is enrolled from their first photo (manifest order) and probed with their other photos; every photo of a stranger
is a stranger probe. Each system finds the faces itself (whole photos, several people in some), so this measures
the whole pipeline, not only the embedder.

Systems:
- oneshot — the real service (`enroll.service.OneShot` in a temporary home): `enroll_one(largest=True,
  force=True)` for each enrolment photo, `identify` for each probe; a name is what the product would print, at its
  own threshold τ(N) for the N people actually enrolled (`enroll.decision.threshold_for_gallery`). A reference
  photo the product refuses (no face; too small, blurred or turned away) leaves that person unenrolled, as it
  would for a user: their probes can then not be named correctly (`enrolled`, `enrolment_refused` in the JSON).
- dlib — face_recognition's pipeline (benchmarks/dlib_baseline.py): HOG detection (largest face), 5-point shape,
  128-d ResNet vector; at face_recognition's standard threshold 0.6, and at the threshold that names the same
  fraction of strangers as oneshot does.
- openvino reference — Intel's three networks as shipped, through openvino (benchmarks/openvino_reference.py),
  largest face; at the threshold that names the same fraction of strangers as oneshot does.

Numbers (fractions; a photo where a system finds no face is never named but stays in every denominator):
- named correctly / named wrongly / unknown — of the enrolled people's probes;
- strangers named — of the stranger probes, how many got any name (the false-positive identification rate);
- face found — of all photos (enrolment photos included), how many the system found a face in;
- rank-1 — of the probes in which a face was found, how many have the right person as nearest enrolled;
- named @ FPIR 1 % / 5 % — named correctly at the threshold where 1 % / 5 % of the stranger probes are named
  (the DIR at that FPIR): the systems compared at equal false identifications rather than each at its own
  threshold. Also oneshot at the threshold that names as many strangers as dlib does at 0.6.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import RESULTS, cpu_name, write_result
from benchmarks.open_set import (
    Split, every_third_stranger, named_at_fpir, nearest, one_shot_split, outcomes, rank1,
)
from train.data_paths import data_root

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = RESULTS / "real_photos.json"
FPIRS = (0.01, 0.05)


@dataclass
class Answers:
    """One system's raw answers for a split: enough to compute every number at any threshold.

    Distances are to the nearest enrolled person (+inf where no face was found); `probe_right` says whether that
    nearest person is the probe's own. `own_*` hold the names the system itself gave (oneshot only: the service's
    decision at its threshold), else None.
    """

    system: str
    faces_found: int                     # photos with a face, enrolment photos included
    photos: int
    people_enrolled: int              # people actually enrolled (their enrolment photo gave a usable face)
    probe_dist: np.ndarray
    probe_right: np.ndarray
    stranger_dist: np.ndarray
    own_threshold: float | None = None
    own_probe_names: list[str | None] | None = None
    own_stranger_names: list[str | None] | None = None
    seconds: float = 0.0
    enrolment_refused: list[str] = field(default_factory=list)   # oneshot: faces refused as references, and why

    @property
    def face_found(self) -> float:
        return self.faces_found / self.photos if self.photos else float("nan")


# -- data ------------------------------------------------------------------------------------------------------

def validation_photos(root: Path, limit: int | None = None) -> tuple[list[Path], list[str]]:
    """celeba-wild's validation photos (manifest order) and their identities; `limit`: only the first `limit`
    identities by number (the stranger rule then applies among those)."""
    folder = root / "celeba-wild"
    with open(folder / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["in_celeba_training"] == "no"]
    if limit is not None:
        keep = set(sorted({r["identity"] for r in rows}, key=int)[:limit])
        rows = [r for r in rows if r["identity"] in keep]
    return [folder / r["path"] for r in rows], [r["identity"] for r in rows]


def split_photos(identities: Sequence[str]) -> Split:
    """Every third identity by number is a stranger; the others are enrolled from their first photo."""
    strangers = every_third_stranger(identities)
    return one_shot_split(identities, lambda person, _rows: person in strangers)


# -- systems ---------------------------------------------------------------------------------------------------

def run_oneshot(paths: Sequence[Path], split: Split) -> Answers:
    """The product itself: enrol through `OneShot.enroll_one`, identify through `OneShot.identify`."""
    from enroll.service import ADDED, ENROLLED, REFUSED, OneShot

    start = time.perf_counter()
    found = enrolled = 0
    refused: list[str] = []
    with tempfile.TemporaryDirectory(prefix="oneshot-bench-") as home, OneShot(Path(home)) as service:
        for row, person in zip(split.enrol_rows, split.enrolled):
            result = service.enroll_one(paths[row], person, largest=True, force=True)
            if result.status in (ENROLLED, ADDED):
                found, enrolled = found + 1, enrolled + 1
            elif result.status == REFUSED and "no face" not in result.message:
                found += 1                   # a face, refused as a reference (too small, blurred, turned away)
                refused.append(result.message)
            elif result.status != REFUSED:
                print(f"warning: enrolment failed: {result.message}", file=sys.stderr)
        probes = service.identify([paths[r] for r in split.probe_rows])
        strangers = service.identify([paths[r] for r in split.stranger_rows])
    for ident in [*probes, *strangers]:
        if ident.error is not None:
            print(f"warning: {ident.error}", file=sys.stderr)
    found += sum(ident.largest is not None for ident in [*probes, *strangers])
    probe_dist, probe_nearest = _service_distances(probes)
    stranger_dist, _ = _service_distances(strangers)
    thresholds = {ident.threshold for ident in [*probes, *strangers] if ident.threshold is not None}
    return Answers(
        "oneshot", found, len(paths), enrolled, probe_dist,
        np.array([n == p for n, p in zip(probe_nearest, split.probe_people)]), stranger_dist,
        own_threshold=thresholds.pop() if len(thresholds) == 1 else None,
        own_probe_names=[ident.name for ident in probes], own_stranger_names=[ident.name for ident in strangers],
        seconds=time.perf_counter() - start, enrolment_refused=refused,
    )


def _service_distances(idents: Sequence[Any]) -> tuple[np.ndarray, list[str | None]]:
    """Each identification's main-face distance to its nearest person (+inf: no face) and who that person is."""
    dist = [ident.largest.distance if ident.largest is not None and ident.largest.distance is not None
            else np.inf for ident in idents]
    return np.array(dist, np.float64), [ident.largest.nearest if ident.largest else None for ident in idents]


def run_vectors(system: str, paths: Sequence[Path], split: Split,
                embed: Callable[[Path], np.ndarray | None], dim: int) -> Answers:
    """A system given as photo → vector of its main face (None: no face): nearest enrolled person by distance."""
    start = time.perf_counter()
    vectors = np.full((len(paths), dim), np.nan, np.float32)
    for row, path in enumerate(paths):
        vector = embed(path)
        if vector is not None:
            vectors[row] = vector
    gallery = vectors[split.enrol_rows]
    probe_index, probe_dist = nearest(vectors[split.probe_rows], gallery)
    _, stranger_dist = nearest(vectors[split.stranger_rows], gallery)
    people = np.array(split.enrolled + [""])            # index -1 (no face) → "", nobody's name
    probe_right = people[probe_index] == np.array(split.probe_people)
    return Answers(system, int((~np.isnan(vectors).any(axis=1)).sum()), len(paths),
                   int((~np.isnan(gallery).any(axis=1)).sum()), probe_dist, probe_right, stranger_dist,
                   seconds=time.perf_counter() - start)


def dlib_embedder() -> Callable[[Path], np.ndarray | None]:
    """face_recognition's pipeline on a whole photo, largest HOG face."""
    from benchmarks.dlib_baseline import DlibEncoder
    from embedder.photo import load_photo

    encoder = DlibEncoder()
    return lambda path: encoder.embed_photo(np.asarray(load_photo(path)), rule="largest")


def openvino_embedder() -> Callable[[Path], np.ndarray | None]:
    from benchmarks.openvino_reference import OpenVinoReference

    return OpenVinoReference().embed_photo


# -- numbers ---------------------------------------------------------------------------------------------------

def own_outcomes(answers: Answers, split: Split) -> dict[str, float]:
    """Counts from the names the service actually gave (not recomputed from distances)."""
    names = answers.own_probe_names or []
    truth = split.probe_people
    n = max(1, len(names))
    return {
        "threshold": answers.own_threshold if answers.own_threshold is not None else float("nan"),
        "named_correctly": sum(g == t for g, t in zip(names, truth)) / n,
        "named_wrongly": sum(g is not None and g != t for g, t in zip(names, truth)) / n,
        "unknown": sum(g is None for g in names) / n,
        "strangers_named": sum(g is not None for g in answers.own_stranger_names or []) / max(
            1, len(answers.own_stranger_names or [])),
    }


def summary(answers: Answers, operating_points: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Everything reported for one system: threshold-free numbers, then one entry per operating point."""
    at_fpir = {f"{100 * f:g}%": named_at_fpir(answers.probe_dist, answers.probe_right, answers.stranger_dist, f)
               for f in FPIRS}
    extra = {"enrolment_refused": answers.enrolment_refused} if answers.enrolment_refused else {}
    return {"face_found": answers.face_found, "photos": answers.photos,
            "enrolled": answers.people_enrolled, **extra,
            "rank1": rank1(answers.probe_dist, answers.probe_right),
            "seconds": round(answers.seconds, 1), "at_fpir": at_fpir, **operating_points}


def evaluate(results: dict[str, Answers], split: Split) -> dict[str, Any]:
    """Every system at its operating points: oneshot at its own τ(N) and at dlib-0.6's strangers-named; dlib at 0.6
    and at oneshot's strangers-named; the openvino reference at oneshot's strangers-named."""
    from benchmarks.dlib_baseline import STANDARD_THRESHOLD

    def at(a: Answers, threshold: float) -> dict[str, float]:
        return outcomes(a.probe_dist, a.probe_right, a.stranger_dist, threshold)

    def at_rate(a: Answers, rate: float) -> dict[str, float]:
        return named_at_fpir(a.probe_dist, a.probe_right, a.stranger_dist, rate)

    out: dict[str, Any] = {}
    ours = results.get("oneshot")
    own = own_outcomes(ours, split) if ours is not None else None
    dlib = results.get("dlib")
    dlib_std = at(dlib, STANDARD_THRESHOLD) if dlib is not None else None
    if ours is not None:
        points: dict[str, Any] = {"own_threshold": own}
        if dlib_std is not None:
            points["at_dlib_0.6_strangers_named"] = at_rate(ours, dlib_std["strangers_named"])
        out["oneshot"] = summary(ours, points)
    if dlib is not None:
        points = {"standard_0.6": dlib_std}
        if own is not None:
            points["at_oneshot_strangers_named"] = at_rate(dlib, own["strangers_named"])
        out["dlib"] = summary(dlib, points)
    reference = results.get("openvino_reference")
    if reference is not None:
        points = {"at_oneshot_strangers_named": at_rate(reference, own["strangers_named"])} if own else {}
        out["openvino_reference"] = summary(reference, points)
    return out


# -- output ----------------------------------------------------------------------------------------------------

ROWS = (("oneshot", "own_threshold", "oneshot, own τ(N)"),
        ("oneshot", "at_dlib_0.6_strangers_named", "oneshot @ dlib-0.6's strangers named"),
        ("dlib", "standard_0.6", "dlib @ 0.6"),
        ("dlib", "at_oneshot_strangers_named", "dlib @ oneshot's strangers named"),
        ("openvino_reference", "at_oneshot_strangers_named", "openvino ref. @ oneshot's strangers named"))


def print_table(report: dict[str, Any]) -> None:
    """A compact markdown table: one row per system and operating point."""
    data = report["data"]
    print(f"{data['enrolled']} enrolled, {data['probes']} probes of them, {data['stranger_probes']} stranger probes; "
          f"{report['machine']}; model {report['model_id']}")
    print("| system @ threshold | τ | named right | named wrong | unknown | strangers named | face found | "
          "rank-1 | named @ FPIR 1 % | named @ FPIR 5 % |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    pct = lambda v: f"{100 * v:.1f} %"  # noqa: E731
    for system, point, label in ROWS:
        s = report["systems"].get(system)
        if s is None or point not in s:
            continue
        p = s[point]
        print(f"| {label} | {p['threshold']:.3f} | {pct(p['named_correctly'])} | {pct(p['named_wrongly'])} | "
              f"{pct(p['unknown'])} | {pct(p['strangers_named'])} | {pct(s['face_found'])} | {pct(s['rank1'])} | "
              f"{pct(s['at_fpir']['1%']['named_correctly'])} | {pct(s['at_fpir']['5%']['named_correctly'])} |")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="only the first LIMIT identities by number (quick check)")
    parser.add_argument("--no-dlib", action="store_true", help="skip dlib")
    parser.add_argument("--no-openvino", action="store_true", help="skip the openvino reference")
    parser.add_argument("--out", type=Path, help=f"results file (default {DEFAULT_OUT.relative_to(ROOT)}; "
                                                 "with --limit, none unless given)")
    args = parser.parse_args(argv)
    root = data_root()
    if root is None:
        sys.exit("no datasets found: set $ONESHOT_DATA or put them in ../shared/datasets")
    paths, identities = validation_photos(root, args.limit)
    split = split_photos(identities)

    import embedder

    results = {"oneshot": run_oneshot(paths, split)}
    if not args.no_dlib:
        results["dlib"] = run_vectors("dlib", paths, split, dlib_embedder(), 128)
    if not args.no_openvino:
        results["openvino_reference"] = run_vectors("openvino_reference", paths, split, openvino_embedder(), 256)
    report = {
        "command": "python -m benchmarks.real_photos " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "model_id": embedder.model_id(),
        "data": {"dataset": "celeba-wild, in_celeba_training = no", "photos": len(paths),
                 "identities": len(set(identities)), "enrolled": len(split.enrolled),
                 "strangers": len(every_third_stranger(identities)), "probes": len(split.probe_rows),
                 "stranger_probes": len(split.stranger_rows)},
        "systems": evaluate(results, split),
    }
    out = args.out if args.out is not None else (None if args.limit else DEFAULT_OUT)
    if out is not None:
        write_result(out, report)
    print_table(report)


if __name__ == "__main__":
    main()
