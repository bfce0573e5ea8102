"""Twin + cross-encoder: pair AP of the twin, of the CE, and of a logistic-regression mix of both fit on the
held-out slice of labelled QQP training pairs (never dev); and re-ranking of the twin's top 20 on dev retrieval."""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import common  # noqa: F401
import numpy as np
from common import OUT, base_path, load_all, load_avg, st_encode

from dupq.evaluation import pair_metrics, rank_dense, retrieval_metrics, retrieval_task_from_pairs
from dupq.training import average_weights

ap = argparse.ArgumentParser()
ap.add_argument("--run", required=True)
ap.add_argument("--twin", required=True)
ap.add_argument("--wise", type=float, default=0.0)
ap.add_argument("--ce", required=True)
ap.add_argument("--rerank-queries", type=int, default=1500, help="dev queries re-ranked (0: none, -1: all)")
ap.add_argument("--depth", type=int, default=20)
args = ap.parse_args()
log = {"run": args.run, "args": vars(args), "load_start": load_avg()}
t_all = time.perf_counter()
dev, lab, pos, au_tr, au_ho, lab_fit, counts = load_all()
from sentence_transformers import SentenceTransformer
from sentence_transformers.cross_encoder import CrossEncoder
from sklearn.linear_model import LogisticRegression

twin = SentenceTransformer(args.twin, device="cpu")
if args.wise:
    average_weights(twin, SentenceTransformer(base_path(), device="cpu").state_dict(), args.wise)
enc = st_encode(twin)


def cos(pairs):
    qs = sorted({q for p in pairs for q in (p.question1, p.question2)})
    e = enc(qs)
    i = {q: k for k, q in enumerate(qs)}
    return np.einsum("ij,ij->i", e[[i[p.question1] for p in pairs]], e[[i[p.question2] for p in pairs]])


yd = np.array([p.label for p in dev])
yf = np.array([p.label for p in lab_fit])
td, tf = cos(dev), cos(lab_fit)
cd, cf = np.load(Path(args.ce) / "scores_dev.npy"), np.load(Path(args.ce) / "scores_fit.npy")
logit = lambda s: np.log(np.clip(s, 1e-6, 1 - 1e-6) / np.clip(1 - s, 1e-6, 1))  # noqa: E731  (CE predict gives sigmoid)
X = lambda t, c: np.stack([t, logit(c)], 1)  # noqa: E731
lr = LogisticRegression(C=1.0).fit(X(tf, cf), yf)
md = lr.decision_function(X(td, cd))
res = {
    "twin_dev_ap": pair_metrics(td, yd)["ap"],
    "ce_dev_ap": pair_metrics(cd, yd)["ap"],
    "mix_dev_ap": pair_metrics(md, yd)["ap"],
    "mix_dev_f1": pair_metrics(md, yd)["best_f1"],
    "twin_fit_ap": pair_metrics(tf, yf)["ap"],
    "ce_fit_ap": pair_metrics(cf, yf)["ap"],
    "mix_coef": lr.coef_.tolist(),
    "mix_intercept": lr.intercept_.tolist(),
}
print(res, flush=True)

if args.rerank_queries:
    t0 = time.perf_counter()
    ce = CrossEncoder(args.ce, device="cpu")
    task = retrieval_task_from_pairs(dev)
    ranked = rank_dense(task, enc, top_k=args.depth)
    qids = list(task.queries)
    if args.rerank_queries > 0:
        qids = random.Random(0).sample(qids, min(args.rerank_queries, len(qids)))
    emb_cache = {}
    texts = list(task.corpus.values())
    e = enc(texts)
    row = {t: k for k, t in enumerate(texts)}
    flat = [(task.queries[q], task.corpus[d]) for q in qids for d in ranked[q]]
    cs = np.asarray(ce.predict(flat, batch_size=128, show_progress_bar=False), dtype=np.float64)
    ts = np.array([float(e[row[a]] @ e[row[b]]) for a, b in flat])
    ms = lr.decision_function(X(ts, cs))
    sub = {q: task.qrels[q] for q in qids}
    out, k = {"twin": {}, "ce": {}, "mix": {}}, 0
    for q in qids:
        docs = ranked[q]
        n = len(docs)
        out["twin"][q] = docs
        out["ce"][q] = [docs[j] for j in np.argsort(-cs[k : k + n], kind="stable")]
        out["mix"][q] = [docs[j] for j in np.argsort(-ms[k : k + n], kind="stable")]
        k += n
    for name, r in out.items():
        m = retrieval_metrics(r, sub, (1, 10))
        res[f"rerank_{name}_ndcg10"] = m["ndcg@10"]
        res[f"rerank_{name}_mrr10"] = m["mrr@10"]
    res["rerank_queries"] = len(qids)
    res["rerank_pairs"] = len(flat)
    res["rerank_s"] = round(time.perf_counter() - t0, 1)
log["result"] = res
log["wall_s"] = round(time.perf_counter() - t_all, 1)
log["load_end"] = load_avg()
print(json.dumps(log, indent=1), flush=True)
(OUT / "logs" / f"{args.run}.json").write_text(json.dumps(log, indent=1))
