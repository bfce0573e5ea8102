"""Calibrate the duplicate threshold of a model version on a labelled pair file (a measurement, not a test).

Usage:
    python scripts/calibrate_threshold.py [--pairs ../shared/data/dev/qqp_pairs_dev.tsv] [--model DIR]

Prints AP, the max-F1 threshold (what dupq serves) and the max-accuracy threshold. Without ``--model`` it
calibrates the packaged untuned base model; the result is ``BASE_THRESHOLD`` in ``dupq/config.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dupq.data import read_pairs  # noqa: E402
from dupq.evaluation import pair_metrics  # noqa: E402
from dupq.models.encoder import SiameseEncoder  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default=str(ROOT.parent / "shared/data/dev/qqp_pairs_dev.tsv"))
    ap.add_argument("--model", default=None, help="a model version folder (default: the packaged base model)")
    args = ap.parse_args()
    if not Path(args.pairs).exists():
        print(f"pair file not found: {args.pairs}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    enc = SiameseEncoder.load(args.model) if args.model else SiameseEncoder.from_pretrained()
    pairs = read_pairs(args.pairs).pairs
    scores = enc.score_pairs([p.question1 for p in pairs], [p.question2 for p in pairs])
    labels = [p.label for p in pairs]
    m = pair_metrics(scores, labels, higher_is_better=enc.higher_is_better)
    keys = ["n", "positives", "ap", "best_f1", "best_f1_threshold", "best_accuracy", "best_accuracy_threshold"]
    print(json.dumps({k: m[k] for k in keys}, indent=2))
    print(f"served threshold (max F1): {m['best_f1_threshold']:.4f}  ({time.perf_counter() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
