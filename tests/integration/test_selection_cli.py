"""``dupq train`` prints how the recipe was chosen, ``--threshold-policy`` sets the operating point, and
``dupq models list`` shows it (issue 24). A real fine-tune of the packaged model on the tiny fixtures."""

from __future__ import annotations

import json
import re

import pytest
from support import FIXTURES

from dupq.cli import main

PAIRS = str(FIXTURES / "train" / "pairs.tsv")
DEV = str(FIXTURES / "train" / "dev.tsv")


@pytest.fixture
def runner(runner):
    runner.env["DUPQ_BACKEND"] = "torch"
    return runner


def test_train_prints_the_selection_and_models_list_shows_the_policy(runner, home) -> None:
    r = runner.invoke(main, ["train", PAIRS, "--dev", DEV, "--max-steps", "2", "--batch-size", "8",
                             "--threshold-policy", "recall:0.9", "--no-progress"])
    assert r.exit_code == 0, r.output
    version = re.search(r"trained (v[\d-]+) from base", r.output).group(1)
    assert re.search(r"selection on \d+ dev pairs:", r.output)
    assert re.search(r"WiSE-FT weight (0|0\.25|0\.5): ", r.output) and "starting model AP" in r.output
    assert "re-ranker: not trained: " in r.output and "cross-encoder: not trained" in r.output
    assert "not refit: the dev pairs were given (--dev)" in r.output
    assert re.search(r"threshold -?\d\.\d{4} for recall:0\.9: dev precision \d\.\d{3}, recall (0\.9\d\d|1\.000)",
                     r.output), r.output
    meta = json.loads((home / "models" / version / "dupq.json").read_text())
    assert meta["threshold_policy"] == "recall:0.9" and meta["selection"]["threshold"]["recall"] >= 0.9

    listing = runner.invoke(main, ["models", "list"])
    assert listing.exit_code == 0, listing.output
    line = next(ln for ln in listing.output.splitlines() if version in ln)
    assert "recall:0.9" in line
    as_json = json.loads(runner.invoke(main, ["models", "list", "--json"]).output)
    assert {v["version"]: v["threshold_policy"] for v in as_json}[version] == "recall:0.9"


def test_a_bad_threshold_policy_is_a_usage_error(runner) -> None:
    r = runner.invoke(main, ["train", PAIRS, "--threshold-policy", "precision:2"])
    assert r.exit_code == 2 and "threshold_policy must be" in r.output
