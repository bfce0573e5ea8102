"""Uniform weight soup of fine-tuned twins (same start, different runs), optionally WiSE-averaged with the base,
evaluated like every research run (dev pair AP, dev nDCG@10, AskUbuntu held-out)."""

from __future__ import annotations

import argparse
import json

import common  # noqa: F401  (sets env first)
from common import OUT, base_path, eval_twin, load_all, load_avg

ap = argparse.ArgumentParser()
ap.add_argument("--run", required=True)
ap.add_argument("models", nargs="+", help="model folders to average uniformly")
ap.add_argument("--wise", default="0", help="base weights averaged back into the soup")
ap.add_argument("--threads", type=int, default=0)
args = ap.parse_args()

import torch
from sentence_transformers import SentenceTransformer

if args.threads:
    torch.set_num_threads(args.threads)
dev, _lab, _pos, _au_tr, au_ho, _fit, _counts = load_all()
models = [SentenceTransformer(m, device="cpu") for m in args.models]
soup = models[0]
states = [m.state_dict() for m in models]
avg = {k: (sum(s[k].float() for s in states) / len(states)).to(states[0][k].dtype) if states[0][k].is_floating_point()
       else states[0][k] for k in states[0]}
base = SentenceTransformer(base_path(), device="cpu").state_dict()
log = {"run": args.run, "models": args.models, "load_start": load_avg(), "eval": {}}
for w in [float(x) for x in args.wise.split(",")]:
    soup.load_state_dict({k: (1 - w) * v + w * base[k] if v.is_floating_point() else v for k, v in avg.items()})
    r = eval_twin(soup, dev, au_ho)
    log["eval"][str(w)] = r
    print(f"soup {args.run} base_weight={w}: {r}", flush=True)
log["load_end"] = load_avg()
(OUT / "logs" / f"{args.run}.json").write_text(json.dumps(log, indent=1))
