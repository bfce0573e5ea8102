"""Serving from a cached OpenVINO export never imports torch, transformers or sentence-transformers.

Each check runs in a fresh interpreter (``sys.modules`` of the test process has torch loaded long ago): the
first subprocess warms the home (export, tokenizer, index), the second serves from it and lists the heavy
modules it ended up with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support import ROOT

HEAVY = ("torch", "transformers", "sentence_transformers")

SERVE = r"""
import json, sys
from pathlib import Path
from click.testing import CliRunner
from dupq.cli import main
from web import create_app

home, extra = sys.argv[1], Path(sys.argv[2])
app = create_app({"TESTING": True, "home": home, "seed_bank": None, "admin_token": "t", "secret_key": "s"})
client = app.test_client()
r = client.post("/api/v1/search", json={"question": "How do I boil an egg?", "k": 3})
assert r.status_code == 200 and r.json["results"], r.json
svc = app.extensions["dupq"]
report = svc.import_file(extra, progress=False)
assert report.added == 3, report
r2 = client.post("/api/v1/search", json={"question": "How long do I boil an egg?", "k": 1})
assert r2.status_code == 200
svc.close()
out = CliRunner().invoke(main, ["--home", home, "search", "best way to boil eggs", "-k", "2"])
assert out.exit_code == 0 and "boil" in out.output.lower(), out.output
out = CliRunner().invoke(main, ["--home", home, "import", str(extra), "--no-progress"])
assert out.exit_code == 0, out.output
print(json.dumps(sorted(m for m in HEAVY if m in sys.modules)))
""".replace("HEAVY", repr(HEAVY))


#: The service on home argv[1] with bank argv[2], configured from the environment as every entry point is
#: (the shared export cache is DUPQ_EXPORT_CACHE).
OPEN = (
    "import os, sys, json\nfrom dupq.config import Settings\nfrom dupq.service import DupQ\n"
    "svc = DupQ(Settings.load(environ=os.environ, home=sys.argv[1], seed_bank=sys.argv[2]))\n"
)


def _run(code: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("backend", ["openvino"])
def test_search_serve_and_import_never_import_torch(tmp_path, backend) -> None:
    home = tmp_path / "home"
    bank = tmp_path / "bank.txt"
    bank.write_text("How do I boil an egg?\nWhat is a Roth IRA?\nHow do I reverse a list in Python?\n")
    extra = tmp_path / "more.txt"
    extra.write_text("How long should eggs boil?\nIs a Roth IRA taxed?\nHow to sort a dict by value?\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DUPQ_BACKEND": backend, "PYTHONPATH": str(ROOT),
           "DUPQ_EXPORT_CACHE": str(tmp_path / "shared")}  # a fresh export: its tokenizer saved with it
    warm = _run(OPEN + "svc.close()", str(home), str(bank), env=env)  # exports, into the shared cache too
    assert warm.returncode == 0, warm.stderr[-3000:]
    served = _run(SERVE, str(home), str(extra), env=env)
    assert served.returncode == 0, served.stderr[-3000:]
    assert json.loads(served.stdout.strip().splitlines()[-1]) == []

    # A fresh home on the same machine (a new user's first start, or a PostgreSQL node's empty cache): its
    # base version links the shared export, so it too starts, embeds and searches without torch.
    fresh = _run(FRESH, str(tmp_path / "fresh-home"), str(bank), env=env)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert json.loads(fresh.stdout.strip().splitlines()[-1]) == []


FRESH = (
    OPEN + "hits = svc.search('boiling eggs', 1); svc.close()\n"
    "assert hits['results'], hits\n"
    f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
)


def test_the_guard_can_fail(tmp_path) -> None:
    """The torch backend on the same path does import torch: the check above would see it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    code = ("import sys, json; from dupq.service import DupQ\n"
            "svc = DupQ.open(sys.argv[1], seed_bank=sys.argv[2], backend='torch'); svc.search('eggs', 1); svc.close()\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    bank = tmp_path / "bank.txt"
    bank.write_text("How do I boil an egg?\n")
    out = _run(code, str(tmp_path / "home"), str(bank), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "torch" in json.loads(out.stdout.strip().splitlines()[-1])


RERANK = r"""
import json, sys
from dupq.service import DupQ
svc = DupQ.open(sys.argv[1], seed_bank=None)
res = svc.search("How do I boil an egg?", k=2, rerank=True)
assert res["scorer"] == "cross-encoder+twin" and res["results"], res
svc.close()
print(json.dumps(sorted(m for m in HEAVY if m in sys.modules)))
""".replace("HEAVY", repr(HEAVY))


def test_a_trained_version_reranks_without_torch(tmp_path) -> None:
    """A trained version (twin + cross-encoder) serves and re-ranks from its cached exports."""
    from support import tiny_version

    from dupq.models.cross import has_cross
    from dupq.service import DupQ

    home = tmp_path / "home"
    bank = tmp_path / "bank.txt"
    bank.write_text("How do I boil an egg?\nWhat is a Roth IRA?\nHow long should eggs boil?\n")
    with DupQ.open(home, seed_bank=str(bank)) as svc:  # this process (torch loaded) exports both models
        version = tiny_version.install(svc)
        svc.promote(version)
        assert has_cross(svc.registry.path(version))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out = _run(RERANK, str(home), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
