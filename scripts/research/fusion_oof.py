"""Out-of-fold check of a version's re-ranking fusion: fit it on one half of a pair file, score the other half.

Training fits the fusion (``dupq/fusion.py``) on the same dev pairs its figures are then reported on; this says
how much of the fused AP is in-sample. The pairs are split in two by duplicate cluster (no question on both
sides); each half is scored with a fusion fit on the other, with the product's runtimes (OpenVINO unless
``DUPQ_BACKEND=torch``).

    python scripts/research/fusion_oof.py /tmp/rec3-home/models/v... ../shared/data/dev/qqp_pairs_dev.tsv
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dupq.cross import CROSS_DIR, CrossScorer
from dupq.data import read_pairs, split_by_cluster
from dupq.evaluation import pair_metrics, pair_scores
from dupq.fusion import ScoreFusion
from dupq.model import SiameseEncoder

ap = argparse.ArgumentParser()
ap.add_argument("version", type=Path, help="a version folder (models/<version>)")
ap.add_argument("pairs", type=Path, help="labelled pairs (the dev file)")
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()

t0 = time.perf_counter()
pairs = read_pairs(args.pairs).pairs
enc = SiameseEncoder.load(args.version)
cross = CrossScorer.load(args.version / CROSS_DIR, backend=enc.backend)
split = split_by_cluster(pairs, 0.5, seed=args.seed)
halves = [list(split.train), list(split.dev)]
scored = []
for half in halves:
    twin = pair_scores(enc.encode, half, energy=enc.energy_name)
    logits = cross.logits([(p.question1, p.question2) for p in half], batch_size=64)
    scored.append((twin, logits, np.array([p.label for p in half])))

out: dict = {"version": args.version.name, "pairs": len(pairs), "dropped_crossing": split.dropped, "folds": []}
for i in (0, 1):
    fit_t, fit_c, fit_y = scored[1 - i]
    t, c, y = scored[i]
    fusion = ScoreFusion.fit(fit_t, fit_c, fit_y, higher_is_better=enc.energy.higher_is_better)
    fold = {
        "n": int(len(y)),
        "fused_ap": round(float(pair_metrics(fusion.score(t, c), y)["ap"]), 4),
        "twin_ap": round(float(pair_metrics(t, y, higher_is_better=enc.energy.higher_is_better)["ap"]), 4),
        "cross_ap": round(float(pair_metrics(c, y)["ap"]), 4),
        "weights": [round(fusion.twin_weight, 3), round(fusion.cross_weight, 3), round(fusion.bias, 3)],
    }
    out["folds"].append(fold)
    print(f"fold {i}: n={fold['n']} fused {fold['fused_ap']} twin {fold['twin_ap']} cross {fold['cross_ap']}",
          flush=True)
out["served_fusion"] = cross.fusion.to_dict() if cross.fusion is not None else None
out["seconds"] = round(time.perf_counter() - t0, 1)
print(json.dumps(out, indent=2))
