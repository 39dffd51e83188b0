"""A small pool of `OneShot` services for the web service's worker threads, with one writer at a time.

A `Gallery` is not thread-safe (one per thread), so each request borrows a whole `OneShot` (its own gallery and
SQLite connection; the models are shared, they load once per process). The pool is small and fixed: it bounds
both memory (each gallery holds its own FAISS index) and CPU (a 2-core machine gains nothing from more parallel
inference). Writers (enrol, remove) also take one lock, so two uploads never race in this process (other
processes, such as the CLI, queue on SQLite's write lock); readers only wait for a free service, never for the
writer: SQLite's write transaction is short, and identification reads a consistent snapshot.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from enroll.service import Engine, OneShot

T = TypeVar("T")


class Workers:
    """`size` OneShot services over the same home; `read` and `write` lend one to a function."""

    def __init__(self, home: Path | str | None, size: int = 2, engine: Engine | None = None, *,
                 db: str | None = None) -> None:
        if size < 1:
            raise ValueError(f"the pool needs at least one service, got {size}")
        self._idle: queue.Queue[OneShot] = queue.Queue()
        self._all = [OneShot(home, engine=engine, db=db) for _ in range(size)]
        for service in self._all:
            self._idle.put(service)
        self._write_lock = threading.Lock()
        self._closed = False
        self.home = self._all[0].home

    @contextmanager
    def _borrow(self) -> Iterator[OneShot]:
        service = self._idle.get()
        try:
            yield service
        finally:
            self._idle.put(service)

    def read(self, job: Callable[[OneShot], T]) -> T:
        """Run `job` with a free service (blocks only while every service is busy)."""
        with self._borrow() as service:
            return job(service)

    def write(self, job: Callable[[OneShot], T]) -> T:
        """Run `job` as the only writer of this process."""
        with self._write_lock, self._borrow() as service:
            return job(service)

    def close(self) -> None:
        """Close every gallery (writing its index cache), waiting for jobs still running to give theirs back.
        Closing twice is harmless (uvicorn's shutdown and a failed start may both ask)."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
        for _ in self._all:
            service = self._idle.get()
            service.close()
