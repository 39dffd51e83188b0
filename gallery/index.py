"""The FAISS side of the cache: how big an index to train, how a vector becomes a code, how codes become a searchable
index, and how a query finds its candidates.

Two structures, chosen by gallery size (``lists_for``):

* below ``EXACT_BELOW`` faces: one inverted list of 8-bit codes (``IndexIVFScalarQuantizer``, 256 bytes for the
  256-d model, half the float16 truth in the database). Every query scans every face: exact search over the codes.
  Nothing is trained, so a gallery of one person works.
* from ``EXACT_BELOW`` on: ``LISTS`` lists (spherical k-means on a sample, once) of 4-bit product-quantiser codes
  laid out for SIMD scanning (``IndexIVFPQFastScan``, 64 sub-vectors: 32 bytes a face, an eighth of the 8-bit
  code). A query scans as many of the nearest lists as fit in ``SCAN_BUDGET`` codes and keeps a ``SHORTLIST``;
  the shortlist is re-scored with each face's 8-bit code (kept beside the 4-bit one in the cache's slots file,
  read through a memory map), and the best of those go on as candidates.

Either way the codes only *propose* candidates: the store re-ranks them with the stored vectors from the database,
so reported distances are those of the truth and quantisation can only matter for a candidate far down the list.
Measurements behind ``EXACT_BELOW``, ``SCAN_BUDGET`` and ``SHORTLIST``: docs/GALLERY.md and
benchmarks/results/gallery_scale_*.json.

The 8-bit quantiser's range is fixed ([-1, 1] per component, the range of any unit vector's components), so an
8-bit code never depends on other people's vectors. A 4-bit code depends on the trained index (its list centroids
and product-quantiser codebooks, both in the small ``index.faiss``), which every process reads before encoding.

``faiss`` is imported inside functions: it is slow to import and `list` / `remove` need it late or never.
Single queries run on one thread (``faiss.omp_set_num_threads(1)`` while searching one row): FAISS's thread pool
made one query 2.5x slower on two cores, and splitting one query's lists over two threads (``parallel_mode = 1``),
though it halved the median on an idle machine, made p99 40 ms when another process kept one core busy.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

EXACT_BELOW = 20_000          # faces; below this a query compares against every face
SCAN_BUDGET = 600_000
"""4-bit codes one query may scan (the nearest lists first; every list up to 600k faces): the recall / latency
knob. At 1M (308 of 512 lists) recall@1 against exact search was 0.990 at search p50 ~2.1 ms; 700k: 0.991 at
2.3 ms; 550k: 0.989 at 2.0 ms (docs/GALLERY.md)."""
SHORTLIST = 512
"""Faces the 4-bit scan proposes for re-scoring with their 8-bit codes (4-bit codes blur near-ties: 256 lost
0.005 of recall at 1M, 1024 gained 0.004 for 0.4 ms more)."""
PQ_SUBVECTORS = 64            # 4 bits each: 32 bytes a face (fewer when the dimension is not a multiple)
LISTS = 512
"""Lists of the big-gallery index, trained once when a gallery crosses EXACT_BELOW (on 16k of its faces) and kept
as it grows: with 4-bit codes a query's cost is the codes it scans, and at 1M few long lists scanned the same share
of faces faster, for the same recall, than 4096 short ones (docs/GALLERY.md)."""
RETRAIN_FACTOR = 4            # back to exact search when the gallery shrinks to 1/4 of EXACT_BELOW
_TRAIN_POINTS_PER_LIST = 32
_SQ_RANGE = (-1.0, 2.0)       # vmin, vdiff of the uniform 8-bit quantiser: [-1, 1]
_BLOCK = 32                   # faces per SIMD block of the 4-bit lists (FAISS's bbs)


def _faiss() -> Any:
    import faiss  # noqa: PLC0415 - deliberately lazy, see module docstring

    return faiss


def lists_for(n: int) -> int:
    """How many inverted lists a gallery of ``n`` faces gets: one (exact) below EXACT_BELOW, else LISTS."""
    return 1 if n < EXACT_BELOW else LISTS


def needs_retraining(nlist: int, n: int) -> bool:
    """Whether an index with ``nlist`` lists no longer suits ``n`` faces: only
    when a gallery crosses EXACT_BELOW upwards, or shrinks to a quarter of it (hysteresis, so a gallery hovering at
    the boundary is not retrained back and forth). Growth alone never retrains: the lists' centroids describe where
    faces lie, which more faces of the same model do not change."""
    if nlist == 1:
        return n >= EXACT_BELOW
    return nlist != LISTS or n * RETRAIN_FACTOR < EXACT_BELOW


def subvectors(dim: int) -> int:
    """Product-quantiser sub-vectors for ``dim``: PQ_SUBVECTORS, or the largest divisor of ``dim`` below it."""
    return max(m for m in range(1, PQ_SUBVECTORS + 1) if dim % m == 0)


def is_exact(ivf: Any) -> bool:
    """One list of 8-bit codes (small galleries) rather than many lists of 4-bit codes."""
    return int(ivf.nlist) == 1


def _quantizer(dim: int, centroids: np.ndarray) -> Any:
    quantizer = _faiss().IndexFlatIP(dim)
    quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return quantizer


def _exact_index(dim: int) -> Any:
    """One list of 8-bit codes: its centroid only names the list, every query scans it."""
    faiss = _faiss()
    centre = np.zeros((1, dim), np.float32)
    centre[0, 0] = 1.0
    quantizer = _quantizer(dim, centre)
    ivf = faiss.IndexIVFScalarQuantizer(
        quantizer, dim, 1, faiss.ScalarQuantizer.QT_8bit_uniform, faiss.METRIC_INNER_PRODUCT, False
    )
    ivf.own_fields = True
    quantizer.this.disown()
    faiss.copy_array_to_vector(np.array(_SQ_RANGE, dtype=np.float32), ivf.sq.trained)
    ivf.is_trained = True
    return ivf


def train(dim: int, sample: np.ndarray, nlist: int, seed: int = 1234) -> Any:
    """An empty index for ``nlist`` lists: the exact one, or lists by spherical k-means of ``sample`` (unit rows)
    with 4-bit product-quantiser codebooks trained on the same sample."""
    if nlist == 1:
        return _exact_index(dim)
    faiss = _faiss()
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    kmeans = faiss.Kmeans(dim, nlist, niter=10, spherical=True, seed=seed,
                          max_points_per_centroid=_TRAIN_POINTS_PER_LIST, min_points_per_centroid=1, verbose=False)
    kmeans.train(sample)
    quantizer = _quantizer(dim, kmeans.centroids)
    ivf = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, subvectors(dim), 4, faiss.METRIC_INNER_PRODUCT,
                                   _BLOCK)
    ivf.own_fields = True
    quantizer.this.disown()
    ivf.by_residual = False    # codes of the vectors themselves: the 8-bit re-scoring needs no list centroid
    ivf.pq.cp.seed = seed
    ivf.pq.cp.min_points_per_centroid = 1   # a small sample only warns; the lists are then coarser, not wrong
    ivf.train(sample)
    return ivf


def train_sample_size(nlist: int) -> int:
    """How many vectors ``train`` needs (more would only slow k-means down)."""
    return 1 if nlist == 1 else nlist * _TRAIN_POINTS_PER_LIST


def code_size(ivf: Any) -> int:
    """Bytes of one face's record code (see ``encode``)."""
    size = int(ivf.sa_code_size())
    return size if is_exact(ivf) else size + int(ivf.d)


def encode(ivf: Any, vectors: np.ndarray) -> np.ndarray:
    """(n, code_size) uint8: each row's list number (little-endian, ``coarse_code_size`` bytes), its code in
    the index (8-bit or 4-bit), and for the 4-bit index its 8-bit code for re-scoring. Any process with the same
    ``index.faiss`` computes the same bytes."""
    if len(vectors) == 0:
        return np.zeros((0, code_size(ivf)), np.uint8)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    codes = ivf.sa_encode(vectors)
    return codes if is_exact(ivf) else np.concatenate([codes, eight_bit(vectors)], axis=1)


def eight_bit(vectors: np.ndarray) -> np.ndarray:
    """Each component of [-1, 1] rounded to one of 256 levels (monotonic, so the inner product with a query ranks
    faces as the vectors would, up to rounding)."""
    vmin, vdiff = _SQ_RANGE
    return np.clip(np.rint((vectors - vmin) / vdiff * 255), 0, 255).astype(np.uint8)


def list_numbers(ivf: Any, codes: np.ndarray) -> np.ndarray:
    """The list number held in the first bytes of each code (see ``encode``)."""
    width = int(ivf.coarse_code_size())
    out = np.zeros(len(codes), np.int64)
    for byte in range(width):
        out |= codes[:, byte].astype(np.int64) << (8 * byte)
    return out


def eight_bit_part(ivf: Any, codes: np.ndarray) -> np.ndarray:
    """The 8-bit re-scoring codes at the end of the 4-bit index's record codes (see ``encode``)."""
    return codes[:, int(ivf.sa_code_size()):]


def fill(ivf: Any, ids: np.ndarray, codes: np.ndarray) -> None:
    """Add coded rows (record codes, ``encode``) to ``ivf``'s lists directly, without re-encoding: the fast path
    of opening a big gallery and of an enrolment."""
    if len(ids) == 0:
        return
    faiss = _faiss()
    width = int(ivf.coarse_code_size())
    end = int(ivf.sa_code_size())
    lists = list_numbers(ivf, codes)
    order = np.argsort(lists, kind="stable")
    lists = lists[order]
    starts = np.searchsorted(lists, np.arange(ivf.nlist + 1))
    packer = None if is_exact(ivf) else ivf.get_CodePacker()
    for list_no in range(ivf.nlist):
        lo, hi = int(starts[list_no]), int(starts[list_no + 1])
        if hi == lo:
            continue
        rows = order[lo:hi]
        list_ids = np.ascontiguousarray(ids[rows], dtype=np.int64)
        list_codes = np.ascontiguousarray(codes[rows, width:end])
        if packer is None:
            ivf.invlists.add_entries(list_no, hi - lo, faiss.swig_ptr(list_ids), faiss.swig_ptr(list_codes))
        else:
            _add_packed(ivf.invlists, packer, list_no, list_ids, list_codes)
    ivf.ntotal += len(ids)
    tune(ivf)


def _add_packed(invlists: Any, packer: Any, list_no: int, ids: np.ndarray, flat: np.ndarray) -> None:
    """Append 4-bit codes to a fast-scan list, which holds them interleaved in SIMD blocks of 32.

    The list is always handed to FAISS whole (its blocks so far plus the new codes, from offset 0): FAISS's
    ``BlockInvertedLists::add_entries`` copies whole blocks past the end of its buffer when the list already holds
    a positive multiple of 1024 codes (1.15.1), so appending to a non-empty list is never left to it."""
    faiss = _faiss()
    old = int(invlists.list_size(list_no))
    total = old + len(ids)
    blocks = -(-total // packer.nvec)
    packed = np.zeros(blocks * packer.block_size, np.uint8)
    all_ids = ids
    if old:
        old_bytes = -(-old // packer.nvec) * packer.block_size
        packed[:old_bytes] = faiss.rev_swig_ptr(invlists.get_codes(list_no), old_bytes)
        all_ids = np.concatenate([faiss.rev_swig_ptr(invlists.get_ids(list_no), old).copy(), ids])
        for i, code in enumerate(flat):
            packer.pack_1_c(faiss.swig_ptr(code), old + i, faiss.swig_ptr(packed))
        invlists.resize(list_no, 0)
    else:
        padded = np.zeros((blocks * packer.nvec, packer.code_size), np.uint8)
        padded[: len(flat)] = flat
        for block in range(blocks):
            packer.pack_all(faiss.swig_ptr(padded[block * packer.nvec:]),
                            faiss.swig_ptr(packed[block * packer.block_size:]))
    all_ids = np.ascontiguousarray(all_ids, dtype=np.int64)
    invlists.add_entries(list_no, total, faiss.swig_ptr(all_ids), faiss.swig_ptr(packed))


def remove(ivf: Any, ids: np.ndarray) -> None:
    """Drop face ids from the in-memory lists."""
    if len(ids):
        ivf.remove_ids(_faiss().IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))
        tune(ivf)


def tune(ivf: Any) -> None:
    """Scan as many lists as fit in SCAN_BUDGET codes at the index's current size (all of them when small)."""
    per_list = max(1.0, int(ivf.ntotal) / int(ivf.nlist))
    ivf.nprobe = int(min(int(ivf.nlist), max(1, math.ceil(SCAN_BUDGET / per_list))))


def search(ivf: Any, queries: np.ndarray, want: int,
           eight_bit_codes: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Face ids of up to ``want`` candidates per query row, best first (-1: none). For the 4-bit index,
    ``eight_bit_codes(ids)`` returns the 8-bit codes of live face ids, used to re-score the shortlist."""
    faiss = _faiss()
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    threads = faiss.omp_get_max_threads()
    single = len(queries) == 1
    exact = is_exact(ivf) or eight_bit_codes is None
    if single:
        faiss.omp_set_num_threads(1)
    try:
        _, ids = ivf.search(queries, want if exact else max(SHORTLIST, 4 * want))
    finally:
        if single:
            faiss.omp_set_num_threads(threads)
    if exact:
        return ids
    out = np.full((len(queries), want), -1, np.int64)
    for row, (query, shortlist) in enumerate(zip(queries, ids)):
        shortlist = shortlist[shortlist >= 0]
        if len(shortlist) == 0:
            continue
        scores = eight_bit_codes(shortlist).astype(np.float32) @ query
        best = np.argsort(-scores, kind="stable")[:want]
        out[row, : len(best)] = shortlist[best]
    return out


def serialize(ivf: Any) -> np.ndarray:
    """index.faiss bytes of an *empty* trained index (centroids, codebooks), a few MB at most."""
    return _faiss().serialize_index(ivf)


def deserialize(blob: bytes, dim: int) -> Any | None:
    """The trained empty index from index.faiss bytes, or None when they are not one of ours for ``dim``."""
    faiss = _faiss()
    try:
        ivf = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
    except (RuntimeError, ValueError, TypeError):
        return None
    if ivf.d != dim or ivf.ntotal != 0 or ivf.metric_type != faiss.METRIC_INNER_PRODUCT or ivf.by_residual:
        return None
    if isinstance(ivf, faiss.IndexIVFScalarQuantizer) and ivf.nlist == 1:
        return ivf
    if isinstance(ivf, faiss.IndexIVFPQFastScan) and ivf.nlist > 1 and ivf.M == subvectors(dim) \
            and ivf.nbits == 4:
        return ivf
    return None
