"""The on-disk FAISS cache beside the database, updated in place: a change touches a few bytes, never the whole file.

Three files in the gallery home (each host keeps its own, even when the truth is a shared PostgreSQL):

* ``index.faiss`` - the *empty* trained index (list centroids, quantiser): a few MB, rewritten only on (re)training;
* ``index.slots`` - one fixed-size record per face ever cached: face id (int64), live flag, code (``index.encode``:
  the index's code and, for big galleries, the 8-bit code that re-scores a query's shortlist, read from this file
  through a memory map).
  Enrolment appends records; removal overwrites the person's records with zeros *in place* (their code was a
  rounding of their vector, so it is erased like the database row), keeping the id so the file stays sorted by id
  and a face is found by binary search without reading the file. When most records are dead the file is
  compacted (rewritten without them, atomically);
* ``index.json`` - generation, model, dim, record and live counts, people count, training parameters: rewritten
  atomically (a few hundred bytes) after every change.

Every change is written while the database's write lock is held, before the commit, and only when ``index.json``
still describes the database state just before the change; otherwise the cache is first reconciled with the
database (see ``gallery.store``). A reader therefore trusts the cache when its generation equals the database's,
and anything else (missing, damaged, other model, stale) means "reconcile or rebuild", never "fail".
"""
from __future__ import annotations

import json
import os
import tempfile
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gallery import index

INDEX_FILE = "index.faiss"
SLOTS_FILE = "index.slots"
META_FILE = "index.json"
FORMAT = 3
LOAD_CHUNK = 65_536    # records copied out of the memory map at a time when opening
COMPACT_ABOVE = 1000   # records; a slots file this small is never worth compacting
# Temporary files our atomic writes create (``.<name>.<random>.tmp``); a crash can leave one behind.
TEMP_PREFIXES = tuple(f".{name}." for name in (INDEX_FILE, SLOTS_FILE, META_FILE))


@dataclass(frozen=True)
class Meta:
    """What index.json records; ``records`` counts slots (live and erased), ``live`` the faces searchable."""

    format: int
    model_id: str
    dim: int
    generation: int
    records: int
    live: int
    people: int
    nlist: int
    trained_for: int
    code_size: int
    trained_id: str


@dataclass
class Loaded:
    """The searchable in-memory index of one database generation, how many people it holds (the N of τ(N)), and
    the records the 8-bit re-scoring reads (the slots file's memory map, or the records themselves when the cache
    could not be written), with ``position``: face id -> its record's index (-1: none), one int32 per face id ever
    issued (4 MB at 1M): a shortlist's records are found with one lookup each, where a binary search over the ids
    cost 0.2 ms a query at 1M (cache misses)."""

    ivf: Any
    meta: Meta
    records: np.ndarray
    position: np.ndarray

    @property
    def generation(self) -> int:
        return self.meta.generation

    @property
    def people(self) -> int:
        return self.meta.people

    @property
    def live(self) -> int:
        return self.meta.live

    def search(self, queries: np.ndarray, want: int) -> np.ndarray:
        """Candidate face ids (``index.search``), re-scored with the records' 8-bit codes."""
        return index.search(self.ivf, queries, want, self._eight_bit)

    def _eight_bit(self, ids: np.ndarray) -> np.ndarray:
        return index.eight_bit_part(self.ivf, self.records[self.position[ids]]["code"])

    def appended(self, cache: DiskCache, meta: Meta, ids: np.ndarray, codes: np.ndarray) -> None:
        """Follow ``cache.append`` (which wrote the records after the ``self.meta.records`` already there): the new
        faces become searchable and their records readable."""
        index.fill(self.ivf, ids, codes)
        if len(ids) and int(ids.max()) >= len(self.position):   # room for the new ids, doubling
            grown = np.full(max(int(ids.max()) + 1, 2 * len(self.position)), -1, np.int32)
            grown[: len(self.position)] = self.position
            self.position = grown
        self.position[ids] = np.arange(self.meta.records, self.meta.records + len(ids), dtype=np.int32)
        self._follow(cache, meta)

    def erased(self, cache: DiskCache, meta: Meta, ids: np.ndarray) -> None:
        """Follow ``cache.erase``: it zeroed the records in place (seen through the map) or compacted the file."""
        index.remove(self.ivf, ids)
        compacted = meta.records != self.meta.records
        self._follow(cache, meta)
        if compacted:   # the records moved
            self.position = positions(self.records["id"])

    def _follow(self, cache: DiskCache, meta: Meta) -> None:
        records = cache.slots(meta)
        if records is None:
            raise OSError(f"cannot read {cache.home / SLOTS_FILE}")
        self.meta, self.records = meta, records


def positions(record_ids: np.ndarray) -> np.ndarray:
    """face id -> index of its record (-1 for ids with none), for records in any order."""
    table = np.full(int(record_ids.max()) + 1 if len(record_ids) else 0, -1, np.int32)
    table[record_ids] = np.arange(len(record_ids), dtype=np.int32)
    return table


def records_of(ids: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Live records in memory, as the slots file would hold them (for a gallery whose cache cannot be written)."""
    records = np.zeros(len(ids), record_dtype(codes.shape[1]))
    records["id"], records["live"], records["code"] = ids, 1, codes
    return records


def record_dtype(code_size: int) -> np.dtype:
    return np.dtype([("id", "<i8"), ("live", "u1"), ("code", "u1", (code_size,))])


class DiskCache:
    """The three cache files of one home, for one model and dim. Not thread-safe; callers hold the DB write lock
    for every method that writes."""

    def __init__(self, home: Path, model_id: str, dim: int) -> None:
        self.home = home
        self.model_id = model_id
        self.dim = dim
        self._encoder: Any | None = None
        self._encoder_id: str | None = None

    # -- reading ----------------------------------------------------------------------------------------------

    def meta(self) -> Meta | None:
        """index.json if it is ours, for this model and dim, and consistent with the slots file's size."""
        try:
            raw = json.loads((self.home / META_FILE).read_bytes())
            meta = Meta(**raw)
            size = (self.home / SLOTS_FILE).stat().st_size
        except (OSError, ValueError, TypeError):
            return None
        if meta.format != FORMAT or meta.model_id != self.model_id or meta.dim != self.dim:
            return None
        if size < meta.records * record_dtype(meta.code_size).itemsize or not 0 <= meta.live <= meta.records:
            return None
        return meta

    def encoder(self, meta: Meta) -> Any | None:
        """The trained empty index named by ``meta`` (memoised), or None when index.faiss does not match it."""
        if self._encoder is not None and self._encoder_id == meta.trained_id:
            return self._encoder
        ivf = self._read_trained(meta)
        if ivf is not None:
            self._encoder, self._encoder_id = ivf, meta.trained_id
        return ivf

    def _read_trained(self, meta: Meta) -> Any | None:
        """index.faiss as a fresh trained empty index, or None when it is unreadable or does not match ``meta``."""
        try:
            blob = (self.home / INDEX_FILE).read_bytes()
        except OSError:
            return None
        ivf = index.deserialize(blob, self.dim)
        if ivf is None or int(ivf.nlist) != meta.nlist or index.code_size(ivf) != meta.code_size:
            return None
        return ivf

    def load(self) -> Loaded | None:
        """The whole cache as a searchable index (codes copied from a memory map of the slots file a chunk at a
        time), or None."""
        meta = self.meta()
        if meta is None:
            return None
        ivf = self._read_trained(meta)
        if ivf is None:
            return None
        slots = self.slots(meta)
        if slots is None:
            return None
        ids, live_ids, live_codes = [], [], []
        index_part = int(ivf.sa_code_size())    # the 8-bit re-scoring codes stay in the file
        for start in range(0, meta.records, LOAD_CHUNK):
            chunk = np.asarray(slots[start:start + LOAD_CHUNK])
            alive = chunk["live"] == 1
            live_ids.append(chunk["id"][alive])
            live_codes.append(chunk["code"][alive][:, :index_part])
            ids.append(chunk["id"].copy())
        if sum(len(i) for i in live_ids) != meta.live:
            return None
        if live_ids:
            index.fill(ivf, np.concatenate(live_ids), np.concatenate(live_codes))
        return Loaded(ivf, meta, slots, positions(np.concatenate(ids) if ids else np.zeros(0, np.int64)))

    def live_ids(self, meta: Meta) -> np.ndarray | None:
        """Face ids of the live records, ascending (used to reconcile with the database)."""
        slots = self.slots(meta)
        if slots is None:
            return None
        return np.asarray(slots["id"][slots["live"] == 1])

    def slots(self, meta: Meta) -> np.ndarray | None:
        """The ``meta.records`` records through a read-only memory map (nothing is read until touched), as a plain
        array view (a memmap object costs per indexing), or None."""
        if meta.records == 0:
            return np.zeros(0, record_dtype(meta.code_size))
        try:
            return np.asarray(np.memmap(self.home / SLOTS_FILE, dtype=record_dtype(meta.code_size), mode="r",
                                        shape=(meta.records,)))
        except (OSError, ValueError):
            return None

    # -- writing (caller holds the database write lock) ---------------------------------------------------------

    def write_full(self, ivf: Any, ids: np.ndarray, codes: np.ndarray, generation: int, people: int,
                   trained_for: int) -> Meta:
        """Replace all three files: a fresh training and every face (ids ascending)."""
        meta = Meta(FORMAT, self.model_id, self.dim, generation, len(ids), len(ids), people, int(ivf.nlist),
                    trained_for, index.code_size(ivf), uuid.uuid4().hex)
        records = records_of(ids, codes)
        self.discard_meta()   # readers never see a new index.faiss with an old index.json
        atomic_write(self.home / SLOTS_FILE, memoryview(records.view(np.uint8).reshape(-1)))
        atomic_write(self.home / INDEX_FILE, memoryview(index.serialize(ivf)))
        self.write_meta(meta)
        self._encoder, self._encoder_id = None, None
        return meta

    def append(self, meta: Meta, ids: np.ndarray, codes: np.ndarray, generation: int, people: int) -> Meta:
        """Add records for new faces (ids larger than any cached) at the end of the slots file."""
        records = np.zeros(len(ids), record_dtype(meta.code_size))
        records["id"], records["live"], records["code"] = ids, 1, codes
        with open(self.home / SLOTS_FILE, "r+b") as fh:
            fh.truncate(meta.records * records.dtype.itemsize)   # drop records a crash left beyond the json
            fh.seek(0, os.SEEK_END)
            fh.write(records.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        new = replace(meta, generation=generation, records=meta.records + len(ids), live=meta.live + len(ids),
                      people=people)
        self.write_meta(new)
        return new

    def erase(self, meta: Meta, ids: np.ndarray, generation: int, people: int) -> Meta:
        """Overwrite the records of ``ids`` with zeros (id kept, live 0) in place and fsync; compact when most
        records are dead. Ids not cached are ignored."""
        dtype = record_dtype(meta.code_size)
        slots = self.slots(meta)
        if slots is None:
            raise OSError(f"cannot read {self.home / SLOTS_FILE}")
        column = slots["id"]
        positions = np.searchsorted(column, ids)
        hits = [(int(p), int(face_id)) for p, face_id in zip(positions, ids)
                if p < meta.records and int(column[p]) == int(face_id) and slots["live"][p]]
        del slots, column
        erased = len(hits)
        if hits:
            with open(self.home / SLOTS_FILE, "r+b") as fh:
                for position, face_id in hits:
                    blank = np.zeros(1, dtype)
                    blank["id"] = face_id   # kept so the file stays sorted; live 0, code all zeros
                    fh.seek(position * dtype.itemsize)
                    fh.write(blank.tobytes())
                fh.flush()
                os.fsync(fh.fileno())
        new = replace(meta, generation=generation, live=meta.live - erased, people=people)
        if new.records > COMPACT_ABOVE and new.live * 2 < new.records:
            new = self._compact(new)
        self.write_meta(new)
        return new

    def _compact(self, meta: Meta) -> Meta:
        slots = self.slots(meta)
        assert slots is not None
        kept = np.array(slots[slots["live"] == 1])
        del slots
        atomic_write(self.home / SLOTS_FILE, memoryview(kept.view(np.uint8).reshape(-1)))
        return replace(meta, records=len(kept))

    def write_meta(self, meta: Meta) -> None:
        atomic_write(self.home / META_FILE, (json.dumps(asdict(meta), sort_keys=True) + "\n").encode())

    def discard_meta(self) -> None:
        """Make the cache invalid (the next user reconciles or rebuilds); the files themselves stay."""
        (self.home / META_FILE).unlink(missing_ok=True)

    def clean_temp(self) -> None:
        """Delete temporary files a crashed write left behind: they may hold codes of people since erased."""
        clean_temp(self.home, TEMP_PREFIXES)


def clean_temp(home: Path, prefixes: tuple[str, ...]) -> None:
    """Unlink ``home``'s ``<prefix>*.tmp`` files (only called under the write lock, so none is in use)."""
    try:
        names = os.listdir(home)
    except OSError:
        return
    for name in names:
        if name.endswith(".tmp") and name.startswith(prefixes):
            try:
                os.unlink(home / name)
            except OSError:
                pass


def atomic_write(path: Path, data: bytes | memoryview) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a partial one.

    Temp file in the same directory (so os.replace is a rename on one filesystem), fsync before the rename, then
    fsync the directory so the rename itself survives a power cut. The temp file is removed on any failure; one a
    crash leaves behind is removed by ``clean_temp`` at the next write.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Best-effort directory fsync (not supported on every platform/filesystem)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
