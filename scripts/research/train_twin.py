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
ap.add_argument("--aux", default="none", choices=["none", "cosent", "angle"], help="pair-ranking term beside OCL")
ap.add_argument("--aux-weight", type=float, default=1.0)
ap.add_argument("--eval-each-epoch", action="store_true", help="evaluate (no WiSE) at every epoch end")
ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
ap.add_argument("--au-rank", action="store_true",
                help="also put the AskUbuntu duplicates (of the AU pairs used) through the ranking loss, as their "
                "own dataset (in-batch negatives from AskUbuntu): teaches AU retrieval order, not only pair labels")
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
if args.threads:
    import torch

    torch.set_num_threads(args.threads)


class OCLPlusPairRanking(__import__("torch").nn.Module):
    """OnlineContrastiveLoss + aux_weight x CoSENT/AnglE on the same batch, from one merged forward pass:
    CoSENT ranks every positive pair of the batch above every negative one, the ordering pair AP measures."""

    def __init__(self, model, margin, aux, weight):
        super().__init__()
        self.model = model
        self.ocl = losses.OnlineContrastiveLoss(model, margin=margin)
        self.aux = (losses.CoSENTLoss if aux == "cosent" else losses.AnglELoss)(model)
        self.weight = weight

    def forward(self, sentence_features, labels):
        from sentence_transformers.base.losses.merged_forward import embed_columns

        emb = embed_columns(self.model, sentence_features, separate_first=False)
        return self.ocl.compute_loss_from_embeddings(emb, labels) + self.weight * self.aux.compute_loss_from_embeddings(
            emb, labels
        )


loss = {
    "labelled": losses.OnlineContrastiveLoss(model, margin=args.margin)
    if args.aux == "none"
    else OCLPlusPairRanking(model, args.margin, args.aux, args.aux_weight)
}
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
if args.au_rank:
    au_pos = [p for p in ocl_pairs[len(lab):] if p.label == 1]
    counts["au_rank_pairs"] = len(au_pos)
    print("au_rank pairs", len(au_pos), flush=True)
    ds["au_rank"] = Dataset.from_dict(
        {"anchor": [p.question1 for p in au_pos], "positive": [p.question2 for p in au_pos]}
    )
    if "posonly" in loss:
        loss["au_rank"] = loss["posonly"]
    else:
        guide = SentenceTransformer(base_path() if args.guide == "base" else args.guide, device="cpu")
        for prm in guide.parameters():
            prm.requires_grad_(False)
        loss["au_rank"] = losses.GISTEmbedLoss(model, guide)
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
callbacks = []
if args.eval_each_epoch:
    from transformers import TrainerCallback

    class EpochEval(TrainerCallback):
        def on_epoch_end(self, _args, state, control, model=None, **kw):
            m = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
            was = m.training
            m.eval()
            r = eval_twin(m, dev, au_ho)
            m.train(was)
            log.setdefault("epochs", {})[str(round(state.epoch, 2))] = r
            print(f"EPOCH {state.epoch:.2f} step {state.global_step}: {r} | {load_avg()}", flush=True)

    callbacks.append(EpochEval())
trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=ds, loss=loss, callbacks=callbacks)
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
