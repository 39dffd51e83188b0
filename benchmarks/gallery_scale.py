"""How the gallery scales: search latency and recall, enrolment and removal, open time, memory and disk at N people.

    python -m benchmarks.gallery_scale --people 1000000 --json

The gallery gets N people with one face each: every LFW / celeba-wild person's first photo (real vectors, embedded
by the shipped model, see benchmarks/real_vectors.py) plus synthetic distractors drawn from a Gaussian fitted to the
real vectors (same mean and covariance, then normalised), so the distractors crowd the same region of the sphere
as real faces instead of being nearly orthogonal to everything. Queries are the real people's *other* photos (and
real photos of people not enrolled). ``recall_at_1`` is the fraction of queries whose nearest person by the gallery
equals the nearest person by exact brute-force search over every vector.

The database is filled by bulk SQL inserts in a child process (not the enrolment path, which would take hours at
1M) and the index is built once (``Gallery.rebuild_index``); everything after that is measured in this process
through the public ``Gallery`` API: open (a new ``Gallery`` up to its first answer), single-query searches, an
enrolment as ``oneshot enroll`` does it (under the write lock: person count, search for look-alikes, duplicate check,
insert, cache append) and a removal (delete, in-place erasure in the cache). Without the datasets every vector is
synthetic and the output says so (``real_vectors: 0``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import RESULTS, cpu_name, load_average, write_result

MODEL = "gallery-scale"   # the galleries' model label (the vectors' model is in the result's model_id)
DIM = 256
CHUNK = 50_000
QUERIES = 1000
CHANGES = 20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _real(seed: int, synthetic: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(enrolled real vectors, their names, query vectors, the queries' true names or '' for strangers)."""
    from benchmarks import real_vectors

    loaded = None if synthetic else real_vectors.load()
    if loaded is None:
        return np.zeros((0, DIM), np.float32), np.zeros(0, str), np.zeros((0, DIM), np.float32), []
    vectors, identities = loaded
    rng = np.random.default_rng(seed)
    first: dict[str, int] = {}
    queries: list[int] = []
    for i, who in enumerate(identities.tolist()):
        if who not in first:
            first[who] = i
        else:
            queries.append(i)
    names = sorted(first)
    strangers = set(rng.choice(names, size=len(names) // 10, replace=False).tolist())   # 10 % never enrolled
    enrolled = [n for n in names if n not in strangers]
    query_rows = rng.permutation(queries + [first[n] for n in sorted(strangers)])
    truth = [str(identities[i]) if str(identities[i]) not in strangers else "" for i in query_rows]
    return (vectors[[first[n] for n in enrolled]], np.array(enrolled), vectors[query_rows], truth)


def _distractors(real: np.ndarray, n: int, rng: np.random.Generator) -> Any:
    """Chunks of n synthetic unit vectors with the real vectors' mean and covariance (isotropic without them)."""
    if len(real) > DIM * 4:
        mean = real.mean(axis=0)
        chol = np.linalg.cholesky(np.cov(real, rowvar=False) + 1e-6 * np.eye(DIM))
    else:
        mean, chol = np.zeros(DIM), np.eye(DIM)
    for start in range(0, n, CHUNK):
        z = rng.standard_normal((min(CHUNK, n - start), DIM))
        x = (z @ chol.T + mean).astype(np.float32)
        yield x / np.linalg.norm(x, axis=1, keepdims=True)


def build(home: Path, people: int, seed: int, synthetic: bool = False) -> dict[str, Any]:
    """Fill a gallery in ``home`` with ``people`` people by bulk SQL, build its index, save the queries with their
    exact nearest person. Returns the build's timings."""
    from sqlalchemy import insert, select, update

    from gallery import Gallery
    from gallery.schema import META_ROW_ID, Face, Meta, Person, utcnow
    from gallery.vectors import STORED, from_blob, to_blob

    rng = np.random.default_rng(seed)
    real, real_names, queries, truth = _real(seed, synthetic)
    real, real_names = real[:people], real_names[:people]
    queries = queries[:QUERIES]
    truth = truth[:QUERIES]
    start = time.perf_counter()
    best_ip = np.full(len(queries), -np.inf, np.float32)
    best_name = np.array([""] * len(queries), dtype=object)
    now = utcnow()
    with Gallery(home, MODEL, DIM) as gallery:
        engine = gallery._writer   # bulk load into the gallery's own database, same schema

        def load(vectors: np.ndarray, names: list[str], first_id: int) -> None:
            ids = range(first_id, first_id + len(names))
            with engine.begin() as conn:
                conn.execute(insert(Person), [{"id": i, "name": n, "created_at": now, "updated_at": now}
                                              for i, n in zip(ids, names)])
                conn.execute(insert(Face), [{"id": i, "person_id": i, "model_id": MODEL, "dim": DIM,
                                             "vector": to_blob(v), "photo_sha256": os.urandom(32).hex(),
                                             "created_at": now} for i, v in zip(ids, vectors)])
                conn.execute(update(Meta).where(Meta.id == META_ROW_ID).values(generation=Meta.generation + 1))
            if len(queries):
                stored = vectors.astype(STORED).astype(np.float32)      # what exact search over the truth sees
                stored /= np.linalg.norm(stored, axis=1, keepdims=True)
                ips = queries @ stored.T
                top = ips.argmax(axis=1)
                better = ips[np.arange(len(queries)), top] > best_ip
                best_ip[better] = ips[np.arange(len(queries)), top][better]
                best_name[better] = np.array(names, dtype=object)[top[better]]

        next_id = 1
        if len(real):
            load(real, real_names.tolist(), next_id)
            next_id += len(real)
        for chunk in _distractors(real, people - len(real), rng):
            load(chunk, [f"synthetic-{i:07d}" for i in range(next_id, next_id + len(chunk))], next_id)
            next_id += len(chunk)
        loaded_s = time.perf_counter() - start
        t0 = time.perf_counter()
        gallery.rebuild_index()
        index_s = time.perf_counter() - t0
    if not len(queries):   # no datasets: fresh synthetic queries (their exact nearest person computed below)
        queries = next(_distractors(real, QUERIES, rng))
        with Gallery(home, MODEL, DIM) as gallery:
            rows = gallery._writer.connect().execute(select(Face.id, Person.name, Face.vector).join(Person)).all()
        vectors = np.stack([from_blob(v, DIM) for _, _, v in rows])
        ips = queries @ vectors.T
        best_ip, best_name = ips.max(axis=1), np.array([rows[i][1] for i in ips.argmax(axis=1)], dtype=object)
    np.savez(home / "bench_queries.npz", queries=queries, truth=np.array(truth + [""] * (len(queries) - len(truth))),
             exact=best_name.astype(str), exact_distance=np.sqrt(np.maximum(2 - 2 * best_ip, 0)))
    return {"load_s": round(loaded_s, 1), "index_build_s": round(index_s, 1), "build_peak_rss_mb": round(_peak_rss_mb()),
            "real_vectors": int(len(real))}


def measure(home: Path, people: int, seed: int) -> dict[str, Any]:
    """Everything a running gallery does, timed through the public API in this (fresh) process."""
    import faiss

    from gallery import DB_FILE, Gallery

    data = np.load(home / "bench_queries.npz")
    queries, exact = data["queries"], data["exact"]
    rng = np.random.default_rng(seed + 1)
    t0 = time.perf_counter()
    gallery = Gallery(home, MODEL, DIM)
    first = gallery.search(queries[0], k=1)
    open_ms = (time.perf_counter() - t0) * 1000
    latencies = []
    answers = []
    for q in queries:
        t = time.perf_counter()
        found = gallery.search(q, k=1)[0]
        latencies.append(time.perf_counter() - t)
        answers.append(found[0].name if found else "")
    hits = [a == e for a, e in zip(answers, exact) if e]
    # the misses that matter: the exact nearest person is within the decision threshold τ(N), so exact search
    # would name them and a miss turns the name into a wrong "unknown"
    from embedder.api import model_card
    from enroll.decision import DEFAULT_FPIR, threshold_for_gallery

    tau = threshold_for_gallery(model_card(), people, DEFAULT_FPIR)
    exact_d = data["exact_distance"]
    named = [a == e for a, e, d in zip(answers, exact, exact_d) if e and d < tau]
    t = time.perf_counter()
    gallery.search(queries[:100], k=1)
    batch_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    count = gallery.person_count()
    count_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    gallery.stale_faces()
    stale_ms = (time.perf_counter() - t) * 1000

    enrol, remove = [], []
    newcomers = queries[rng.choice(len(queries), CHANGES, replace=False)] + rng.normal(0, 0.05, (CHANGES, DIM))
    for i, vector in enumerate(newcomers.astype(np.float32)):
        name, digest = f"newcomer-{i}", os.urandom(32).hex()
        t = time.perf_counter()
        with gallery.locked():   # what `oneshot enroll` does once the photo is embedded
            gallery.person_count()
            gallery.search(vector, k=5)
            gallery.has_photo(name, digest)
            gallery.add_face(name, vector, digest)
        enrol.append(time.perf_counter() - t)
    for i in range(CHANGES):
        t = time.perf_counter()
        gallery.remove_person(f"newcomer-{i}")
        remove.append(time.perf_counter() - t)
    t = time.perf_counter()
    listed = sum(1 for _ in zip(range(10), gallery.iter_people()))
    list_ms = (time.perf_counter() - t) * 1000
    gallery.close()
    disk = sum(p.stat().st_size for p in home.iterdir() if p.is_file() and p.name != "bench_queries.npz")
    ms = lambda xs, q: round(float(np.percentile(np.array(xs) * 1000, q)), 3)  # noqa: E731
    return {
        "people": people, "search_p50_ms": ms(latencies, 50), "search_p99_ms": ms(latencies, 99),
        "recall_at_1": round(float(np.mean(hits)), 4) if hits else None, "recall_queries": len(hits),
        "recall_at_1_within_threshold": round(float(np.mean(named)), 4) if named else None,
        "queries_within_threshold": len(named), "threshold": round(tau, 4),
        "enrol_ms": ms(enrol, 50), "enrol_max_ms": ms(enrol, 100), "remove_ms": ms(remove, 50),
        "remove_max_ms": ms(remove, 100), "open_ms": round(open_ms, 1), "peak_rss_mb": round(_peak_rss_mb()),
        "disk_bytes_per_person": round(disk / people), "db_bytes_per_person": round(
            (home / DB_FILE).stat().st_size / people),
        "batch_100_queries_ms": round(batch_ms, 1), "person_count_ms": round(count_ms, 2),
        "stale_check_ms": round(stale_ms, 2), "list_first_10_ms": round(list_ms, 2), "counted_people": count,
        "first_answer_found": bool(first and first[0]), "listed": listed,
        "faiss_threads_for_one_query": 1, "faiss_version": faiss.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    import embedder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, required=True, help="gallery size N")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--home", type=Path, help="gallery directory to build in (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the gallery directory")
    parser.add_argument("--synthetic", action="store_true",
                        help="synthetic vectors only (no datasets needed; small N only: the exact answers are "
                             "computed in memory)")
    parser.add_argument("--out", type=Path, help="results file (default benchmarks/results/gallery_scale_N.json; "
                                                 "none with --synthetic)")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build_only:
        print(json.dumps(build(args.home, args.people, args.seed, args.synthetic)))
        return
    home = args.home or Path(tempfile.mkdtemp(prefix="gallery_scale.")) / "home"
    if home.exists() and any(home.iterdir()):
        sys.exit(f"{home} is not empty; give a new directory (it is filled, and deleted unless --keep)")
    load_before = load_average()
    try:
        home.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        child = subprocess.run([sys.executable, "-m", "benchmarks.gallery_scale", "--build-only", "--people",
                                str(args.people), "--home", str(home), "--seed", str(args.seed),
                                *(["--synthetic"] if args.synthetic else [])],
                               check=True, capture_output=True, text=True)
        built = json.loads(child.stdout.strip().splitlines()[-1])
        built["build_s"] = round(time.perf_counter() - t, 1)
        result = {**measure(home, args.people, args.seed), **built, "cpus": os.cpu_count(),
                  "model_id": embedder.model_id(), "machine": cpu_name(), "load_average_before": load_before,
                  "load_average_after": load_average()}
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    out = args.out or (None if args.synthetic else RESULTS / f"gallery_scale_{args.people}.json")
    if out is not None:
        write_result(out, result)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
