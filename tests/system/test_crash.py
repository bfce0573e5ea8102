"""kill -9 at random moments (scripts/crash.py, fewer trials): during ``dupq import``, during API adds under
concurrent searches, and around a retrain's promotion. Reopening the home must find every acknowledged write
stored and indexed, the store and the index in agreement, and a complete version served."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from support import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

import crash  # noqa: E402


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("crash")
    return crash.prepare(base), base


@pytest.mark.slow
def test_kill_during_import_loses_nothing(prepared) -> None:
    home, base = prepared
    r = crash.trial_import(home, base, 0, random.Random(3), 1500)
    assert r["problems"] == [], r
    assert r["after_resume"] == 1500, r


@pytest.mark.slow
def test_kill_during_api_adds_under_searches_loses_no_acknowledged_add(prepared) -> None:
    home, base = prepared
    r = crash.trial_adds(home, base, 1, random.Random(4))
    assert r["problems"] == [], r
    assert r["acknowledged"] > 0 and r["searches"] > 0, r  # the kill came while writes and searches ran


@pytest.mark.slow
def test_kill_around_a_promotion_serves_a_complete_version(prepared) -> None:
    home, base = prepared
    r = crash.trial_promote(home, base, 2, random.Random(5))
    assert r["problems"] == [], r
    assert r["jobs_after"] and r["jobs_after"][0] in ("promoted", "failed", "rejected"), r
    if "ready" in r["seen"] or "promoted" in r["seen"]:
        assert r["served_after"] != "base", r  # a ready job is promoted on the next open
