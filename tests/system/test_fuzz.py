"""schemathesis against a real server: no request the contract accepts is refused, none crashes it, every answer
matches the document (``--checks all``: server errors, response schemas and headers, schema-valid requests
rejected, schema-invalid ones accepted, 405 + Allow, auth, use after delete ...).

The server is ``dupq serve --production`` on a fresh home with the bundled bank (370 questions) and an admin
token, which the write endpoints get. ``POST /api/v1/train`` is excluded: each schema-valid body starts a real
retrain worker (minutes of CPU on the 2-core machine, and one job at a time turns the rest into 409s); its
options are the same declared contract (``TrainRequest``) and tests/test_contract.py and tests/test_retrain.py
exercise it. Rate limits are off (one fuzzing client is not abuse; tests/test_api.py covers the 429s).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

from live import LiveServer  # noqa: E402

TOKEN = "fuzz-admin-token"
#: Cases per operation; with the coverage and stateful phases this generates well over 1,000 cases.
MAX_EXAMPLES = 50


def _schemathesis() -> str:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if exe is None:
        pytest.fail("schemathesis is not installed (pip install -e '.[dev]')")
    return exe


@pytest.mark.slow
def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    report = tmp_path / "schemathesis.json"
    with LiveServer(tmp_path / "home", admin_token=TOKEN) as srv:
        run = subprocess.run(
            [_schemathesis(), "run", f"{srv.base}/api/v1/openapi.json", "--checks", "all",
             "-H", f"Authorization: Bearer {TOKEN}", "--exclude-operation-id", "train",
             "-n", str(MAX_EXAMPLES), "--seed", "12", "-w", "1", "--no-color",
             "--report", "json", "--report-json-path", str(report)],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )
        log = srv.log_tail(20_000)
    out = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, out
    result = json.loads(report.read_text())
    assert result["failures"] == [] and result["errors"] == [], out
    cases = result["test_cases"]
    assert cases["with_failures"] == 0 and cases["errored"] == 0, cases
    assert cases["generated"] >= 1000, cases
    assert "Traceback" not in log, log[-4000:]
