"""Cross-encoder teacher from the MiniLM weights (or another init): BCE on labelled QQP train pairs, optionally
plus positive-only pairs with mined negatives (twin-retrieved, optionally filtered by a teacher CE).
Reports its dev AP, saves scores on dev and on the held-out fit slice for the twin+CE combination."""

from __future__ import annotations

import argparse
import json
import random
import time

import common  # noqa: F401
import numpy as np
from common import OUT, base_path, load_all, load_avg, sample

from dupq.data import Pair
from dupq.evaluation import pair_metrics

ap = argparse.ArgumentParser()
ap.add_argument("--run", required=True)
ap.add_argument("--init", default="base")
ap.add_argument("--epochs", type=float, default=1.0)
ap.add_argument("--lr", type=float, default=5e-5)
ap.add_argument("--bs", type=int, default=32)
ap.add_argument("--max-length", type=int, default=128)
ap.add_argument("--posonly", type=int, default=0, help="positive-only pairs added, each with one mined negative")
ap.add_argument("--miner", default="base", help="twin used to mine negatives for the positive-only pairs")
ap.add_argument("--filter-ce", default=None, help="CE folder: keep a mined negative only if it scores < --filter-thr")
ap.add_argument("--filter-thr", type=float, default=0.3)
ap.add_argument("--labelled", type=int, default=-1, help="labelled QQP train pairs used (sampled; -1 all, 0 none)")
ap.add_argument("--threads", type=int, default=0)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--both-orders", action="store_true", help="train on (q1, q2) and (q2, q1); score as their mean")
ap.add_argument("--eval-each-epoch", action="store_true", help="print dev AP (both orders) at every epoch end")
args = ap.parse_args()

import torch

if args.threads:
    torch.set_num_threads(args.threads)
out = OUT / "models" / args.run
log = {"run": args.run, "args": vars(args), "load_start": load_avg()}
print(log, flush=True)
t_all = time.perf_counter()
dev, lab, pos, au_tr, au_ho, lab_fit, counts = load_all()
train_pairs = sample(lab, args.labelled, args.seed + 1) if args.labelled else []
from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss


def ce_scores(ce, pairs, sym=False):
    s = ce.predict([(p.question1, p.question2) for p in pairs], batch_size=128, show_progress_bar=False)
    if sym:
        s = (s + ce.predict([(p.question2, p.question1) for p in pairs], batch_size=128, show_progress_bar=False)) / 2
    return np.asarray(s, dtype=np.float64)


mine_s = 0.0
if args.posonly:
    t0 = time.perf_counter()
    from sentence_transformers import SentenceTransformer

    chosen = sample(pos, args.posonly, args.seed)
    twin = SentenceTransformer(base_path() if args.miner == "base" else args.miner, device="cpu")
    qs = sorted({q for p in chosen for q in (p.question1, p.question2)})
    idx = {q: i for i, q in enumerate(qs)}
    known = {frozenset((p.question1, p.question2)) for p in pos}
    emb = twin.encode(qs, batch_size=64, normalize_embeddings=True, convert_to_tensor=True, show_progress_bar=False)
    rng = random.Random(args.seed)
    cands = []
    for start in range(0, len(chosen), 1024):
        chunk = chosen[start : start + 1024]
        sims = emb[[idx[p.question1] for p in chunk]] @ emb.T
        top = torch.topk(sims, 40, dim=1).indices.tolist()
        for p, row in zip(chunk, top, strict=False):
            opts = [
                qs[j]
                for j in row[5:40]
                if qs[j] not in (p.question1, p.question2)
                and frozenset((p.question1, qs[j])) not in known
                and frozenset((p.question2, qs[j])) not in known
            ]
            if opts:
                cands.append(Pair(p.question1, rng.choice(opts[:15]), 0))
    n_cand = len(cands)
    if args.filter_ce:
        f = CrossEncoder(args.filter_ce, device="cpu")
        fs = ce_scores(f, cands)
        cands = [c for c, s in zip(cands, fs, strict=False) if s < args.filter_thr]
        del f
    del twin, emb
    train_pairs += chosen + cands
    mine_s = time.perf_counter() - t0
    counts.update(ce_posonly=len(chosen), ce_mined_candidates=n_cand, ce_mined_kept=len(cands))
    print(f"mined {n_cand} candidates, kept {len(cands)} in {mine_s:.0f}s", flush=True)
if args.both_orders:
    train_pairs = train_pairs + [Pair(p.question2, p.question1, p.label) for p in train_pairs]
counts.update(ce_train_pairs=len(train_pairs), ce_train_pos=sum(p.label for p in train_pairs))
log["counts"] = counts
log["mine_s"] = round(mine_s, 1)
print(counts, flush=True)

from datasets import Dataset
from transformers import set_seed

set_seed(args.seed)
init = base_path() if args.init == "base" else args.init
ce = CrossEncoder(init, num_labels=1, max_length=args.max_length, device="cpu")
ds = Dataset.from_dict(
    {
        "sentence1": [p.question1 for p in train_pairs],
        "sentence2": [p.question2 for p in train_pairs],
        "label": [float(p.label) for p in train_pairs],
    }
)
targs = CrossEncoderTrainingArguments(
    output_dir=f"/tmp/exp-ckpt-{args.run}",
    num_train_epochs=args.epochs,
    per_device_train_batch_size=args.bs,
    learning_rate=args.lr,
    warmup_steps=0.1,
    seed=args.seed,
    data_seed=args.seed,
    bf16=True,
    use_cpu=True,
    save_strategy="no",
    logging_steps=50,
    report_to="none",
    disable_tqdm=True,
    dataloader_num_workers=0,
)
from transformers import TrainerCallback


class EpochDevAP(TrainerCallback):
    """Dev AP at each epoch end (scored in both orders), to see where more epochs stop paying."""

    def on_epoch_end(self, _args, state, control, model=None, **kw):
        was = model.training
        model.eval()
        s = ce_scores(ce, dev, sym=True)
        model.train(was)
        ap_ = pair_metrics(s, np.array([p.label for p in dev]))["ap"]
        log.setdefault("epoch_dev_ap", []).append([round(state.epoch, 2), ap_])
        print(f"epoch {state.epoch:.2f}: dev AP (both orders) {ap_:.4f}", flush=True)


trainer = CrossEncoderTrainer(
    model=ce,
    args=targs,
    train_dataset=ds,
    loss=BinaryCrossEntropyLoss(ce),
    callbacks=[EpochDevAP()] if args.eval_each_epoch else None,
)
t0 = time.perf_counter()
trainer.train()
train_s = time.perf_counter() - t0
ce = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)  # drop the bf16 autocast wrapper
steps = trainer.state.global_step
log.update(
    train_s=round(train_s, 1), steps=steps, pairs_per_s=round(steps * args.bs / train_s, 1), load_after_train=load_avg()
)
print({k: log[k] for k in ("train_s", "steps", "pairs_per_s", "load_after_train")}, flush=True)
ce.save(str(out))
t0 = time.perf_counter()
sd = ce_scores(ce, dev, sym=args.both_orders)
log["eval_dev_s"] = round(time.perf_counter() - t0, 1)
sf = ce_scores(ce, lab_fit, sym=args.both_orders)
np.save(out / "scores_dev.npy", sd)
np.save(out / "scores_fit.npy", sf)
yd = np.array([p.label for p in dev])
yf = np.array([p.label for p in lab_fit])
log["dev_ap"] = pair_metrics(sd, yd)["ap"]
log["dev_f1"] = pair_metrics(sd, yd)["best_f1"]
log["fit_ap"] = pair_metrics(sf, yf)["ap"]
log["wall_s"] = round(time.perf_counter() - t_all, 1)
log["load_end"] = load_avg()
print({k: log[k] for k in ("dev_ap", "dev_f1", "fit_ap", "eval_dev_s", "wall_s", "load_end")}, flush=True)
(OUT / "logs" / f"{args.run}.json").write_text(json.dumps(log, indent=1))
