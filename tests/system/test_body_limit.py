"""A 100 MB request body to a real server: refused with the JSON 413, the server's memory barely moves."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from support import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

from live import LiveServer  # noqa: E402

BODY_MB = 100


@pytest.mark.slow
def test_100_mb_body_is_a_413_and_rss_grows_under_20_mb(tmp_path: Path) -> None:
    with LiveServer(tmp_path / "home") as srv:
        for _ in range(3):  # warm: the first searches allocate the encoder's buffers
            srv.call("POST", "/api/v1/search", {"question": "How do I reverse a list in Python?"})
        before = srv.rss_mb()
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], srv.rss_mb())
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        chunk = b"a" * (1 << 20)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as s:
            s.sendall(b"POST /api/v1/questions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      + f"Content-Length: {BODY_MB << 20}\r\nConnection: close\r\n\r\n".encode())
            try:
                s.sendall(b'{"questions": [{"text": "')
                for _ in range(BODY_MB):
                    s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer and close before the whole body is sent
            response = b""
            while True:
                try:
                    data = s.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                response += data
        time.sleep(0.5)
        done.set()
        sampler.join()
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413"), response[:500]
        assert json.loads(body)["error"]["code"] == "request_entity_too_large"
        growth = peak[0] - before
        print(f"\n100 MB body: 413; server RSS {before:.0f} MB before, peak {peak[0]:.0f} MB (+{growth:.1f} MB)")
        assert growth < 20, growth
        assert srv.call("GET", "/healthz")[0] == 200
