"""The FAISS side of the cache: how big an index to train, how a vector becomes a code, how codes become a searchable
index.

One structure serves every gallery size: an inverted-file index (``IndexIVFScalarQuantizer``) over 8-bit codes of the
unit vectors (256 bytes for the 256-d model, half the float16 truth in the database). Below ``EXACT_BELOW``
faces it has a single list, so every query scans every face: exact search over the codes. From ``EXACT_BELOW`` on it
has about ``4·√n`` lists (trained by spherical k-means on a sample) and a query scans as many of them as fit in
``SCAN_BUDGET`` codes (all of them up to ~460k faces, a little under half at 1M: see ``SCAN_BUDGET``). The codes
only *propose* candidates: the store re-ranks them with the stored vectors from the database, so reported
distances are those of the truth and the 8-bit rounding can only matter for a candidate far down the list.
Measurements behind ``EXACT_BELOW`` and ``SCAN_BUDGET``: docs/GALLERY.md and benchmarks/results/gallery_scale_*.json.

The quantiser range is fixed ([-1, 1] per component, the range of any unit vector's components), so a code never
depends on other people's vectors and can be computed by any process from the small trained ``index.faiss`` alone.

``faiss`` is imported inside functions: it is slow to import and `list` / `remove` need it late or never.
Single queries run on one thread (``faiss.omp_set_num_threads(1)`` while searching one row): FAISS's thread pool
made one query 2.5x slower on two cores, and splitting one query's lists over two threads (``parallel_mode = 1``),
though it halved the median on an idle machine, made p99 40 ms when another process kept one core busy.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

EXACT_BELOW = 20_000          # faces; below this a query compares against every face
SCAN_BUDGET = 464_000
"""Codes one query may scan (the nearest lists first): the recall / latency knob, chosen for recall.

Measured at 1M (4096 lists, benchmarks.gallery_scale's data, one core, 2-core machine shared; docs/GALLERY.md):
recall@1 against exact search 0.932 at 128k codes, 0.973 at 256k, 0.985 at 384k, 0.990 at 448k, 0.993 at 464k,
0.995 at 480k, 0.997 at 512k; search p50 / p99 about 9 / 10 ms at 464k (3.6 / 4.0 ms at 128k). A miss turns a
known face into a wrong *unknown* at a door, so this is the smallest budget with some margin over the 0.99 target,
and p99 lands near its 10 ms limit. Simpler and steadier than the alternatives tried: 8192 lists needed *more*
time for the same recall (per-list overhead); two threads per query halved the median but made p99 40 ms when the
other core was busy; stopping once the next centroid is far below the best candidate found (0.4 in inner product)
scanned a third as much on average, but strangers' photos (22 % of the queries; their nearest face is far) scan
long and over 1 % of queries reached the cap, so p99 and recall stayed where the cap puts them. The scan reads
~120 MB of codes per query at 1M; only smaller codes (4-bit, PQ fast-scan) would buy recall and the 2 ms median
together."""
MAX_LISTS = 4096
RETRAIN_FACTOR = 4            # retrain when the gallery has grown or shrunk this much since training
_TRAIN_POINTS_PER_LIST = 32
_SQ_RANGE = (-1.0, 2.0)       # vmin, vdiff of the uniform 8-bit quantiser: [-1, 1]


def _faiss() -> Any:
    import faiss  # noqa: PLC0415 - deliberately lazy, see module docstring

    return faiss


def lists_for(n: int) -> int:
    """How many inverted lists a gallery of ``n`` faces gets: one (exact) below EXACT_BELOW, else ~4·√n (a power
    of two), so a list holds ~√n/4 faces (``tune`` decides how many lists a query scans). At 1M, 4096 lists found
    the exact nearest person for 96.1 % of queries at the same scan budget where 2048 found 94.9 % (docs/GALLERY.md)."""
    if n < EXACT_BELOW:
        return 1
    return int(min(MAX_LISTS, 2 ** round(math.log2(4 * math.sqrt(n)))))


def needs_retraining(nlist: int, trained_for: int, n: int) -> bool:
    """Whether an index trained for ``trained_for`` faces with ``nlist`` lists no longer suits ``n`` faces."""
    if lists_for(n) == nlist:
        return False
    if nlist == 1 or lists_for(n) == 1:
        return True       # crossing EXACT_BELOW either way
    return n > trained_for * RETRAIN_FACTOR or n * RETRAIN_FACTOR < trained_for


def empty_index(dim: int, centroids: np.ndarray) -> Any:
    """An IVF index with the given (nlist, dim) unit centroids, ready to encode and to receive codes."""
    faiss = _faiss()
    nlist = int(centroids.shape[0])
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
    ivf = faiss.IndexIVFScalarQuantizer(
        quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit_uniform, faiss.METRIC_INNER_PRODUCT, False
    )
    ivf.own_fields = True
    quantizer.this.disown()
    faiss.copy_array_to_vector(np.array(_SQ_RANGE, dtype=np.float32), ivf.sq.trained)
    ivf.is_trained = True
    return ivf


def tune(ivf: Any) -> None:
    """Scan as many lists as fit in SCAN_BUDGET codes at the index's current size (all of them when small)."""
    per_list = max(1.0, int(ivf.ntotal) / int(ivf.nlist))
    ivf.nprobe = int(min(int(ivf.nlist), max(1, math.ceil(SCAN_BUDGET / per_list))))


def train(dim: int, sample: np.ndarray, nlist: int, seed: int = 1234) -> Any:
    """An empty IVF index whose lists are spherical k-means centroids of ``sample`` (unit rows)."""
    if nlist == 1:
        centre = np.zeros((1, dim), np.float32)
        centre[0, 0] = 1.0   # one list: the centroid only names the list, every query scans it
        return empty_index(dim, centre)
    faiss = _faiss()
    kmeans = faiss.Kmeans(dim, nlist, niter=10, spherical=True, seed=seed,
                          max_points_per_centroid=_TRAIN_POINTS_PER_LIST, verbose=False)
    kmeans.train(np.ascontiguousarray(sample, dtype=np.float32))
    return empty_index(dim, kmeans.centroids)


def train_sample_size(nlist: int) -> int:
    """How many vectors ``train`` needs (more would only slow k-means down)."""
    return 1 if nlist == 1 else nlist * _TRAIN_POINTS_PER_LIST


def encode(ivf: Any, vectors: np.ndarray) -> np.ndarray:
    """(n, code_bytes) uint8: each row's list number (little-endian, ``coarse_code_size`` bytes) then its 8-bit
    code. Any process with the same ``index.faiss`` computes the same bytes."""
    if len(vectors) == 0:
        return np.zeros((0, int(ivf.sa_code_size())), np.uint8)
    return ivf.sa_encode(np.ascontiguousarray(vectors, dtype=np.float32))


def list_numbers(ivf: Any, codes: np.ndarray) -> np.ndarray:
    """The list number held in the first bytes of each code (see ``encode``)."""
    width = int(ivf.coarse_code_size())
    out = np.zeros(len(codes), np.int64)
    for byte in range(width):
        out |= codes[:, byte].astype(np.int64) << (8 * byte)
    return out


def fill(ivf: Any, ids: np.ndarray, codes: np.ndarray) -> None:
    """Add coded rows to ``ivf``'s lists directly (no re-encoding): the fast path of opening a big gallery."""
    if len(ids) == 0:
        return
    faiss = _faiss()
    width = int(ivf.coarse_code_size())
    lists = list_numbers(ivf, codes)
    order = np.argsort(lists, kind="stable")
    lists = lists[order]
    starts = np.searchsorted(lists, np.arange(ivf.nlist + 1))
    for list_no in range(ivf.nlist):
        lo, hi = int(starts[list_no]), int(starts[list_no + 1])
        if hi == lo:
            continue
        rows = order[lo:hi]
        list_ids = np.ascontiguousarray(ids[rows], dtype=np.int64)
        list_codes = np.ascontiguousarray(codes[rows, width:])
        ivf.invlists.add_entries(list_no, hi - lo, faiss.swig_ptr(list_ids), faiss.swig_ptr(list_codes))
    ivf.ntotal += len(ids)
    tune(ivf)


def remove(ivf: Any, ids: np.ndarray) -> None:
    """Drop face ids from the in-memory lists."""
    if len(ids):
        ivf.remove_ids(_faiss().IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))
        tune(ivf)


def search(ivf: Any, queries: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
    """Approximate inner products and face ids of up to ``want`` candidates per query row (-1: none)."""
    faiss = _faiss()
    threads = faiss.omp_get_max_threads()
    single = len(queries) == 1
    if single:
        faiss.omp_set_num_threads(1)
    try:
        return ivf.search(np.ascontiguousarray(queries, dtype=np.float32), want)
    finally:
        if single:
            faiss.omp_set_num_threads(threads)


def serialize(ivf: Any) -> np.ndarray:
    """index.faiss bytes of an *empty* trained index (centroids and quantiser), a few MB at most."""
    return _faiss().serialize_index(ivf)


def deserialize(blob: bytes, dim: int) -> Any | None:
    """The trained empty index from index.faiss bytes, or None when they are not one of ours for ``dim``."""
    faiss = _faiss()
    try:
        ivf = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
    except (RuntimeError, ValueError, TypeError):
        return None
    if not isinstance(ivf, faiss.IndexIVFScalarQuantizer) or ivf.d != dim or ivf.ntotal != 0 \
            or ivf.metric_type != faiss.METRIC_INNER_PRODUCT or ivf.by_residual:
        return None
    return ivf
