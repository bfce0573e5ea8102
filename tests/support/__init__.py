"""What several test modules share besides fixtures: paths, the admin token, labelled pairs of the bundled bank,
and (``support.tiny_version``) one tiny real fine-tune made once per test process."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dupq.bank import bank_groups, load_default_bank

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SMALL_BANK = FIXTURES / "small_bank.jsonl"
ADMIN_TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: Where the browser tests put their screenshots and reports.
ARTIFACTS = Path(os.environ.get("DUPQ_TEST_ARTIFACTS") or ROOT / "build" / "browser")
#: The Chromium the browser tests drive (Debian's; Playwright's own download needs the internet).
CHROMIUM = os.environ.get("DUPQ_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

def bank_pairs(seed: int = 0) -> list[dict]:
    """Labelled pairs from the bundled bank: group-mates are duplicates, same-topic others are not."""
    rng = random.Random(seed)
    texts = {r["id"]: r["text"] for r in load_default_bank()}
    topic = {r["id"]: r["meta"]["topic"] for r in load_default_bank()}
    groups = bank_groups()
    pairs = [
        {"question1": texts[a], "question2": texts[b], "label": 1}
        for ids in groups.values()
        for a, b in itertools.combinations(ids, 2)
    ]
    grouped = [i for ids in groups.values() for i in ids]
    group_of = {i: g for g, ids in groups.items() for i in ids}
    for a in grouped:
        b = rng.choice([x for x in grouped if topic[x] == topic[a] and group_of[x] != group_of[a]])
        pairs.append({"question1": texts[a], "question2": texts[b], "label": 0})
    return pairs


@contextlib.contextmanager
def serving(home: Path, env: Mapping[str, str], port: int, *, start_s: float = 120) -> Iterator[str]:
    """``dupq serve --production`` on ``home`` and ``port`` in its own process (output in ``home``'s sibling
    ``server.log``), once ``/healthz`` answers; yields its base URL and stops it afterwards."""
    log_path = home.parent / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dupq.cli", "--home", str(home), "serve", "--production", "--port", str(port)],
            env=dict(env), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(base + "/healthz", timeout=10) as r:
                        json.loads(r.read())
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"server did not start in {start_s:g} s") from None
                    time.sleep(0.25)
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def require_chromium() -> None:
    """Skip the calling test without a Chromium to drive, or fail it where ``DUPQ_TEST_REQUIRE_BROWSER=1`` (CI)."""
    import pytest

    if not Path(CHROMIUM).exists():
        if os.environ.get("DUPQ_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"chromium not found at {CHROMIUM} (DUPQ_TEST_REQUIRE_BROWSER=1)")
        pytest.skip(f"chromium not found at {CHROMIUM}: apt-get install chromium")


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Chromium launched through Playwright (the ``ARTIFACTS`` folder made for its screenshots), closed after."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            browser.close()
