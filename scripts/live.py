"""A real ``dupq serve --production`` in a subprocess, for the fuzz, crash and load checks (tests and scripts).

Example:
    >>> with LiveServer(Path("/tmp/dq-home"), admin_token="t") as srv:   # doctest: +SKIP
    ...     status, body = srv.call("GET", "/healthz")
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base: str, method: str, path: str, body: Any = None, *, token: str | None = None,
         timeout: float = 60) -> tuple[int, Any]:
    """One HTTP request; returns (status, parsed JSON body or None)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


class LiveServer:
    """``python -m dupq.cli --home HOME serve --production`` on a free port, stopped (or killed) on exit.

    ``env`` adds ``DUPQ_*`` settings; rate limits are off unless given (a load or fuzz run is one client).
    """

    def __init__(self, home: Path, *, admin_token: str | None = None, env: dict[str, str] | None = None,
                 threads: int = 4, log: Path | None = None, start_timeout: float = 600) -> None:
        self.home = Path(home)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = admin_token
        self.log_path = log or self.home.parent / f"server-{self.port}.log"
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
                    "DUPQ_RATE_LIMIT_SEARCH": "", "DUPQ_RATE_LIMIT_WRITE": "", **(env or {})}
        if admin_token:
            self.env["DUPQ_ADMIN_TOKEN"] = admin_token
        self.threads = threads
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None

    def launch(self) -> LiveServer:
        """Start the process without waiting for it (several nodes start side by side, then :meth:`wait_up`)."""
        self.home.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dupq.cli", "--home", str(self.home), "serve", "--production",
             "--port", str(self.port), "--threads", str(self.threads)],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        return self

    def wait_up(self, timeout: float | None = None) -> float:
        """Wait until ``/healthz`` answers (at most ``timeout``, default ``start_timeout`` seconds); returns the
        seconds waited. RuntimeError, with the log's tail, if the process exits or never answers."""
        t0 = time.monotonic()
        deadline = t0 + (self.start_timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log_tail()}")
            try:
                if call(self.base, "GET", "/healthz", timeout=5)[0] == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"server did not answer in {deadline - t0:.0f} s: {self.log_tail()}")

    def start(self) -> LiveServer:
        self.launch().wait_up()
        return self

    def call(self, method: str, path: str, body: Any = None, *, auth: bool = False, timeout: float = 60):
        return call(self.base, method, path, body, token=self.token if auth else None, timeout=timeout)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._close_log()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._close_log()

    def _close_log(self) -> None:
        log = getattr(self, "_log", None)
        if log and not log.closed:
            log.close()

    def rss_mb(self) -> float:
        """The server process's resident set size, in MB (from /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
