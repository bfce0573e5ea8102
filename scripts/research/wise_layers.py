"""WiSE-FT by layer: other ways to interpolate a fine-tuned twin with its starting weights, evaluated on dev and on
the held-out AskUbuntu clusters (research; evaluation only, no training).

The version ``train()`` saves is already averaged (``base_weight`` b): ``saved = (1 - b) * tuned + b * start``,
so the fine-tuned weights are recovered exactly as ``tuned = (saved - b * start) / (1 - b)`` and any other
interpolation can be scored without training again. A scheme gives each tensor its own base weight:

- ``uniform:A``: every tensor A (what ``TrainConfig.base_weight`` does);
- ``ramp:LO:HI``: transformer layer i of n gets ``LO + (HI - LO) * i / (n - 1)`` (layer 0 LO, the top layer HI);
  embeddings LO, the pooling has no weights;
- ``emb:E:A``: embeddings E, every layer A.

Usage (on a version trained with the AskUbuntu clusters held out, e.g. by scripts/bench_quality.py):
    python scripts/research/wise_layers.py /tmp/bq8/recipe-* --saved-base-weight 0.5 \
        uniform:0 uniform:0.35 uniform:0.5 ramp:0.7:0.2 ramp:0.2:0.7 emb:1:0.35
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

import common  # noqa: F401  (sets env first)
from common import DATA, OUT, load_avg

from dupq.data import read_pairs, split_by_cluster
from dupq.evaluation import evaluate_encoder


def base_weight_of(name: str, scheme: str, layers: int) -> float:
    kind, *vals = scheme.split(":")
    v = [float(x) for x in vals]
    m = re.search(r"encoder\.layer\.(\d+)\.", name)
    if kind == "uniform":
        return v[0]
    if kind == "ramp":
        lo, hi = v
        if m is None:
            return lo
        return lo + (hi - lo) * int(m.group(1)) / max(1, layers - 1)
    if kind == "emb":
        emb, rest = v
        return emb if m is None else rest
    raise SystemExit(f"unknown scheme {scheme!r}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("version")
    ap.add_argument("schemes", nargs="+")
    ap.add_argument("--saved-base-weight", type=float, required=True, help="the base_weight the version was saved with")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from dupq.model import load_sentence_transformer, packaged_model_path

    dev = read_pairs(f"{DATA}/dev/qqp_pairs_dev.tsv").pairs
    au = split_by_cluster(read_pairs(f"{DATA}/train/askubuntu_pairs_train.tsv").pairs, dev_fraction=0.2, seed=0).dev
    start = load_sentence_transformer(packaged_model_path(), cached=False).state_dict()
    model = load_sentence_transformer(args.version, cached=False)
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    b = args.saved_base_weight
    tuned = {k: (v - b * start[k]) / (1 - b) if v.is_floating_point() else v for k, v in saved.items()}
    layers = 1 + max(int(m.group(1)) for k in tuned if (m := re.search(r"encoder\.layer\.(\d+)\.", k)))
    results = []
    for scheme in args.schemes:
        t0 = time.perf_counter()
        merged = {
            k: (1 - (a := base_weight_of(k, scheme, layers))) * v + a * start[k] if v.is_floating_point() else v
            for k, v in tuned.items()
        }
        model.load_state_dict(merged)

        def encode(texts):
            return model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)

        d = evaluate_encoder(encode, dev, energy="cosine")
        a = evaluate_encoder(encode, au, energy="cosine")
        r = {"scheme": scheme, "dev_ap": d["pairs"]["ap"], "dev_ndcg10": d["retrieval"]["ndcg@10"],
             "au_ap": a["pairs"]["ap"], "au_ndcg10": a["retrieval"]["ndcg@10"],
             "seconds": round(time.perf_counter() - t0, 1), "load": load_avg()}
        results.append(r)
        print(json.dumps(r), flush=True)
    print("| scheme | dev AP | dev nDCG@10 | AU AP | AU nDCG@10 |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['scheme']} | {r['dev_ap']:.4f} | {r['dev_ndcg10']:.4f} | {r['au_ap']:.4f} | {r['au_ndcg10']:.4f} |")
    (OUT / "logs" / "wise_layers.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
