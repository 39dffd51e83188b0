"""The gallery above ``index.EXACT_BELOW``: many lists of 4-bit codes, a shortlist re-scored with 8-bit codes from
the slots file, then the database's vectors. ``EXACT_BELOW`` is lowered so a few hundred random faces cross it,
and ``LISTS`` with it (the structure is the one a million-face gallery uses; benchmarks/gallery_scale.py measures
it at scale).

Random unit vectors, no datasets, never skipped."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gallery import SLOTS_FILE, Gallery, index
from gallery.cache import DiskCache
from gallery.vectors import from_blob, to_blob, unit_rows

DIM = 128
MODEL = "model-ivf"
PEOPLE = 400


@pytest.fixture()
def small_exact_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index, "EXACT_BELOW", 200)
    monkeypatch.setattr(index, "LISTS", 16)


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def crowd(home: Path, rng: np.random.Generator) -> tuple[Gallery, np.ndarray]:
    """A gallery of PEOPLE people, one face each, enrolled one at a time (so it is retrained on the way up)."""
    vectors = unit(rng, PEOPLE)
    gallery = Gallery(home, MODEL, DIM)
    with gallery.locked():    # one transaction: quicker, and the crossing happens inside it as in a bulk enrolment
        for i, v in enumerate(vectors):
            gallery.add_face(f"p{i:03d}", v, f"{i:064x}")
    return gallery, vectors


def nearest(vectors: np.ndarray, queries: np.ndarray, alive: np.ndarray) -> list[int]:
    scores = queries @ vectors.T
    scores[:, ~alive] = -np.inf
    return scores.argmax(axis=1).tolist()


def test_a_big_gallery_uses_four_bit_lists_and_answers_as_exact_search(
        tmp_path: Path, small_exact_limit: None) -> None:
    rng = np.random.default_rng(7)
    gallery, vectors = crowd(tmp_path / "home", rng)
    loaded = gallery._current_index()
    assert not index.is_exact(loaded.ivf) and loaded.ivf.nlist > 1 and loaded.live == PEOPLE
    queries = unit_rows(vectors[:60] + 0.3 * rng.normal(size=(60, DIM)), DIM)
    truth = nearest(vectors, queries, np.ones(PEOPLE, bool))
    found = [row[0].name for row in gallery.search(queries, k=1)]
    assert found == [f"p{i:03d}" for i in truth]
    with gallery.locked():    # enrolment's look-alike search reads inside the write transaction
        assert [row[0].name for row in gallery.search(queries, k=1)] == found
    # distances are the database's, not the codes'
    best = gallery.search(queries[0], k=1)[0][0]
    exact = float(np.sqrt(max(0.0, 2 - 2 * float(queries[0] @ vectors[truth[0]]))))
    assert abs(best.distance - exact) < 2e-3
    gallery.close()


def test_removal_and_enrolment_in_place_then_reopen(tmp_path: Path, small_exact_limit: None) -> None:
    rng = np.random.default_rng(8)
    home = tmp_path / "home"
    gallery, vectors = crowd(home, rng)
    alive = np.ones(PEOPLE, bool)
    for i in (0, 5, 17):
        gallery.remove_person(f"p{i:03d}")
        alive[i] = False
    newcomers = unit(rng, 3)
    for j, v in enumerate(newcomers):
        gallery.add_face(f"new{j}", v, f"{1000 + j:064x}")
    everyone = np.concatenate([vectors, newcomers])
    names = [f"p{i:03d}" for i in range(PEOPLE)] + [f"new{j}" for j in range(3)]
    alive = np.concatenate([alive, np.ones(3, bool)])
    queries = unit_rows(np.concatenate([vectors[[0, 5, 17, 40]], newcomers]), DIM)
    want = [names[i] for i in nearest(everyone, queries, alive)]
    assert [row[0].name for row in gallery.search(queries, k=1)] == want
    assert not {"p000", "p005", "p017"} & {m.name for row in gallery.search(queries, k=5) for m in row}
    gallery.close()
    with Gallery(home, MODEL, DIM) as reopened:   # from the cache files, no rebuild
        assert [row[0].name for row in reopened.search(queries, k=1)] == want


def test_another_process_change_is_reconciled(tmp_path: Path, small_exact_limit: None) -> None:
    rng = np.random.default_rng(9)
    home = tmp_path / "home"
    first, vectors = crowd(home, rng)
    first.search(vectors[0], k=1)
    newcomer = unit(rng, 1)[0]
    with Gallery(home, MODEL, DIM) as second:
        second.add_face("late", newcomer, f"{999:064x}")
        second.remove_person("p001")
    assert first.search(newcomer, k=1)[0][0].name == "late"
    assert all(m.name != "p001" for m in first.search(vectors[1], k=5)[0])
    first.close()


def test_removal_zeroes_both_codes_in_the_slots_file(tmp_path: Path, small_exact_limit: None) -> None:
    rng = np.random.default_rng(10)
    home = tmp_path / "home"
    gallery, vectors = crowd(home, rng)
    cache = DiskCache(home, MODEL, DIM)
    meta = cache.meta()
    assert meta is not None
    encoder = cache.encoder(meta)
    stored = from_blob(to_blob(vectors[3]), DIM)[None]      # the cache encodes the database's float16 vector
    codes = index.encode(encoder, stored)[0]
    assert codes.tobytes() in (home / SLOTS_FILE).read_bytes()
    gallery.remove_person("p003")
    data = (home / SLOTS_FILE).read_bytes()
    four_bit = codes[: int(encoder.sa_code_size())].tobytes()
    eight_bit = index.eight_bit(stored)[0].tobytes()
    assert four_bit not in data and eight_bit not in data
    gallery.close()


def test_growth_never_retrains_only_crossing_the_exact_limit_does(tmp_path: Path, small_exact_limit: None) -> None:
    rng = np.random.default_rng(11)
    home = tmp_path / "home"
    gallery, _ = crowd(home, rng)
    trained = DiskCache(home, MODEL, DIM).meta()
    assert trained is not None and trained.nlist == index.LISTS
    with gallery.locked():
        for j, v in enumerate(unit(rng, 500)):     # 900 faces: 4.5 times the size it was trained at
            gallery.add_face(f"grown{j}", v, f"{5000 + j:064x}")
    grown = DiskCache(home, MODEL, DIM).meta()
    assert grown is not None and grown.trained_id == trained.trained_id and grown.live == 900
    gallery.close()
    assert index.needs_retraining(1, 200) and not index.needs_retraining(1, 199)
    assert not index.needs_retraining(index.LISTS, 10 ** 7) and not index.needs_retraining(index.LISTS, 50)
    assert index.needs_retraining(index.LISTS, 49) and index.needs_retraining(index.LISTS * 2, 10 ** 5)


def test_filling_a_list_piece_by_piece_equals_filling_it_at_once() -> None:
    """Appends that leave a 4-bit list at a multiple of 1024 codes (where FAISS's own block append overruns its
    buffer) and appends in the middle of a SIMD block give exactly the list a single fill gives."""
    rng = np.random.default_rng(12)
    vectors = unit(rng, 3077)
    trained = index.train(DIM, vectors[:512], 2)
    codes = index.encode(trained, vectors)
    codes[:, : int(trained.coarse_code_size())] = 0           # every face in list 0
    ids = np.arange(10, 10 + len(vectors), dtype=np.int64)
    whole = index.deserialize(index.serialize(trained), DIM)
    pieces = index.deserialize(index.serialize(trained), DIM)
    index.fill(whole, ids, codes)
    start = 0
    for size in (1024, 1, 1023, 1024, 5):
        index.fill(pieces, ids[start:start + size], codes[start:start + size])
        start += size
    assert start == len(ids) and pieces.ntotal == whole.ntotal == len(ids)
    queries = unit_rows(vectors[::97] + 0.2 * rng.normal(size=vectors[::97].shape), DIM)
    np.testing.assert_array_equal(index.search(pieces, queries, 50), index.search(whole, queries, 50))
    assert index.search(pieces, vectors[3000:3001], 1)[0, 0] == ids[3000]


def test_enrolment_and_removal_update_the_open_index_without_reloading(
        tmp_path: Path, small_exact_limit: None) -> None:
    rng = np.random.default_rng(13)
    gallery, vectors = crowd(tmp_path / "home", rng)
    loaded = gallery._current_index()
    newcomer = unit(rng, 1)[0]
    gallery.add_face("newcomer", newcomer, f"{7777:064x}")
    gallery.remove_person("p002")
    assert gallery._current_index() is loaded and loaded.live == PEOPLE
    assert gallery.search(newcomer, k=1)[0][0].name == "newcomer"
    gallery.close()


def test_compaction_after_most_removals_keeps_answers_right(
        tmp_path: Path, small_exact_limit: None, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(14)
    home = tmp_path / "home"
    gallery, vectors = crowd(home, rng)
    monkeypatch.setattr("gallery.cache.COMPACT_ABOVE", 100)
    gone = list(range(0, 260))
    for i in gone:
        gallery.remove_person(f"p{i:03d}")
    meta = DiskCache(home, MODEL, DIM).meta()
    assert meta is not None and meta.records < PEOPLE and meta.live == PEOPLE - len(gone)
    alive = np.ones(PEOPLE, bool)
    alive[gone] = False
    queries = unit_rows(vectors[250:290] + 0.3 * rng.normal(size=(40, DIM)), DIM)
    want = [f"p{i:03d}" for i in nearest(vectors, queries, alive)]
    assert [row[0].name for row in gallery.search(queries, k=1)] == want
    gallery.close()
    with Gallery(home, MODEL, DIM) as reopened:
        assert [row[0].name for row in reopened.search(queries, k=1)] == want


def test_a_cache_that_cannot_be_written_still_answers_from_memory(
        tmp_path: Path, small_exact_limit: None, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(15)
    home = tmp_path / "home"
    gallery, vectors = crowd(home, rng)
    gallery.close()
    for name in ("index.faiss", "index.slots", "index.json"):
        (home / name).unlink()

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DiskCache, "write_full", disk_full)
    with Gallery(home, MODEL, DIM) as reopened:
        queries = unit_rows(vectors[:30] + 0.3 * rng.normal(size=(30, DIM)), DIM)
        want = [f"p{i:03d}" for i in nearest(vectors, queries, np.ones(PEOPLE, bool))]
        assert [row[0].name for row in reopened.search(queries, k=1)] == want
        assert not index.is_exact(reopened._current_index().ivf)
