"""The training and evaluation commands: ``dupq train``, ``dupq eval``, ``dupq models list|promote|rollback``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import FIXTURES

from dupq.cli import main

PAIRS = str(FIXTURES / "train" / "pairs.tsv")
DEV = str(FIXTURES / "train" / "dev.tsv")


@pytest.fixture
def runner(runner):
    # The fp32 torch encoder: these tests are about training and versions, not the serving runtime.
    runner.env["DUPQ_BACKEND"] = "torch"
    return runner


def current_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("*"))


def test_train_promote_list_rollback(runner) -> None:
    r = runner.invoke(main, ["train", PAIRS, "--dev", DEV, "--max-steps", "3", "--batch-size", "8",
                             "--negatives-per-positive", "0", "--cross-encoder", "--promote", "--no-progress"])
    assert r.exit_code == 0, r.output
    version = re.search(r"trained (v[\d-]+) from base", r.output).group(1)
    assert "dev: AP " in r.output and "served threshold" in r.output and f"promoted {version}" in r.output
    assert "cross-encoder dev: AP " in r.output and "re-ranking score (cross-encoder+twin, fit on dev): AP " in r.output

    listing = runner.invoke(main, ["models", "list"])
    assert listing.exit_code == 0, listing.output
    line = current_line(listing.output)
    assert version in line and re.search(r"\d\.\d{4} +\d\.\d{4} +\d\.\d{4}", line)  # threshold, AP, nDCG@10
    s = runner.invoke(main, ["search", "How do I reverse a list in Python?", "--json"])
    assert json.loads(s.output)["model"] == version  # stored questions were re-embedded before the switch

    back = runner.invoke(main, ["models", "rollback", "--no-progress"])
    assert back.exit_code == 0 and "current model: base" in back.output
    assert current_line(runner.invoke(main, ["models", "list"]).output).split()[1] == "base"
    again = runner.invoke(main, ["models", "promote", version, "--no-progress"])
    assert again.exit_code == 0 and f"current model: {version}" in again.output
    listed = json.loads(runner.invoke(main, ["models", "list", "--json"]).output)
    assert [v["version"] for v in listed if v["current"]] == [version]


def test_eval_pairs_with_baselines(runner) -> None:
    r = runner.invoke(main, ["eval", DEV, "--baselines", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert set(out["results"]) == {"base", "BM25"}  # the current version is the untuned base model
    base = out["results"]["base"]
    assert {"ap", "best_f1", "best_f1_threshold", "best_accuracy", "best_accuracy_threshold", "precision",
            "recall"} <= set(base["pairs"])
    assert base["pairs"]["threshold"] == pytest.approx(0.7513)  # precision/recall at the served threshold
    assert {"mrr@10", "ndcg@10", "recall@1", "recall@10"} <= set(base["retrieval"])
    table = runner.invoke(main, ["eval", DEV])
    assert table.exit_code == 0 and "AP" in table.output and "nDCG@10" in table.output


def test_eval_beir_folder(runner) -> None:
    r = runner.invoke(main, ["eval", "--beir", str(FIXTURES / "beir"), "--baselines", "--json"])
    assert r.exit_code == 0, r.output
    results = json.loads(r.output)["results"]
    assert set(results) == {"base", "BM25"} and all(set(v) == {"retrieval"} for v in results.values())
    assert results["base"]["retrieval"]["queries"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", str(FIXTURES / "train" / "bad_label.tsv")], "bad_label.tsv:3: label must be 0 or 1"),
        (["eval", str(FIXTURES / "train" / "bad_label.tsv")], "bad_label.tsv:3: label must be 0 or 1"),
        (["train", PAIRS, "--dev", str(FIXTURES / "questions.tsv")], "missing column"),
    ],
)
def test_malformed_files_are_one_line_errors(runner, args: list[str], message: str) -> None:
    r = runner.invoke(main, args)
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output


def test_bad_options_and_missing_beir_files(runner, tmp_path: Path) -> None:
    r = runner.invoke(main, ["train", PAIRS, "--margin", "-1"])
    assert r.exit_code == 2 and "margin must be > 0" in r.output
    r = runner.invoke(main, ["train", PAIRS, "--loss", "hinge"])
    assert r.exit_code == 2 and "Invalid value for '--loss'" in r.output and "online-contrastive" in r.output
    r = runner.invoke(main, ["eval"])
    assert r.exit_code == 2 and "PAIRS file or --beir" in r.output
    (tmp_path / "corpus.tsv").write_text("d1\tHow do I learn Python?\n")
    (tmp_path / "queries.tsv").write_text("q1\tLearning Python?\n")
    r = runner.invoke(main, ["eval", "--beir", str(tmp_path)])
    assert r.exit_code == 1 and "qrels.tsv: missing file" in r.output


def test_dev_without_duplicates_is_a_one_line_error(runner, tmp_path: Path) -> None:
    dev = tmp_path / "dev.tsv"
    dev.write_text("question1\tquestion2\tis_duplicate\n"
                   "How do I learn Python?\tWhat is the capital of France?\t0\n"
                   "How do I boil an egg?\tWhy is the sky blue?\t0\n")
    r = runner.invoke(main, ["train", PAIRS, "--dev", str(dev), "--max-steps", "1", "--no-progress"])
    assert r.exit_code == 1, r.output
    assert "the dev set has no duplicate pair" in r.output and "Traceback" not in r.output
    listing = runner.invoke(main, ["models", "list"])
    assert listing.exit_code == 0 and listing.output.count("\nv") == 0, listing.output  # no version was made
