"""Recall against latency for the big-gallery search settings, on a gallery that benchmarks.gallery_scale kept.

    python -m benchmarks.gallery_scale --people 1000000 --keep --home /tmp/g1m
    python -m benchmarks.gallery_tradeoff --home /tmp/g1m 600000:512:8 700000:512:8 550000:1024:8

Each setting is SCAN_BUDGET:SHORTLIST:RERANKED (codes scanned, shortlist re-scored with 8-bit codes, candidates
re-ranked from the database); the settings run one after another in this process, through ``Gallery.search`` (SQL
and Python included), on the kept gallery's 1000 queries, against their exact nearest person. Prints one line per
setting: lists scanned, search p50 / p99 and recall@1 (the rows of docs/GALLERY.md's trade-off table).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.gallery_scale import DIM, MODEL


def main(argv: list[str] | None = None) -> None:
    from gallery import Gallery, index, store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="a gallery kept by benchmarks.gallery_scale")
    parser.add_argument("settings", nargs="+", help="SCAN_BUDGET:SHORTLIST:RERANKED")
    args = parser.parse_args(argv)
    data = np.load(args.home / "bench_queries.npz")
    queries, exact = data["queries"], data["exact"]
    with Gallery(args.home, MODEL, DIM) as gallery:
        gallery.search(queries[0], k=1)
        loaded = gallery._current_index()
        for setting in args.settings:
            index.SCAN_BUDGET, index.SHORTLIST, store.RERANKED = (int(x) for x in setting.split(":"))
            index.tune(loaded.ivf)
            latencies, hits = [], []
            for query, truth in zip(queries, exact):
                start = time.perf_counter()
                found = gallery.search(query, k=1)[0]
                latencies.append(time.perf_counter() - start)
                if truth:
                    hits.append(bool(found) and found[0].name == truth)
            ms = np.array(latencies) * 1000
            print(f"{setting}: lists scanned {loaded.ivf.nprobe} of {loaded.ivf.nlist}, search p50 "
                  f"{np.percentile(ms, 50):.2f} / p99 {np.percentile(ms, 99):.2f} ms, recall@1 {np.mean(hits):.3f}")


if __name__ == "__main__":
    main()
