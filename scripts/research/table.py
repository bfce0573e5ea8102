"""Print the results table from $DUPQ_TEST_OUT/logs/*.json."""

import glob
import json

from common import OUT

for f in sorted(glob.glob(str(OUT / "logs" / "*.json"))):
    d = json.load(open(f))
    r = d["run"]
    if "eval" in d:
        for w, e in d["eval"].items():
            print(
                f"| {r} wise{w} | {d['steps']} steps | {d['train_s']:.0f}s train / {d['wall_s']:.0f}s wall | {d['pairs_per_s']} pairs/s | "
                f"AP {e['dev_ap']:.4f} | nDCG {e['dev_ndcg10']:.4f} | AU AP {e['au_ap']:.4f} | AU nDCG {e['au_ndcg10']:.4f} |"
            )
    elif "dev_ap" in d:
        print(
            f"| {r} CE | {d['steps']} steps | {d['train_s']:.0f}s train / {d['wall_s']:.0f}s wall | {d['pairs_per_s']} pairs/s | CE dev AP {d['dev_ap']:.4f} | fit AP {d['fit_ap']:.4f} |"
        )
    elif "result" in d:
        print(
            f"| {r} mix | "
            + " | ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in d["result"].items())
            + " |"
        )
