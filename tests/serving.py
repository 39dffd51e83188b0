"""Start and stop a real `oneshot serve` process for tests (and its page's browser test)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A loopback port nobody listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def oneshot_command() -> list[str]:
    """The installed console script (what users run), else the module."""
    script = shutil.which("oneshot", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "enroll.cli"]


class Server:
    """`oneshot --home HOME serve --port PORT` in a subprocess; `url` once `/healthz` answers."""

    def __init__(self, home: Path, *extra: str, port: int | None = None, env: dict[str, str] | None = None,
                 log: Path | None = None) -> None:
        self.home = home
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or home.parent / f"serve-{self.port}.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen([*oneshot_command(), "--home", str(home), "serve", "--port", str(self.port),
                                      *extra], stdout=self._log_file, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 180.0) -> "Server":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"oneshot serve exited with {self.proc.returncode}: {self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.25)
        self.kill()
        raise AssertionError(f"oneshot serve did not answer within {timeout:.0f} s: {self.output()}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, as a service manager stops it; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        self._log_file.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()

    def output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(errors="replace")

    def __enter__(self) -> "Server":
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def call(method: str, url: str, fields: list[tuple[str, Any]] | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """One HTTP request with only the standard library (multipart for `fields`); (status, JSON body).

    A field's value is text, or (file name, bytes) for a file."""
    data = None
    send = dict(headers or {})
    if fields is not None:
        boundary = "oneshot-test-boundary-7f3a"
        parts = []
        for name, value in fields:
            if isinstance(value, tuple):
                filename, payload = value
                head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                        "Content-Type: application/octet-stream\r\n\r\n")
                parts.append(head.encode() + payload + b"\r\n")
            else:
                parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                             .encode())
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        send["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    request = urllib.request.Request(url, data=data, method=method, headers=send)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
