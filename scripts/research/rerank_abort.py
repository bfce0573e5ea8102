"""How often a re-ranking process aborts at exit: the CI failure of test_no_torch's re-rank test, repeated.

Builds one home with the bundled bank's three questions and a tiny trained version (twin + cross-encoder,
``tests/tiny_version.py``), then runs the test's RERANK program (a torch-free process that re-ranks three
pairs, two batches on the throughput model) ``N`` times, each in its own process, and prints every non-zero
exit with the end of its output (``PYTHONFAULTHANDLER=1`` names the aborting thread). Measures and prints
(no test). To load the machine as CI does, run two busy loops beside it:

    python3 -c "while True: pass" & python3 -c "while True: pass" &
    python scripts/research/rerank_abort.py 100
    kill %1 %2

Before ``_Compiled.run_bulk`` (OpenVINO's ``AsyncInferQueue`` with a Python callback) 2 of 40 runs aborted
this way ("terminate called without an active exception", rc -6); docs/benchmarks.md has the counts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=int, nargs="?", default=40)
    args = ap.parse_args()

    import tiny_version
    from test_no_torch import RERANK

    from dupq.service import DupQ

    tmp = Path(tempfile.mkdtemp(prefix="rerank-abort-"))
    home, bank = tmp / "home", tmp / "bank.txt"
    bank.write_text("How do I boil an egg?\nWhat is a Roth IRA?\nHow long should eggs boil?\n")
    with DupQ.open(home, seed_bank=str(bank)) as svc:
        svc.promote(tiny_version.install(svc))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}
    fails = 0
    for i in range(args.runs):
        out = subprocess.run([sys.executable, "-c", RERANK, str(home)], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            fails += 1
            print(f"run {i}: rc {out.returncode}; stdout {out.stdout.strip()[-200:]!r}\n{out.stderr[-800:]}",
                  flush=True)
    print(f"aborted: {fails} of {args.runs} (home {home})")


if __name__ == "__main__":
    main()
