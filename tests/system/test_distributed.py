"""Data-parallel training (``dupq train --nproc N``, dupq/training/distributed.py): a real 2-process run (torchrun, gloo
on the CPU) against the same few steps in one process, a failing rank, and the option checks.

Every run is a real ``dupq train`` command in its own process, so torchrun, the ranks and the home are exactly what
a user gets. Both runs of the comparison train 3 steps of 4 pairs per process on tests/fixtures/train, the
cross-encoder included, with one OpenMP thread per training process (what each of 2 ranks gets on 2 cores).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support import FIXTURES, ROOT

PAIRS = str(FIXTURES / "train" / "pairs.tsv")
DEV = str(FIXTURES / "train" / "dev.tsv")
STEPS, BATCH = 3, 4


def dupq(home: Path, *args: str, **environ: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DUPQ_HOME": str(home),
        "DUPQ_SEED_BANK": str(FIXTURES / "small_bank.jsonl"),
        "DUPQ_BACKEND": "torch",  # about training and versions, not the serving runtime
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),  # the ranks run this checkout
        **environ,
    }
    return subprocess.run([sys.executable, "-m", "dupq.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


TRAIN = ["train", PAIRS, "--dev", DEV, "--max-steps", str(STEPS), "--batch-size", str(BATCH), "--fp32",
         "--cross-encoder", "--no-progress"]


def registered(home: Path) -> list[str]:
    """The versions the home's store lists."""
    with sqlite3.connect(home / "dupq.sqlite3") as db:
        return sorted(v for (v,) in db.execute("SELECT version FROM models"))


def keys(d: dict, prefix: str = "") -> set[str]:
    """Every key path of a nested dict (lists are leaves)."""
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= keys(v, prefix + k + ".")
    return out


@pytest.mark.slow
def test_two_processes_train_one_version_as_one_process_does(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    two = dupq(tmp_path / "two", *TRAIN, "--nproc", "2")
    t_two = time.perf_counter() - t0
    assert two.returncode == 0, two.stdout + two.stderr
    t0 = time.perf_counter()
    one = dupq(tmp_path / "one", *TRAIN, OMP_NUM_THREADS="1")  # --nproc 1, the default
    t_one = time.perf_counter() - t0
    assert one.returncode == 0, one.stdout + one.stderr
    print(f"\n2 processes: {t_two:.1f}s; 1 process: {t_one:.1f}s")
    assert "on 2 processes" in two.stdout and "on 2 processes" not in one.stdout

    metas = {}
    for folder_home, out in ((tmp_path / "two", two.stdout), (tmp_path / "one", one.stdout)):
        version = re.search(r"trained (v[\d-]+) from base", out).group(1)
        # Saved once and registered once: the version folder and base only, no staging or rank leftovers.
        assert sorted(p.name for p in (folder_home / "models").iterdir()) == ["base", version]
        assert registered(folder_home) == ["base", version]
        folder = folder_home / "models" / version
        metas[folder_home.name] = json.loads((folder / "dupq.json").read_text())
        # Loadable, and it encodes (unit vectors: the cosine energy).
        from dupq.models.encoder import SiameseEncoder

        vectors = SiameseEncoder.load(folder).encode(["How do I reverse a list in Python?", "Best way to boil eggs?"])
        assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
        assert (folder / "cross" / "cross.json").is_file()  # the cross-encoder, trained data-parallel too

    two_meta, one_meta = metas["two"], metas["one"]
    # Recorded the same way: every key path of dupq.json, the metrics and the cross-encoder's entry.
    assert keys(two_meta) == keys(one_meta)
    assert two_meta["training"] == one_meta["training"] and two_meta["data"] == one_meta["data"]
    assert 0.0 <= two_meta["metrics"]["dev"]["pairs"]["ap"] <= 1.0
    # --max-steps counts optimiser steps; each takes --batch-size pairs on every process.
    assert two_meta["steps"] == one_meta["steps"] == STEPS
    assert (two_meta["processes"], two_meta["global_batch_size"]) == (2, 2 * BATCH)
    assert (one_meta["processes"], one_meta["global_batch_size"]) == (1, BATCH)
    # The ranks share the batches out: the same steps cover twice as much of an epoch.
    # An epoch takes 1/N of the steps: the same steps cover twice the epoch, up to each dataset's batch
    # rounding (the fixture's labelled pairs and its labelled duplicates for the ranking loss are two datasets).
    assert two_meta["history"][-1]["epoch"] == pytest.approx(2 * one_meta["history"][-1]["epoch"], rel=0.1)
    assert [h["step"] for h in two_meta["loss_history"]] == [h["step"] for h in one_meta["loss_history"]]


@pytest.mark.slow
def test_a_failing_rank_fails_the_command_and_registers_nothing(tmp_path: Path) -> None:
    dev = tmp_path / "dev.tsv"  # no duplicate pair: rank 0 refuses it while preparing the data
    dev.write_text("question1\tquestion2\tis_duplicate\nHow do I swim?\tHow do I cook rice?\t0\n")
    r = dupq(tmp_path / "home", "train", PAIRS, "--dev", str(dev), "--max-steps", "1", "--batch-size", "4",
             "--no-cross-encoder", "--no-progress", "--nproc", "2")
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    # The root cause (rank 0's error), not rank 1's lost connection to it.
    assert last.startswith("Error: data-parallel training failed (2 processes): rank 0: TrainingDataError: "
                           "the dev set has no duplicate pair")
    assert "no version was registered" in last
    assert sorted(p.name for p in (tmp_path / "home" / "models").iterdir()) == ["base"]
    assert registered(tmp_path / "home") == ["base"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nproc", "0"], "--nproc must be at least 1, got 0"),
        (["--nproc", "-2"], "--nproc must be at least 1, got -2"),
        (["--nproc", "4096"], "--nproc 4096 is more than this node has"),
        (["--node-rank", "1"], "--node-rank must be between 0 and 0"),
        (["--nnodes", "2"], "--nnodes 2 needs --master-addr"),
        (["--master-addr", "10.0.0.1"], "--master-addr and --master-port are for several nodes"),
        (["--nnodes", "2", "--master-addr", "h", "--master-port", "70000"], "--master-port must be between"),
        (["--nnodes", "2", "--node-rank", "1", "--master-addr", "h", "--promote"], "--promote belongs on node 0"),
    ],
)
def test_bad_launch_options_are_usage_errors(runner, args: list[str], message: str) -> None:
    from dupq.cli import main

    r = runner.invoke(main, ["train", PAIRS, *args])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
