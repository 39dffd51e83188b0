"""Warm latency and throughput of `oneshot serve`, measured as a client meets it: HTTP over loopback.

    python -m benchmarks.serve [--people 100] [--requests 200] [--note TEXT]

Starts the installed `oneshot serve` on a free loopback port with a fresh gallery, enrols `--people` LFW people
through the API (one photo each, so the search is not against an empty gallery), then sends `identify` requests of
one 640×480 JPEG (celeba-wild photos on a 640×480 canvas, as benchmarks/speed.py makes them) from 1 client and
from 4 concurrent clients, each on its own keep-alive connection. Reports latency p50/p99 per request, photos per
second, and the service's resident memory (now and peak). The machine's load average is recorded before and
after: on a shared machine other work inflates the numbers. Results: benchmarks/results/serve.json.
"""
from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np

from benchmarks.machine import cpu_name, load_average, write_result
from benchmarks.speed import camera_photos
from train.data_paths import data_root

RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"
BOUNDARY = "oneshot-bench-6d1e"


def multipart(fields: list[tuple[str, Any]]) -> bytes:
    """A multipart/form-data body; a field's value is text or (file name, bytes)."""
    parts = []
    for name, value in fields:
        if isinstance(value, tuple):
            head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{value[0]}"\r\n'
                    "Content-Type: image/jpeg\r\n\r\n")
            parts.append(head.encode() + value[1] + b"\r\n")
        else:
            parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


class Client:
    """One keep-alive HTTP connection to the service."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        self.conn.request("POST", path, body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        response = self.conn.getresponse()
        return response.status, json.loads(response.read())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> dict[str, float]:
    """Resident memory of the service process now (VmRSS) and at its peak (VmHWM), MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return {"rss_mb": round(fields.get("VmRSS", 0.0), 1), "peak_rss_mb": round(fields.get("VmHWM", 0.0), 1)}


def lfw_first_photos(count: int) -> list[tuple[str, bytes]]:
    root = data_root()
    if root is None:
        raise SystemExit("error: no datasets (set ONESHOT_DATA)")
    seen: dict[str, Path] = {}
    for row in csv.DictReader((root / "lfw" / "manifest.csv").open()):
        seen.setdefault(row["identity"], root / "lfw" / row["path"])
    return [(name, path.read_bytes()) for name, path in list(seen.items())[:count]]


def run_clients(port: int, photos: list[bytes], clients: int, per_client: int) -> dict[str, float]:
    """`clients` threads, each sending `per_client` identify requests back to back; latencies and throughput."""
    latencies: list[float] = []
    lock = threading.Lock()
    failures: list[str] = []
    start_line = threading.Barrier(clients + 1)

    def work(index: int) -> None:
        client = Client(port)
        client.post("/identify", multipart([("photo", ("warm.jpg", photos[index % len(photos)]))]))
        start_line.wait()
        mine = []
        for i in range(per_client):
            body = multipart([("photo", ("door.jpg", photos[(index * per_client + i) % len(photos)]))])
            t0 = time.perf_counter()
            status, answer = client.post("/identify", body)
            mine.append(1000 * (time.perf_counter() - t0))
            if status != 200:
                failures.append(f"{status}: {answer}")
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start_line.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if failures:
        raise SystemExit(f"error: {len(failures)} requests failed, e.g. {failures[0]}")
    return {"clients": clients, "requests": len(latencies), "p50_ms": round(float(np.percentile(latencies, 50)), 1),
            "p99_ms": round(float(np.percentile(latencies, 99)), 1),
            "mean_ms": round(float(np.mean(latencies)), 1), "photos_per_s": round(len(latencies) / wall, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200, help="identify requests per configuration")
    parser.add_argument("--note", default="", help="a remark stored with the results (e.g. the machine was shared)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    photos = camera_photos(20)
    people = lfw_first_photos(args.people)
    load_before = load_average()
    port = free_port()
    exe = [str(Path(sys.executable).parent / "oneshot")]
    if not Path(exe[0]).exists():
        exe = [sys.executable, "-m", "enroll.cli"]
    with TemporaryDirectory() as home:
        started = time.perf_counter()
        server = subprocess.Popen([*exe, "--home", home, "serve", "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if server.poll() is not None:
                        raise SystemExit(f"error: oneshot serve exited: {server.stderr.read().decode()[-500:]}")
                    time.sleep(0.1)
            ready_s = time.perf_counter() - started
            client = Client(port)
            enrolled = 0
            for name, data in people:
                status, _ = client.post("/enroll", multipart([("photo", (f"{name}.jpg", data)), ("name", name),
                                                              ("largest", "true")]))
                enrolled += status == 200
            idle = rss_mb(server.pid)
            one = run_clients(port, photos, 1, args.requests)
            four = run_clients(port, photos, 4, max(1, args.requests // 4))
            memory = rss_mb(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    result = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "photo": "640x480 JPEG (celeba-wild photos on a 640x480 canvas, 20 different ones in turn)",
        "gallery_people": enrolled,
        "ready_s": round(ready_s, 2),
        "one_client": one,
        "four_clients": four,
        "memory_after_enrolment": idle,
        "memory_after_runs": memory,
        "target_p50_ms_one_client": 60,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "note": args.note,
    }
    write_result(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
