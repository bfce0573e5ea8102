"""Fine-tuning the twin encoder with contrastive loss on labelled question pairs (the data-aware recipe).

:func:`train` runs the whole recipe:

1. clean and split the pairs by duplicate cluster (no question in both train and dev);
2. route them by kind (:func:`split_by_labels`): *labelled* pairs (data with both labels) go to the margin
   contrastive loss, the backbone (``OnlineContrastiveLoss`` by default, ``ContrastiveLoss`` selectable, with
   the distance that matches the energy); *positive-only* pairs (duplicates without labelled negatives, such
   as QQP's paraphrase sets; capped at ``max_positive_only``) go to an in-batch ranking loss with protection
   against false negatives (``GISTEmbedLoss`` guided by a frozen copy of the starting model: an in-batch
   "negative" the guide scores above the true pair is masked out), as a second dataset of one
   multi-dataset run (proportional sampler);
3. train the cross-encoder teacher on the labelled pairs (:mod:`dupq.models.cross`; saved in ``<version>/cross``);
4. only when ``negatives_per_positive > 0``: mine hard negatives (:mod:`dupq.training.mining`) and keep only those the
   teacher scores as non-duplicates (most unfiltered Quora neighbours are unlabelled duplicates);
5. fine-tune with ``SentenceTransformerTrainer`` (a length-grouped no-duplicates batch sampler), evaluate on dev
   during training and keep the best checkpoint, optionally average weights back (WiSE-FT), calibrate the
   decision threshold on dev, and write a model version folder that only ever exists complete (written as a
   temporary sibling, then renamed).

Example:
    >>> from dupq.data import read_pairs
    >>> result = train(read_pairs("pairs.tsv").pairs, TrainConfig(max_steps=500),      # doctest: +SKIP
    ...                start=packaged_model_path(), output_dir=Path("dupq-data/models/v1"))
    >>> result.metrics["dev"]["pairs"]["ap"], result.thresholds                          # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from dupq.data import Pair
from dupq.evaluation import evaluate_encoder, pair_metrics
from dupq.evaluation.metrics import calibrate_threshold
from dupq.models.cross import CROSS_DIR, CrossScorer, has_cross, save_fusion
from dupq.models.encoder import (
    SiameseEncoder,
    packaged_model_path,
)
from dupq.models.energy import Energy
from dupq.models.fusion import ScoreFusion
from dupq.training.budget import (
    PROBE_STEPS,
    Deadline,
    Plan,
    StepCosts,
    StepTimer,
    plan_run,
    plan_twin,
    probe_sample,
    reserve_after_twin,
    surely_fits,
)
from dupq.training.config import Progress, TrainConfig, TrainingCancelled, TrainResult
from dupq.training.cross import CrossResult, cross_step_seconds, train_cross_encoder
from dupq.training.data import PreparedData, add_dev_negatives, add_mined_negatives, add_silver_pairs, prepare_data
from dupq.training.fusion import fit_fusion
from dupq.training.hardware import bf16_supported, has_accelerator, on_rank0, process_group
from dupq.training.progress import emit
from dupq.training.selection import (
    AUTO_EVALS,
    PATIENCE,
    WISE_CANDIDATES,
    auto_dev_fraction,
    auto_epochs,
    check_distractors,
    choose_base_weight,
    cross_rule,
    drop_questions,
    hold_out_sources,
    keep_reranker,
    out_of_fold,
    source_checks,
)
from dupq.training.selection import RULE as SELECTION_RULE
from dupq.training.twin import (
    DEFAULT_EVALS,
    EVAL_MAX_PAIRS,
    average_weights,
    dev_evaluator,
    encode_fn,
    flat_metrics,
    load_start,
    relay_callbacks,
    row_length,
    twin_datasets,
    twin_steps,
    twin_trainer,
)

log = logging.getLogger(__name__)

__all__ = ["train"]














# --- building blocks ---------------------------------------------------------------------------------------


































def _temp_sibling(output_dir: Path) -> Path:
    return output_dir.parent / f".{output_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


# --- the recipe ------------------------------------------------------------------------------------------


def _cross_init(start: SiameseEncoder | str | Path) -> str:
    """Where the cross-encoder starts: the start version's cross-encoder, a plain SentenceTransformer folder
    given as the start (``--base``), else the packaged MiniLM weights."""
    if not isinstance(start, SiameseEncoder):
        folder = Path(start)
        if has_cross(folder):
            return str(folder / CROSS_DIR)
        if folder.is_dir() and not (folder / "dupq.json").is_file():
            return str(folder)
    return packaged_model_path()


def train(
    pairs: Sequence[Pair],
    config: TrainConfig,
    *,
    start: SiameseEncoder | str | Path,
    output_dir: Path,
    dev_pairs: Sequence[Pair] | None = None,
    positive_only: Sequence[Pair] | None = None,
    sources: Mapping[str, Sequence[Pair]] | None = None,
    parent: str | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    show_progress_bar: bool = True,
) -> TrainResult | None:
    """Fine-tune a twin encoder (and its cross-encoder) and write a complete model version at ``output_dir``.

    Args:
        pairs: Labelled pairs (repeats and self-pairs are dropped again here): the contrastive loss's data.
        config: Hyper-parameters.
        start: Where fine-tuning starts: a dupq version folder (``models/<version>``; ``models/base`` is the
            packaged model), any SentenceTransformer folder, or an encoder. It is copied, never trained in
            place.
        output_dir: The final version folder (``models/<version>``); it must not exist. The version is built in
            a temporary sibling and renamed, so the folder only ever exists complete (cross-encoder included).
        dev_pairs: Dev pairs for checkpoint selection, threshold calibration and the reported metrics; None
            splits ``pairs`` by duplicate cluster with ``config.dev_fraction``.
        positive_only: Duplicate pairs without labelled negatives (:func:`split_by_labels`): the ranking loss's
            data (``config.ranking_loss``), at most ``config.max_positive_only`` of them.
        sources: The training pairs by source (``dupq train``: by file), for the per-source checks of the
            WiSE-FT selection (:mod:`dupq.training.selection`); None or one source: the dev pairs are the check.
        parent: Parent version name, saved in dupq.json.
        progress: Called with ``{"step", "total", "loss", "epoch", "phase"}``; phase is ``"cross-encoder"``,
            ``"silver"``, ``"mining"``, ``"training"`` or ``"evaluating"``.
        should_stop: Polled after every step; when it returns True, :class:`TrainingCancelled` is raised and
            nothing is left at ``output_dir``.
        show_progress_bar: Show the trainers' progress bars (one per phase).

    Returns:
        The version name and path, dev metrics (``{"dev": {"pairs", "retrieval"}}``), thresholds
        (``{"f1", "accuracy"}``; the max-F1 one is served), data counts, wall seconds, training throughput in
        pairs/s (excluding dev evaluations), the cross-encoder's summary and the seconds of each phase. None on
        a data-parallel rank other than 0 (:mod:`dupq.training.distributed`): rank 0 alone evaluates and saves.

    Raises:
        TrainingCancelled: ``should_stop`` asked to stop.
        ValueError: No training pairs, or a dev set without duplicates.
        FileExistsError: ``output_dir`` already exists.
    """
    t_start = time.perf_counter()
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise FileExistsError(f"{output_dir} already exists")
    output_dir.parent.mkdir(parents=True, exist_ok=True)

    from transformers import set_seed

    set_seed(config.seed)
    rank, local_rank, world = process_group()  # (0, 0, 1) unless data-parallel (dupq.training.distributed)
    phases: dict[str, float] = {}
    model, base_model_name, started_from = load_start(start)
    # A CPU copy of the starting weights for the final average (about 90 MB for MiniLM-L6), made by the rank
    # that saves the version.
    start_weights = (
        {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if config.base_weight != 0 and rank == 0
        else None
    )
    _check_stop(should_stop)
    given = config  # as the user gave it (None = chosen here), saved in dupq.json; `config` is the run's, resolved
    # Sources without dev pairs of their own hold out a small cluster split as their check (dupq.training.selection).
    held, held_questions = hold_out_sources(sources or {}, dev_pairs, config.seed)
    held_dropped = 0
    if held_questions:
        before = len(pairs) + len(positive_only or [])
        pairs = drop_questions(pairs, held_questions) or []
        positive_only = drop_questions(positive_only, held_questions)
        held_dropped = before - len(pairs) - len(positive_only or [])
    dev_fraction = config.dev_fraction
    if dev_fraction is None:
        dev_fraction = auto_dev_fraction(len(pairs) + len(positive_only or []))
    config = replace(config, dev_fraction=dev_fraction, epochs=config.epochs or 1.0)
    data = on_rank0(world, rank, lambda: add_dev_negatives(  # before the cross-encoder: it calibrates on dev too
        prepare_data(pairs, dev_pairs, config, positive_only=positive_only, progress=progress), model, config))
    if held:  # what the per-source checks took out of training: their pairs and those sharing a question
        data.counts["source_check_pairs"] = sum(len(v) for v in held.values())
        data.counts["dropped_for_source_checks"] = held_dropped
    phases["prepare"] = time.perf_counter() - t_start
    _check_stop(should_stop)
    energy = Energy.from_name(config.energy)
    model.similarity_fn_name = energy.similarity_fn_name  # saved in the model's config, so plain ST users see it
    steps_per_epoch, _ = twin_steps(data, replace(config, epochs=1.0, max_steps=None), world)
    if given.epochs is None:
        config = replace(config, epochs=float(auto_epochs(steps_per_epoch)))
    n_evals = DEFAULT_EVALS if config.epochs <= 1 else AUTO_EVALS
    # The checks of the WiSE-FT choice: the dev sample the in-training evaluations use, and each source's.
    eval_pairs = min(EVAL_MAX_PAIRS, len(data.dev))
    checks = {"dev": _eval_sample(data.dev, config.seed),
              **{k: _eval_sample(v, config.seed) for k, v in source_checks(sources, data.dev, held).items()}}
    wise_candidates = list(WISE_CANDIDATES) if given.base_weight is None else []
    start_metrics: dict[str, dict[str, float]] = {}
    distractors = check_distractors([*data.train, *data.ranking], config.seed) if wise_candidates else []
    if wise_candidates and rank == 0:
        t0 = time.perf_counter()
        emit(progress, step=0, total=None, phase="evaluating")
        start_metrics = _check_metrics(model, checks, energy, distractors)
        phases["select"] = time.perf_counter() - t0

    bf16 = config.bf16 and bf16_supported()
    if config.bf16 and not bf16:
        log.warning("bf16 requested but this machine has no native bf16 support: training in fp32")
    # Data-parallel ranks share one checkpoint path (rank 0 saves, every rank loads the best one back); only
    # rank 0 stages the version beside its final folder, the others a scratch folder nothing reads.
    checkpoints = Path(on_rank0(world, rank, lambda: tempfile.mkdtemp(prefix="dupq-train-")))
    checkpoints.mkdir(parents=True, exist_ok=True)  # a rank on another host: the same path on its disk
    staging = (_temp_sibling(output_dir) if rank == 0
               else Path(tempfile.gettempdir()) / f"dupq-rank{rank}-{uuid.uuid4().hex[:8]}")
    try:
        staging.mkdir(parents=True)
        # -- the time budget (dupq/training/budget.py): time this machine's steps, plan both phases to fit -----------
        t_budget = time.perf_counter()
        cross_pairs: list[Pair] = []
        cross_wanted, cross_why = cross_rule(given.cross_encoder, len(data.labelled))
        if cross_wanted:
            if {p.label for p in data.labelled} == {0, 1} and {p.label for p in data.dev} == {0, 1}:
                cross_pairs = list(data.labelled)
                if config.cross_max_pairs is not None and len(cross_pairs) > config.cross_max_pairs:
                    cross_pairs = random.Random(config.seed).sample(cross_pairs, config.cross_max_pairs)
            else:
                cross_why = "not trained: it needs labelled training and dev pairs with both labels"
                log.warning("no cross-encoder: it needs labelled training and dev pairs with both labels")
        cross_full = (config.cross_max_steps or config.max_steps
                      or max(1, math.ceil(config.cross_epochs * math.ceil(len(cross_pairs) / config.batch_size))))
        cross_full = cross_full if cross_pairs else 0
        guide = None
        if data.ranking and config.ranking_loss == "gist":
            guide = copy.deepcopy(model)  # frozen: the starting model judges which in-batch negatives are false
            guide.requires_grad_(False)
            guide.eval()
        plan: Plan | None = None
        costs: StepCosts | None = None
        # Dev evaluations: those during training, and after it the WiSE-FT candidates on every check.
        evals = n_evals + len(wise_candidates) * len(checks)
        if config.time_budget_minutes is not None:
            budget_s = config.time_budget_minutes * 60
            twin_full, ranking_share = twin_steps(data, config, world)
            if world > 1:
                log.warning("the time budget is not applied to data-parallel runs: each rank trains every step")
            elif not surely_fits(budget_s, cross_steps=cross_full, twin_steps=twin_full,
                                 batch_size=config.batch_size, dev_pairs=len(data.dev), evals=evals,
                                 eval_pairs=eval_pairs):
                emit(progress, step=0, total=None, phase="budget")
                costs = _probe_costs(model, data, cross_pairs, config, energy, guide, bf16, start, checkpoints)
                set_seed(config.seed)  # the probes drew random numbers: the run proper starts as an unprobed one
                plan = plan_run(costs, budget_s=budget_s, elapsed_s=time.perf_counter() - t_start,
                                cross_steps=cross_full, twin_steps=twin_full, twin_ranking_share=ranking_share,
                                dev_pairs=len(data.dev), evals=evals, eval_pairs=eval_pairs)
                log.info(plan.describe())
                emit(progress, step=0, total=None, phase="budget", message=plan.describe())
        phases["budget"] = time.perf_counter() - t_budget
        _check_stop(should_stop)

        # -- the cross-encoder teacher (inside the staging folder: the version stays atomic) --------------
        cross_result: CrossResult | None = None
        t0 = time.perf_counter()
        if cross_pairs:
            emit(progress, step=0, total=None, phase="cross-encoder")
            cross_result = train_cross_encoder(
                cross_pairs,
                data.dev,
                staging / CROSS_DIR,
                init=_cross_init(start),
                epochs=config.cross_epochs,
                max_steps=(plan.cross_steps if plan is not None and plan.cross_steps < cross_full
                           else config.cross_max_steps or config.max_steps),
                batch_size=config.batch_size,
                learning_rate=config.cross_learning_rate,
                warmup_ratio=config.warmup_ratio,
                seed=config.seed,
                bf16=bf16,
                callbacks=relay_callbacks(progress, should_stop, phase="cross-encoder"),
                show_progress_bar=show_progress_bar,
                use_cpu=not has_accelerator(),
            )
        phases["cross_encoder"] = time.perf_counter() - t0
        _check_stop(should_stop)

        # -- silver pairs: the teacher labels near neighbours of the training questions (Augmented SBERT) ---
        t0 = time.perf_counter()
        if config.silver_pairs > 0 and cross_result is not None:
            data = on_rank0(world, rank, lambda: add_silver_pairs(
                data, model, config, CrossScorer.load(staging / CROSS_DIR, backend="torch"), progress=progress))
        phases["silver"] = time.perf_counter() - t0
        _check_stop(should_stop)

        # -- mined negatives, judged by the teacher ----------------------------------------------------------
        t0 = time.perf_counter()
        if config.negatives_per_positive > 0:
            teacher = None
            if cross_result is not None:
                scorer = CrossScorer.load(staging / CROSS_DIR, backend="torch")

                def teacher(ps: list[Pair]) -> Any:
                    return scorer.is_duplicate(scorer.score([(p.question1, p.question2) for p in ps], batch_size=64))

            data = on_rank0(world, rank, lambda: add_mined_negatives(data, model, config, teacher=teacher,
                                                                     progress=progress))
        phases["mining"] = time.perf_counter() - t0
        _check_stop(should_stop)

        # -- the twin: contrastive loss on the labelled pairs, ranking loss on the positive-only ones -------
        t0 = time.perf_counter()
        datasets, losses = twin_datasets(model, data, config, energy, guide)
        twin_full, ranking_share = twin_steps(data, config, world)
        max_steps = config.max_steps
        deadline: Deadline | None = None
        if plan is not None and costs is not None:  # plan the twin again from the time actually left
            predicted_cross = plan.cross_steps * costs.cross + costs.score_seconds(len(data.dev))
            planned = plan.twin_steps
            plan = plan_twin(plan, costs, elapsed_s=time.perf_counter() - t_start, twin_steps=twin_full,
                             twin_ranking_share=ranking_share, dev_pairs=len(data.dev), evals=evals,
                             eval_pairs=eval_pairs)
            if plan.twin_steps != planned:
                note = (f"time budget: the cross-encoder took {phases['cross_encoder']:.0f} s (predicted "
                        f"{predicted_cross:.0f} s), so the twin trains {plan.twin_steps} of {twin_full} steps")
                log.info(note)
                emit(progress, step=0, total=None, phase="budget", message=note)
            if plan.twin_steps < twin_full:
                max_steps = plan.twin_steps
            # The plan is a forecast; the budget is a bound: if the twin's steps run slower than the probe said
            # (18% slower in one measured run, docs/benchmarks.md), stop it while the final evaluation still fits.
            deadline = Deadline(t_start + plan.budget_s
                                - reserve_after_twin(costs, dev_pairs=len(data.dev), eval_pairs=eval_pairs,
                                                     extra_evals=len(wise_candidates) * len(checks)))
        total_steps = max_steps or twin_full
        eval_steps = config.eval_steps or max(1, math.ceil(total_steps / n_evals))
        evaluator = dev_evaluator(data.dev, energy, config.seed, progress)
        from transformers import EarlyStoppingCallback

        # Stop when dev AP has not improved for PATIENCE evaluations; the best checkpoint is loaded at the end.
        stopper = EarlyStoppingCallback(early_stopping_patience=PATIENCE)
        trainer = twin_trainer(model, datasets, losses, config, output_dir=checkpoints, max_steps=max_steps,
                                total_steps=total_steps, bf16=bf16, world=world, evaluator=evaluator,
                                eval_steps=eval_steps,
                                callbacks=[*relay_callbacks(progress, should_stop), stopper,
                                           *([deadline.callback] if deadline is not None else [])],
                                show_progress_bar=show_progress_bar)
        t_train = time.perf_counter()
        trainer.train()
        if deadline is not None and deadline.stopped_at is not None:
            note = (f"time budget: the twin's steps ran slower than predicted, so it stopped at step "
                    f"{deadline.stopped_at} of {total_steps} to keep the budget")
            log.info(note)  # the CLI prints it from the progress event (a warning would print it twice)
            emit(progress, step=deadline.stopped_at, total=total_steps, phase="budget", message=note)
        if world > 1:
            import torch.distributed as dist

            dist.barrier()  # every rank has loaded the best checkpoint back before its folder goes
            if rank != 0:
                return None  # rank 0 averages, evaluates, calibrates and saves the version
        # Mixed precision leaves model.forward wrapped in autocast; drop it so the dev metrics and thresholds
        # below are measured in fp32, as the saved model is loaded and served.
        model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
        train_seconds = time.perf_counter() - t_train - evaluator.seconds
        steps = trainer.state.global_step
        pairs_per_second = steps * config.batch_size * world / train_seconds if train_seconds > 0 else 0.0
        phases["twin"] = time.perf_counter() - t0

        # The WiSE-FT weight: each candidate evaluated on the checks (no retraining), the rule picks one.
        t0 = time.perf_counter()
        wise: dict[str, Any] = {"auto": bool(wise_candidates), "start": start_metrics,
                                "checks": {k: len(v) for k, v in checks.items()}, "distractors": len(distractors)}
        base_weight = given.base_weight or 0.0
        if wise_candidates and start_weights is not None:
            emit(progress, step=steps, total=None, phase="evaluating")
            tuned = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            candidates = []
            for w in wise_candidates:
                if w:
                    average_weights(model, start_weights, w)
                candidates.append({"base_weight": w, "checks": _check_metrics(model, checks, energy, distractors)})
                if w:
                    model.load_state_dict(tuned)
            del tuned
            chosen, wise["reason"] = choose_base_weight(candidates, start_metrics)
            base_weight = float(chosen["base_weight"])
            wise["candidates"] = candidates
        else:
            wise["reason"] = f"base_weight={base_weight:g} given"
        wise["chosen"] = base_weight
        if base_weight and start_weights is not None:
            average_weights(model, start_weights, base_weight)
        config = replace(config, base_weight=base_weight)
        phases["select"] = phases.get("select", 0.0) + time.perf_counter() - t0

        # Final dev numbers and thresholds on every dev pair, with the best checkpoint's weights.
        t0 = time.perf_counter()
        emit(progress, step=steps, total=steps, phase="evaluating")
        # The recorder keeps the dev vectors, so the (score, label) sample for the plots costs no second encoding.
        from dupq.evaluation.plots import PairScoreRecorder

        recorder = PairScoreRecorder(encode_fn(model, energy))
        dev_result = evaluate_encoder(recorder, data.dev, energy=energy)
        twin_scores = np.asarray(recorder.scores(data.dev, config.energy), dtype=np.float64)
        labels = [p.label for p in data.dev]
        hib = energy.higher_is_better
        thresholds = {objective: calibrate_threshold(twin_scores, labels, higher_is_better=hib, objective=objective)
                      for objective in ("f1", "accuracy")}
        served = calibrate_threshold(twin_scores, labels, higher_is_better=hib, objective=config.threshold_policy)
        dev_result["pairs"] = pair_metrics(twin_scores, labels, higher_is_better=hib, threshold=served)
        metrics = {"dev": dev_result}
        reranker: dict[str, Any] = {"trained": cross_result is not None, "kept": False, "reason": cross_why}
        if cross_result is not None:  # the re-ranking score: cross-encoder logit + twin score (dupq/models/fusion.py)
            logits = _dev_logits(cross_result, data.dev, staging / CROSS_DIR)
            oof = out_of_fold(twin_scores, logits, data.dev, higher_is_better=hib, seed=config.seed)
            keep, reranker["reason"] = keep_reranker(given.cross_encoder, oof)
            reranker.update(kept=keep, out_of_fold=oof, cross_summary=cross_result.summary())
            if keep:
                cross_result.fusion = _fit_fusion(logits, twin_scores, data.dev, energy, staging / CROSS_DIR,
                                                  config.threshold_policy)
            else:  # the version has no re-ranker: dupq.json's selection says why
                shutil.rmtree(staging / CROSS_DIR, ignore_errors=True)
                cross_result = None
        cross = cross_result.summary() if cross_result is not None else None
        best_step = _best_step(trainer.state.best_model_checkpoint)
        at_served = dev_result["pairs"]
        selection = {
            "rule": SELECTION_RULE,
            "dev": {"pairs": len(data.dev), "given": dev_pairs is not None,
                    "dev_fraction": None if dev_pairs is not None else config.dev_fraction},
            "steps": {"epochs": config.epochs, "auto": given.epochs is None, "steps_per_epoch": steps_per_epoch,
                      "planned": total_steps, "trained": steps, "best_step": best_step,
                      "stopped_early": bool(stopper_stopped(trainer, total_steps, deadline)),
                      "evaluations": len(evaluator.history), "patience": PATIENCE,
                      "reason": (f"{config.epochs:g} epoch(s) of {steps_per_epoch} steps "
                                 + ("(auto: at least 300 steps, at most 40 epochs)" if given.epochs is None
                                    else "(given)") + f"; best dev AP at step {best_step}")},
            "base_weight": wise,
            "reranker": reranker,
            "threshold": {"policy": config.threshold_policy, "threshold": served,
                          "precision": at_served["precision"], "recall": at_served["recall"],
                          "f1": at_served["f1"]},
        }
        phases["evaluate"] = time.perf_counter() - t0
        phases["total"] = time.perf_counter() - t_start
        phase_seconds = {k: round(v, 1) for k, v in phases.items()}
        budget = None
        if plan is not None:
            budget = {**plan.to_dict(), "actual_s": round(phases["total"], 1),
                      "twin_stopped_at": deadline.stopped_at if deadline is not None else None}
        encoder = SiameseEncoder(
            model,
            energy=energy,
            threshold=served,
            base_model=base_model_name,
            metadata={
                "loss": config.loss,
                "margin": config.margin,
                "ranking_loss": config.ranking_loss if data.ranking else None,
                "thresholds": thresholds,
                "threshold_objective": "f1" if config.threshold_policy == "max_f1" else config.threshold_policy,
                "threshold_policy": config.threshold_policy,
                "training": given.to_dict(),
                "selection": selection,
                "data": data.counts,
                "metrics": metrics,
                "history": evaluator.history,
                # For the admin page's and `dupq eval --report`'s plots (dupq/evaluation/plots.py).
                "loss_history": [
                    {"step": int(e["step"]), "loss": round(float(e["loss"]), 5)}
                    for e in trainer.state.log_history
                    if "loss" in e and "step" in e
                ],
                "dev_scores": recorder.sample(data.dev, config.energy, seed=config.seed),
                "best_step": best_step,
                "steps": steps,
                "processes": world,
                "global_batch_size": config.batch_size * world,
                "precision": "bf16" if bf16 else "fp32",
                "parent": parent,
                "started_from": started_from,
                "cross": cross,
                "phase_seconds": phase_seconds,
                "budget": budget,
                "seconds": round(time.perf_counter() - t_start, 1),
                "pairs_per_second": round(pairs_per_second, 2),
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )
        _check_stop(should_stop)
        encoder.save(staging)
        os.rename(staging, output_dir)  # atomic: the version appears complete or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if rank != 0:
            shutil.rmtree(staging, ignore_errors=True)
        if local_rank == 0:  # one rank per node removes the shared checkpoint folder
            shutil.rmtree(checkpoints, ignore_errors=True)
    return TrainResult(
        version=output_dir.name,
        path=output_dir,
        metrics=metrics,
        thresholds=thresholds,
        counts=data.counts,
        seconds=time.perf_counter() - t_start,
        pairs_per_second=pairs_per_second,
        history=evaluator.history,
        cross=cross,
        phase_seconds=phase_seconds,
        budget=budget,
        selection=selection,
    )








def _pair_length(p: Pair) -> int:  # what the cross-encoder's sampler groups by
    return len(p.question1) + len(p.question2)




def _probe_costs(model: Any, data: PreparedData, cross_pairs: Sequence[Pair], config: TrainConfig, energy: Energy,
                 guide: Any, bf16: bool, start: SiameseEncoder | str | Path, scratch: Path) -> StepCosts:
    """Time :data:`dupq.training.budget.PROBE_STEPS` real optimiser steps of each model on this machine
    (throwaway copies of the models, on training pairs of the mean length); nothing of it reaches the version."""
    t0 = time.perf_counter()
    n = PROBE_STEPS * config.batch_size
    probe = replace(data, train=probe_sample(data.train, n, row_length),
                    ranking=probe_sample(data.ranking, n, row_length))
    folder = Path(tempfile.mkdtemp(prefix="probe-", dir=scratch))
    try:
        twin = ranking = 0.0
        for kind in ("train", "ranking"):
            if not getattr(probe, kind):
                continue
            only = replace(probe, train=probe.train if kind == "train" else [],
                           ranking=probe.ranking if kind == "ranking" else [])
            copy_ = copy.deepcopy(model)
            datasets, losses = twin_datasets(copy_, only, config, energy, guide)
            timer = StepTimer()
            twin_trainer(copy_, datasets, losses, config, output_dir=folder / kind, max_steps=PROBE_STEPS,
                          total_steps=PROBE_STEPS, bf16=bf16, world=1, evaluator=None, eval_steps=None,
                          callbacks=[timer.callback], show_progress_bar=False).train()
            seconds = timer.seconds_per_step()
            twin, ranking = (seconds, ranking) if kind == "train" else (twin, seconds)
            del copy_, datasets, losses
        twin, ranking = twin or ranking, ranking or twin
        cross = 0.0
        if cross_pairs:
            cross = cross_step_seconds(probe_sample(cross_pairs, n, _pair_length), init=_cross_init(start),
                                       scratch=folder / "cross", batch_size=config.batch_size,
                                       learning_rate=config.cross_learning_rate, bf16=bf16,
                                       use_cpu=not has_accelerator())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return StepCosts(cross=cross, twin=twin, ranking=ranking, batch_size=config.batch_size,
                     probe_seconds=time.perf_counter() - t0)










def _dev_logits(result: CrossResult, dev: Sequence[Pair], folder: Path) -> np.ndarray:
    """The cross-encoder's logit on each dev pair (scored again if dev gained mined negatives after it)."""
    logits = result.dev_logits
    if logits is None or len(logits) != len(dev):
        logits = CrossScorer.load(folder, backend="torch").logits([(p.question1, p.question2) for p in dev],
                                                                   batch_size=64)
    return np.asarray(logits, dtype=np.float64)


def _fit_fusion(logits: np.ndarray, twin_scores: np.ndarray, dev: Sequence[Pair], energy: Energy,
                folder: Path, policy: str) -> ScoreFusion:
    """Fit the re-ranking fusion on dev (the twin's final scores, the cross-encoder's logits), calibrate its
    threshold for ``policy`` and save it."""
    labels = [p.label for p in dev]
    fusion = fit_fusion(twin_scores, logits, labels, higher_is_better=energy.higher_is_better)
    if policy != "max_f1":
        fusion = replace(fusion, threshold=calibrate_threshold(fusion.score(twin_scores, logits), labels,
                                                               objective=policy))
    save_fusion(folder, fusion)
    return fusion


def _eval_sample(pairs: Sequence[Pair], seed: int) -> list[Pair]:
    """The dev evaluator's sample (:func:`dupq.training.twin.dev_evaluator`): at most EVAL_MAX_PAIRS pairs."""
    sample = list(pairs)
    if len(sample) > EVAL_MAX_PAIRS:
        sample = random.Random(seed).sample(sample, EVAL_MAX_PAIRS)
    return sample


def _check_metrics(model: Any, checks: Mapping[str, Sequence[Pair]], energy: Energy,
                   distractors: Sequence[str]) -> dict[str, dict[str, float]]:
    """Pair AP and retrieval metrics of ``model`` on each check (the WiSE-FT selection's numbers); the
    ``distractors`` (training questions) join each check's retrieval corpus."""
    raw = encode_fn(model, energy)
    vectors: dict[str, np.ndarray] = {}  # the distractors are shared by the checks: each text is encoded once

    def encode(texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in vectors]
        if missing:
            vectors.update(zip(missing, np.asarray(raw(missing)), strict=True))
        return np.stack([vectors[t] for t in texts])

    out = {}
    for name, pairs in checks.items():
        m = flat_metrics(evaluate_encoder(encode, pairs, energy=energy, distractors=distractors))
        out[name] = {k: round(float(v), 5) for k, v in m.items()}
    return out


def stopper_stopped(trainer: Any, total_steps: int, deadline: Deadline | None) -> bool:
    """Whether early stopping (not the time budget) ended the twin's training before its planned steps."""
    if deadline is not None and deadline.stopped_at is not None:
        return False
    return trainer.state.global_step < total_steps


def _check_stop(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise TrainingCancelled("training stopped before it finished")


def _best_step(checkpoint: str | None) -> int | None:
    if not checkpoint:
        return None
    try:
        return int(checkpoint.rsplit("-", 1)[-1])
    except ValueError:
        return None
