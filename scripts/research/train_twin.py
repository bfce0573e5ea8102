"""Twin encoder: OnlineContrastiveLoss on labelled pairs (QQP labelled + AskUbuntu train part) and, optionally,
a guided in-batch ranking loss (GISTEmbedLoss, guide = frozen packaged MiniLM or a given model) on the QQP
positive-only pairs, as a second dataset in multi-dataset training. Saves the model and evaluates it, plus
WiSE-FT averages with the base weights."""

from __future__ import annotations

import argparse
import json
import time

import common  # noqa: F401  (sets env first)
from common import OUT, base_path, eval_twin, load_all, load_avg, sample

ap = argparse.ArgumentParser()
ap.add_argument("--run", required=True)
ap.add_argument("--lr", type=float, default=5e-5)
ap.add_argument("--epochs", type=float, default=1.0)
ap.add_argument("--bs", type=int, default=32)
ap.add_argument("--margin", type=float, default=0.5)
ap.add_argument("--posonly", type=int, default=20000, help="positive-only pairs to use (0: none, -1: all)")
ap.add_argument("--rank-loss", default="gist", choices=["gist", "mnrl", "cmnrl", "cgist"])
ap.add_argument("--guide", default="base", help="'base' or a model folder")
ap.add_argument("--sampler", default="proportional", choices=["proportional", "round_robin"])
ap.add_argument("--au", type=int, default=5000, help="AskUbuntu train-part pairs (sampled; 0 none, -1 all)")
ap.add_argument("--wise", default="0,0.3,0.5")
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()

out = OUT / "models" / args.run
log = {"run": args.run, "args": vars(args), "load_start": load_avg()}
print(log, flush=True)
t_all = time.perf_counter()
dev, lab, pos, au_tr, au_ho, lab_fit, counts = load_all()
pos_used = sample(pos, args.posonly, args.seed) if args.posonly else []
ocl_pairs = lab + (sample(au_tr, args.au, args.seed) if args.au else [])
counts.update(ocl_pairs=len(ocl_pairs), ocl_pos=sum(p.label for p in ocl_pairs), rank_pairs=len(pos_used))
log["counts"] = counts
print(counts, flush=True)

from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer import losses
from transformers import set_seed

from dupq.training import LengthGroupedNoDuplicatesBatchSampler, average_weights

set_seed(args.seed)
model = SentenceTransformer(base_path(), device="cpu")
start = {k: v.detach().clone() for k, v in model.state_dict().items()}
ds = {
    "labelled": Dataset.from_dict(
        {
            "sentence1": [p.question1 for p in ocl_pairs],
            "sentence2": [p.question2 for p in ocl_pairs],
            "label": [float(p.label) for p in ocl_pairs],
        }
    )
}
loss = {"labelled": losses.OnlineContrastiveLoss(model, margin=args.margin)}
if pos_used:
    ds["posonly"] = Dataset.from_dict(
        {"anchor": [p.question1 for p in pos_used], "positive": [p.question2 for p in pos_used]}
    )
    if args.rank_loss in ("gist", "cgist"):
        guide = SentenceTransformer(base_path() if args.guide == "base" else args.guide, device="cpu")
        for prm in guide.parameters():
            prm.requires_grad_(False)
        loss["posonly"] = (
            losses.GISTEmbedLoss(model, guide)
            if args.rank_loss == "gist"
            else losses.CachedGISTEmbedLoss(model, guide, mini_batch_size=32)
        )
    elif args.rank_loss == "mnrl":
        loss["posonly"] = losses.MultipleNegativesRankingLoss(model)
    else:
        loss["posonly"] = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=32)
if len(ds) == 1:
    ds, loss = ds["labelled"], loss["labelled"]
targs = SentenceTransformerTrainingArguments(
    output_dir=f"/tmp/exp-ckpt-{args.run}",
    num_train_epochs=args.epochs,
    per_device_train_batch_size=args.bs,
    learning_rate=args.lr,
    warmup_steps=0.1,
    seed=args.seed,
    data_seed=args.seed,
    bf16=True,
    use_cpu=True,
    batch_sampler=LengthGroupedNoDuplicatesBatchSampler,
    multi_dataset_batch_sampler=args.sampler,
    save_strategy="no",
    logging_steps=50,
    report_to="none",
    disable_tqdm=True,
    dataloader_num_workers=0,
)
trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=ds, loss=loss)
t0 = time.perf_counter()
trainer.train()
train_s = time.perf_counter() - t0
model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
steps = trainer.state.global_step
log.update(
    train_s=round(train_s, 1),
    steps=steps,
    steps_per_s=round(steps / train_s, 3),
    pairs_per_s=round(steps * args.bs / train_s, 1),
    load_after_train=load_avg(),
)
print({k: log[k] for k in ("train_s", "steps", "steps_per_s", "pairs_per_s", "load_after_train")}, flush=True)
model.save(str(out))
tuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
log["eval"] = {}
for w in [float(x) for x in args.wise.split(",") if x != ""]:
    model.load_state_dict(tuned)
    if w:
        average_weights(model, start, w)
    r = eval_twin(model, dev, au_ho)
    log["eval"][str(w)] = r
    print(f"wise base_weight={w}: {r}", flush=True)
log["wall_s"] = round(time.perf_counter() - t_all, 1)
log["load_end"] = load_avg()
(OUT / "logs" / f"{args.run}.json").write_text(json.dumps(log, indent=1))
print("WALL", log["wall_s"], log["load_end"], flush=True)
