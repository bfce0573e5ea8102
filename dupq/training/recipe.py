"""Fine-tuning the twin encoder with contrastive loss on labelled question pairs (the data-aware recipe).

:func:`train` runs the whole recipe as a sequence of phases (the methods of ``_Run``, which holds one run's
state; dupq.json's ``phase_seconds`` times each):

1. *prepare*: load the start model; clean and split the pairs by duplicate cluster (no question in both train
   and dev) and route them by kind (:func:`split_by_labels`): *labelled* pairs (data with both labels) go to the
   margin contrastive loss, the backbone (``OnlineContrastiveLoss`` by default, ``ContrastiveLoss`` selectable,
   with the distance that matches the energy); *positive-only* pairs (duplicates without labelled negatives,
   such as QQP's paraphrase sets; capped at ``max_positive_only``) go to an in-batch ranking loss with
   protection against false negatives (``GISTEmbedLoss`` guided by a frozen copy of the starting model: an
   in-batch "negative" the guide scores above the true pair is masked out), as a second dataset of one
   multi-dataset run (proportional sampler); the epochs (auto unless given), and the checks of the WiSE-FT
   choice with the start model's numbers on them (:mod:`dupq.training.selection`);
2. *budget*: choose the cross-encoder's pairs; under a time budget (``time_budget_minutes``) the run may not
   surely fit, time a few real steps of each model on this machine and plan both trainings to fit
   (:mod:`dupq.training.budget`);
3. *cross-encoder*: train the teacher on the labelled pairs (:mod:`dupq.models.cross`; saved in
   ``<version>/cross``);
4. *silver pairs*, only when ``silver_pairs > 0``: the teacher labels near neighbours of the training questions
   (Augmented SBERT);
5. *mined negatives*, only when ``negatives_per_positive > 0``: mine hard negatives (:mod:`dupq.training.mining`)
   and keep only those the teacher scores as non-duplicates (most unfiltered Quora neighbours are unlabelled
   duplicates);
6. *twin*: fine-tune with ``SentenceTransformerTrainer`` (a length-grouped no-duplicates batch sampler),
   evaluate on dev during training, stop early (or at the time budget's deadline) and keep the best
   checkpoint;
7. *select*: choose the weight of the WiSE-FT average with the start weights (each candidate on the checks);
8. *evaluate*: the final dev metrics, the decision thresholds calibrated on dev, and whether the re-ranker
   (cross-encoder + twin score fusion) pays out of fold, else the version has none;
9. *save*: write a model version folder that only ever exists complete (written as a temporary sibling, then
   renamed).

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
    PROBE_BANDS,
    Deadline,
    Plan,
    StepCosts,
    StepTimer,
    plan_run,
    plan_twin,
    probe_rows,
    reserve_after_twin,
    surely_fits,
)
from dupq.training.config import Progress, TrainConfig, TrainingCancelled, TrainResult
from dupq.training.cross import CrossResult, cross_step_seconds, train_cross_encoder, training_rows
from dupq.training.data import (
    PreparedData,
    add_dev_negatives,
    add_mined_negatives,
    add_silver_pairs,
    prepare_data,
    ranking_parts,
)
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
    refit_rule,
    source_checks,
)
from dupq.training.selection import RULE as SELECTION_RULE
from dupq.training.twin import (
    DEFAULT_EVALS,
    EVAL_MAX_PAIRS,
    average_weights,
    dev_evaluator,
    encode_fn,
    eval_sample,
    flat_metrics,
    load_start,
    relay_callbacks,
    row_length,
    stop_at_callback,
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
    run = _Run(config, start=start, output_dir=Path(output_dir), dev_pairs=dev_pairs, sources=sources,
               parent=parent, progress=progress, should_stop=should_stop, show_progress_bar=show_progress_bar)
    run.prepare(pairs, positive_only)  # its errors come before any folder of the run exists
    try:
        run.staging.mkdir(parents=True)
        run.budget()
        run.check_stop()
        run.cross_encoder()
        run.check_stop()
        run.silver_pairs()
        run.check_stop()
        run.mined_negatives()
        run.check_stop()
        if not run.twin():
            return None  # a data-parallel rank other than 0: rank 0 alone selects, evaluates and saves
        run.select()
        run.evaluate()
        run.check_stop()
        run.refit()
        run.save()
    except BaseException:
        shutil.rmtree(run.staging, ignore_errors=True)
        raise
    finally:
        run.clean_up()
    return run.result()


class _Run:
    """One :func:`train` call: its inputs and the state its phases build up, one method per phase, called in
    order by :func:`train`. ``phases`` records the seconds of each (dupq.json's ``phase_seconds``)."""

    # prepare
    t_start: float
    rank: int
    local_rank: int
    world: int
    model: Any
    base_model_name: str
    started_from: str
    start_weights: dict[str, Any] | None  # a CPU copy of the starting weights, for the WiSE-FT average
    data: PreparedData
    energy: Energy
    steps_per_epoch: int
    n_evals: int
    eval_pairs: int
    checks: dict[str, list[Pair]]  # the WiSE-FT choice's checks: "dev" and each source's
    wise_candidates: list[float]
    start_metrics: dict[str, dict[str, float]]
    distractors: list[str]
    bf16: bool
    checkpoints: Path
    staging: Path
    # budget
    cross_pairs: list[Pair]
    cross_why: str
    cross_full: int
    guide: Any
    evals: int
    plan: Plan | None = None
    costs: StepCosts | None = None
    # cross_encoder
    cross_result: CrossResult | None = None
    # twin
    evaluator: Any
    trainer: Any
    total_steps: int
    deadline: Deadline | None = None
    steps: int
    pairs_per_second: float
    # select
    wise: dict[str, Any]
    # evaluate
    recorder: Any
    metrics: dict[str, Any]
    thresholds: dict[str, float]
    served: float
    cross_summary: dict[str, Any] | None
    best_step: int | None
    selection: dict[str, Any]
    # save
    phase_seconds: dict[str, float]
    budget_summary: dict[str, Any] | None

    def __init__(self, config: TrainConfig, *, start: SiameseEncoder | str | Path, output_dir: Path,
                 dev_pairs: Sequence[Pair] | None, sources: Mapping[str, Sequence[Pair]] | None,
                 parent: str | None, progress: Progress | None, should_stop: Callable[[], bool] | None,
                 show_progress_bar: bool) -> None:
        self.given = config  # as the user gave it (None = chosen here), saved in dupq.json
        self.config = config  # the run's, resolved as the phases go
        self.start = start
        self.output_dir = output_dir
        self.dev_pairs = dev_pairs
        self.sources = sources
        self.parent = parent
        self.progress = progress
        self.should_stop = should_stop
        self.show_progress_bar = show_progress_bar
        self.phases: dict[str, float] = {}

    def check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise TrainingCancelled("training stopped before it finished")

    # -- prepare: the start model, the data, the WiSE-FT checks, the folders ---------------------------------

    def prepare(self, pairs: Sequence[Pair], positive_only: Sequence[Pair] | None) -> None:
        self.t_start = time.perf_counter()
        if self.output_dir.exists():
            raise FileExistsError(f"{self.output_dir} already exists")
        self.output_dir.parent.mkdir(parents=True, exist_ok=True)

        from transformers import set_seed

        set_seed(self.config.seed)
        # (0, 0, 1) unless data-parallel (dupq.training.distributed)
        self.rank, self.local_rank, self.world = process_group()
        self.model, self.base_model_name, self.started_from = load_start(self.start)
        # A CPU copy of the starting weights for the final average (about 90 MB for MiniLM-L6), made by the rank
        # that saves the version.
        self.start_weights = (
            {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            if self.config.base_weight != 0 and self.rank == 0
            else None
        )
        self.check_stop()
        held = self._prepare_data(pairs, positive_only)
        self.phases["prepare"] = time.perf_counter() - self.t_start
        self.check_stop()
        self._plan_steps()
        self._wise_checks(held)
        self.bf16 = self.config.bf16 and bf16_supported()
        if self.config.bf16 and not self.bf16:
            log.warning("bf16 requested but this machine has no native bf16 support: training in fp32")
        # Data-parallel ranks share one checkpoint path (rank 0 saves, every rank loads the best one back); only
        # rank 0 stages the version beside its final folder, the others a scratch folder nothing reads.
        world, rank = self.world, self.rank
        self.checkpoints = Path(on_rank0(world, rank, lambda: tempfile.mkdtemp(prefix="dupq-train-")))
        self.checkpoints.mkdir(parents=True, exist_ok=True)  # a rank on another host: the same path on its disk
        self.staging = (_temp_sibling(self.output_dir) if rank == 0
                        else Path(tempfile.gettempdir()) / f"dupq-rank{rank}-{uuid.uuid4().hex[:8]}")

    def _prepare_data(self, pairs: Sequence[Pair], positive_only: Sequence[Pair] | None) -> dict[str, list[Pair]]:
        """Hold out the sources' checks, then clean, split and route the pairs (rank 0 alone; the other ranks
        receive its result); returns the held-out checks."""
        config, dev_pairs = self.config, self.dev_pairs
        # Sources without dev pairs of their own hold out a small cluster split as their check
        # (dupq.training.selection).
        held, held_questions = hold_out_sources(self.sources or {}, dev_pairs, config.seed)
        held_dropped = 0
        if held_questions:
            before = len(pairs) + len(positive_only or [])
            pairs = drop_questions(pairs, held_questions) or []
            positive_only = drop_questions(positive_only, held_questions)
            held_dropped = before - len(pairs) - len(positive_only or [])
        dev_fraction = config.dev_fraction
        if dev_fraction is None:
            dev_fraction = auto_dev_fraction(len(pairs) + len(positive_only or []))
        self.config = config = replace(config, dev_fraction=dev_fraction, epochs=config.epochs or 1.0)
        model, progress = self.model, self.progress
        # Dev negatives before the cross-encoder: it calibrates on dev too.
        self.data = on_rank0(self.world, self.rank, lambda: add_dev_negatives(
            prepare_data(pairs, dev_pairs, config, positive_only=positive_only, progress=progress), model, config))
        if held:  # what the per-source checks took out of training: their pairs and those sharing a question
            self.data.counts["source_check_pairs"] = sum(len(v) for v in held.values())
            self.data.counts["dropped_for_source_checks"] = held_dropped
        return held

    def _plan_steps(self) -> None:
        """The energy, the steps of an epoch, the epochs (auto unless given) and the dev evaluations."""
        self.energy = Energy.from_name(self.config.energy)
        # saved in the model's config, so plain ST users see it
        self.model.similarity_fn_name = self.energy.similarity_fn_name
        self.steps_per_epoch, _ = twin_steps(self.data, replace(self.config, epochs=1.0, max_steps=None), self.world)
        if self.given.epochs is None:
            self.config = replace(self.config, epochs=float(auto_epochs(self.steps_per_epoch)))
        self.n_evals = DEFAULT_EVALS if self.config.epochs <= 1 else AUTO_EVALS

    def _wise_checks(self, held: Mapping[str, Sequence[Pair]]) -> None:
        """The checks of the WiSE-FT choice (the dev sample the in-training evaluations use, and each
        source's), and the start model's numbers on them (rank 0)."""
        data, seed = self.data, self.config.seed
        self.eval_pairs = min(EVAL_MAX_PAIRS, len(data.dev))
        self.checks = {"dev": eval_sample(data.dev, seed),
                       **{k: eval_sample(v, seed) for k, v in source_checks(self.sources, data.dev, held).items()}}
        self.wise_candidates = list(WISE_CANDIDATES) if self.given.base_weight is None else []
        self.start_metrics = {}
        self.distractors = check_distractors([*data.train, *data.ranking], seed) if self.wise_candidates else []
        if self.wise_candidates and self.rank == 0:
            t0 = time.perf_counter()
            emit(self.progress, step=0, total=None, phase="evaluating")
            self.start_metrics = _check_metrics(self.model, self.checks, self.energy, self.distractors)
            self.phases["select"] = time.perf_counter() - t0

    # -- the time budget (dupq/training/budget.py): time this machine's steps, plan both phases to fit -----------

    def budget(self) -> None:
        t0 = time.perf_counter()
        config, data, progress = self.config, self.data, self.progress
        self.cross_pairs = []
        cross_wanted, self.cross_why = cross_rule(self.given.cross_encoder, len(data.labelled))
        if cross_wanted:
            if {p.label for p in data.labelled} == {0, 1} and {p.label for p in data.dev} == {0, 1}:
                self.cross_pairs = list(data.labelled)
                if config.cross_max_pairs is not None and len(self.cross_pairs) > config.cross_max_pairs:
                    self.cross_pairs = random.Random(config.seed).sample(self.cross_pairs, config.cross_max_pairs)
            else:
                self.cross_why = "not trained: it needs labelled training and dev pairs with both labels"
                log.warning("no cross-encoder: it needs labelled training and dev pairs with both labels")
        cross_full = (config.cross_max_steps or config.max_steps
                      or max(1, math.ceil(config.cross_epochs * math.ceil(
                          len(training_rows(self.cross_pairs, both_orders=config.cross_both_orders))
                          / config.batch_size))))
        self.cross_full = cross_full if self.cross_pairs else 0
        self.guide = None
        if data.ranking and config.ranking_loss == "gist":
            # Frozen: the starting model judges which in-batch negatives are false.
            self.guide = copy.deepcopy(self.model)
            self.guide.requires_grad_(False)
            self.guide.eval()
        # Dev evaluations: those during training, and after it the WiSE-FT candidates on every check.
        self.evals = self.n_evals + len(self.wise_candidates) * len(self.checks)
        if config.time_budget_minutes is not None:
            budget_s = config.time_budget_minutes * 60
            twin_full, ranking_share = twin_steps(data, config, self.world)
            if self.world > 1:
                log.warning("the time budget is not applied to data-parallel runs: each rank trains every step")
            elif not surely_fits(budget_s, cross_steps=self.cross_full, twin_steps=twin_full,
                                 batch_size=config.batch_size, dev_pairs=len(data.dev), evals=self.evals,
                                 eval_pairs=self.eval_pairs, int8_pairs=self._int8_pairs()):
                from transformers import set_seed

                emit(progress, step=0, total=None, phase="budget")
                self.costs = _probe_costs(self.model, data, self.cross_pairs, config, self.energy, self.guide,
                                          self.bf16, self.start, self.checkpoints)
                set_seed(config.seed)  # the probes drew random numbers: the run proper starts as an unprobed one
                self.plan = plan_run(self.costs, budget_s=budget_s, elapsed_s=time.perf_counter() - self.t_start,
                                     cross_steps=self.cross_full, twin_steps=twin_full,
                                     twin_ranking_share=ranking_share, dev_pairs=len(data.dev), evals=self.evals,
                                     eval_pairs=self.eval_pairs, int8_pairs=self._int8_pairs())
                log.info(self.plan.describe())
                emit(progress, step=0, total=None, phase="budget", message=self.plan.describe())
        self.phases["budget"] = time.perf_counter() - t0

    # -- the cross-encoder teacher (inside the staging folder: the version stays atomic) --------------

    def cross_encoder(self) -> None:
        t0 = time.perf_counter()
        config, plan = self.config, self.plan
        if self.cross_pairs:
            emit(self.progress, step=0, total=None, phase="cross-encoder")
            self.cross_result = train_cross_encoder(
                self.cross_pairs,
                self.data.dev,
                self.staging / CROSS_DIR,
                init=_cross_init(self.start),
                epochs=config.cross_epochs,
                both_orders=config.cross_both_orders,
                max_steps=(plan.cross_steps if plan is not None and plan.cross_steps < self.cross_full
                           else config.cross_max_steps or config.max_steps),
                batch_size=config.batch_size,
                learning_rate=config.cross_learning_rate,
                warmup_ratio=config.warmup_ratio,
                seed=config.seed,
                bf16=self.bf16,
                callbacks=relay_callbacks(self.progress, self.should_stop, phase="cross-encoder"),
                show_progress_bar=self.show_progress_bar,
                use_cpu=not has_accelerator(),
            )
        self.phases["cross_encoder"] = time.perf_counter() - t0

    # -- silver pairs: the teacher labels near neighbours of the training questions (Augmented SBERT) ---

    def silver_pairs(self) -> None:
        t0 = time.perf_counter()
        if self.config.silver_pairs > 0 and self.cross_result is not None:
            data, model, config, progress = self.data, self.model, self.config, self.progress
            folder = self.staging / CROSS_DIR
            self.data = on_rank0(self.world, self.rank, lambda: add_silver_pairs(
                data, model, config, CrossScorer.load(folder, backend="torch"), progress=progress))
        self.phases["silver"] = time.perf_counter() - t0

    # -- mined negatives, judged by the teacher ----------------------------------------------------------

    def mined_negatives(self) -> None:
        t0 = time.perf_counter()
        if self.config.negatives_per_positive > 0:
            teacher = None
            if self.cross_result is not None:
                scorer = CrossScorer.load(self.staging / CROSS_DIR, backend="torch")

                def teacher(ps: list[Pair]) -> Any:
                    return scorer.is_duplicate(scorer.score([(p.question1, p.question2) for p in ps], batch_size=64))

            data, model, config, progress = self.data, self.model, self.config, self.progress
            self.data = on_rank0(self.world, self.rank, lambda: add_mined_negatives(data, model, config,
                                                                                    teacher=teacher,
                                                                                    progress=progress))
        self.phases["mining"] = time.perf_counter() - t0

    # -- the twin: contrastive loss on the labelled pairs, ranking loss on the positive-only ones -------

    def twin(self) -> bool:
        """Train the twin and load its best checkpoint back; False on a data-parallel rank other than 0 (after
        the barrier), whose part ends here."""
        t0 = time.perf_counter()
        config, data, progress = self.config, self.data, self.progress
        datasets, losses = twin_datasets(self.model, data, config, self.energy, self.guide)
        twin_full, ranking_share = twin_steps(data, config, self.world)
        max_steps = config.max_steps
        if self.plan is not None and self.costs is not None:  # plan the twin again from the time actually left
            max_steps = self._replan_twin(twin_full, ranking_share)
        self.total_steps = total_steps = max_steps or twin_full
        eval_steps = config.eval_steps or max(1, math.ceil(total_steps / self.n_evals))
        self.evaluator = dev_evaluator(data.dev, self.energy, config.seed, progress)
        from transformers import EarlyStoppingCallback

        # Stop when dev AP has not improved for PATIENCE evaluations; the best checkpoint is loaded at the end.
        stopper = EarlyStoppingCallback(early_stopping_patience=PATIENCE)
        deadline = self.deadline
        self.trainer = trainer = twin_trainer(
            self.model, datasets, losses, config, output_dir=self.checkpoints, max_steps=max_steps,
            total_steps=total_steps, bf16=self.bf16, world=self.world, evaluator=self.evaluator,
            eval_steps=eval_steps,
            callbacks=[*relay_callbacks(progress, self.should_stop), stopper,
                       *([deadline.callback] if deadline is not None else [])],
            show_progress_bar=self.show_progress_bar)
        t_train = time.perf_counter()
        trainer.train()
        if deadline is not None and deadline.stopped_at is not None:
            note = (f"time budget: the twin's steps ran slower than predicted, so it stopped at step "
                    f"{deadline.stopped_at} of {total_steps} to keep the budget")
            log.info(note)  # the CLI prints it from the progress event (a warning would print it twice)
            emit(progress, step=deadline.stopped_at, total=total_steps, phase="budget", message=note)
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()  # every rank has loaded the best checkpoint back before its folder goes
            if self.rank != 0:
                return False  # rank 0 averages, evaluates, calibrates and saves the version
        # Mixed precision leaves model.forward wrapped in autocast; drop it so the dev metrics and thresholds
        # below are measured in fp32, as the saved model is loaded and served.
        self.model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
        train_seconds = time.perf_counter() - t_train - self.evaluator.seconds
        self.steps = trainer.state.global_step
        self.pairs_per_second = (self.steps * config.batch_size * self.world / train_seconds
                                 if train_seconds > 0 else 0.0)
        self.phases["twin"] = time.perf_counter() - t0
        return True

    def _replan_twin(self, twin_full: int, ranking_share: float) -> int | None:
        """The twin's plan made again from the time actually left (the cross-encoder's real seconds), and the
        deadline that bounds it; returns the twin's max_steps."""
        plan, costs, config = self.plan, self.costs, self.config
        assert plan is not None and costs is not None
        dev_pairs = len(self.data.dev)
        predicted_cross = plan.cross_steps * costs.cross + costs.score_seconds(dev_pairs)
        planned = plan.twin_steps
        self.plan = plan = plan_twin(plan, costs, elapsed_s=time.perf_counter() - self.t_start, twin_steps=twin_full,
                                     twin_ranking_share=ranking_share, dev_pairs=dev_pairs, evals=self.evals,
                                     eval_pairs=self.eval_pairs, int8_pairs=self._int8_pairs(),
                                     int8_cross=self.cross_result is not None)
        if plan.twin_steps != planned:
            note = (f"time budget: the cross-encoder took {self.phases['cross_encoder']:.0f} s (predicted "
                    f"{predicted_cross:.0f} s), so the twin trains {plan.twin_steps} of {twin_full} steps")
            log.info(note)
            emit(self.progress, step=0, total=None, phase="budget", message=note)
        max_steps = plan.twin_steps if plan.twin_steps < twin_full else config.max_steps
        # The plan is a forecast; the budget is a bound: if the twin's steps run slower than the probe said
        # (18% slower in one measured run, docs/benchmarks.md), stop it while the final evaluation still fits.
        self.deadline = Deadline(self.t_start + plan.budget_s
                                 - reserve_after_twin(costs, dev_pairs=dev_pairs, eval_pairs=self.eval_pairs,
                                                      extra_evals=len(self.wise_candidates) * len(self.checks),
                                                      int8_pairs=self._int8_pairs(),
                                                      int8_cross=self.cross_result is not None))
        return max_steps

    # -- the WiSE-FT weight: each candidate evaluated on the checks (no retraining), the rule picks one ---------

    def select(self) -> None:
        t0 = time.perf_counter()
        model, start_weights = self.model, self.start_weights
        wise: dict[str, Any] = {"auto": bool(self.wise_candidates), "start": self.start_metrics,
                                "checks": {k: len(v) for k, v in self.checks.items()},
                                "distractors": len(self.distractors)}
        base_weight = self.given.base_weight or 0.0
        if self.wise_candidates and start_weights is not None:
            emit(self.progress, step=self.steps, total=None, phase="evaluating")
            tuned = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            candidates = []
            for w in self.wise_candidates:
                if w:
                    average_weights(model, start_weights, w)
                candidates.append({"base_weight": w,
                                   "checks": _check_metrics(model, self.checks, self.energy, self.distractors)})
                if w:
                    model.load_state_dict(tuned)
            del tuned
            chosen, wise["reason"] = choose_base_weight(candidates, self.start_metrics)
            base_weight = float(chosen["base_weight"])
            wise["candidates"] = candidates
        else:
            wise["reason"] = f"base_weight={base_weight:g} given"
        wise["chosen"] = base_weight
        if base_weight and start_weights is not None:
            average_weights(model, start_weights, base_weight)
        self.wise = wise
        self.config = replace(self.config, base_weight=base_weight)
        self.phases["select"] = self.phases.get("select", 0.0) + time.perf_counter() - t0

    # -- the final evaluation: dev numbers and thresholds on every dev pair, the re-ranker kept or not -----------

    def evaluate(self) -> None:
        t0 = time.perf_counter()
        config, data, energy, given = self.config, self.data, self.energy, self.given
        emit(self.progress, step=self.steps, total=self.steps, phase="evaluating")
        # The recorder keeps the dev vectors, so the (score, label) sample for the plots costs no second encoding.
        from dupq.evaluation.plots import PairScoreRecorder

        self.recorder = recorder = PairScoreRecorder(encode_fn(self.model, energy))
        dev_result = evaluate_encoder(recorder, data.dev, energy=energy)
        twin_scores = np.asarray(recorder.scores(data.dev, config.energy), dtype=np.float64)
        labels = [p.label for p in data.dev]
        hib = energy.higher_is_better
        self.thresholds = {objective: calibrate_threshold(twin_scores, labels, higher_is_better=hib,
                                                          objective=objective)
                           for objective in ("f1", "accuracy")}
        self.served = served = calibrate_threshold(twin_scores, labels, higher_is_better=hib,
                                                   objective=config.threshold_policy)
        dev_result["pairs"] = pair_metrics(twin_scores, labels, higher_is_better=hib, threshold=served)
        self.metrics = {"dev": dev_result}
        reranker = self._reranker(twin_scores)
        self.cross_summary = self.cross_result.summary() if self.cross_result is not None else None
        self.best_step = best_step = _best_step(self.trainer.state.best_model_checkpoint)
        at_served = dev_result["pairs"]
        total_steps, steps_per_epoch = self.total_steps, self.steps_per_epoch
        self.selection = {
            "rule": SELECTION_RULE,
            "dev": {"pairs": len(data.dev), "given": self.dev_pairs is not None,
                    "dev_fraction": None if self.dev_pairs is not None else config.dev_fraction},
            "steps": {"epochs": config.epochs, "auto": given.epochs is None, "steps_per_epoch": steps_per_epoch,
                      "planned": total_steps, "trained": self.steps, "best_step": best_step,
                      "stopped_early": bool(stopper_stopped(self.trainer, total_steps, self.deadline)),
                      "evaluations": len(self.evaluator.history), "patience": PATIENCE,
                      "reason": (f"{config.epochs:g} epoch(s) of {steps_per_epoch} steps "
                                 + ("(auto: at least 300 steps, at most 40 epochs)" if given.epochs is None
                                    else "(given)") + f"; best dev AP at step {best_step}")},
            "base_weight": self.wise,
            "reranker": reranker,
            "threshold": {"policy": config.threshold_policy, "threshold": served,
                          "precision": at_served["precision"], "recall": at_served["recall"],
                          "f1": at_served["f1"]},
        }
        self.phases["evaluate"] = time.perf_counter() - t0

    def _reranker(self, twin_scores: np.ndarray) -> dict[str, Any]:
        """Whether the version keeps its cross-encoder: the re-ranking score (cross-encoder logit + twin score,
        dupq/models/fusion.py) judged out of fold on dev; kept, its fusion is fitted and saved, else the
        cross-encoder is removed from the staging folder."""
        result, data, folder = self.cross_result, self.data, self.staging / CROSS_DIR
        reranker: dict[str, Any] = {"trained": result is not None, "kept": False, "reason": self.cross_why}
        if result is not None:
            logits = _dev_logits(result, data.dev, folder)
            oof = out_of_fold(twin_scores, logits, data.dev, higher_is_better=self.energy.higher_is_better,
                              seed=self.config.seed)
            keep, reranker["reason"] = keep_reranker(self.given.cross_encoder, oof)
            reranker.update(kept=keep, out_of_fold=oof, cross_summary=result.summary())
            if keep:
                result.fusion = _fit_fusion(logits, twin_scores, data.dev, self.energy, folder,
                                            self.config.threshold_policy)
            else:  # the version has no re-ranker: dupq.json's selection says why
                shutil.rmtree(folder, ignore_errors=True)
                self.cross_result = None
        return reranker

    # -- the refit: the chosen recipe trained again on train + dev (small data only) ----------------------------

    def refit(self) -> None:
        """Train the twin again from the starting weights on train + the labelled dev pairs, with the selection
        run's schedule scaled to the larger data and stopped at the best checkpoint's share of it, then average
        it with the chosen WiSE-FT weight (:func:`dupq.training.selection.refit_rule` says when). The dev
        metrics, the threshold and the re-ranker decision stay the selection run's: the refit has seen dev."""
        t0 = time.perf_counter()
        config, data = self.config, self.data
        mined = data.counts.get("dev_mined_negatives", 0)  # dev negatives dupq mined itself: not labels
        dev_labelled = list(data.dev[:len(data.dev) - mined])
        refit_data = replace(data, train=[*data.train, *dev_labelled], labelled=[*data.labelled, *dev_labelled])
        per_epoch, _ = twin_steps(refit_data, replace(config, epochs=1.0, max_steps=None), 1)
        scale = per_epoch / max(self.steps_per_epoch, 1)
        planned = max(1, math.ceil(self.total_steps * scale))
        best = self.best_step or self.steps
        stop = max(1, min(planned, round(best * scale)))
        wanted, why = refit_rule(self.given.refit, labelled_pairs=len(data.labelled) + len(dev_labelled),
                                 dev_given=self.dev_pairs is not None, world=self.world,
                                 reranker_kept=self.cross_result is not None,
                                 budget_bound=self._budget_binds(stop))
        record: dict[str, Any] = {"done": False, "reason": why}
        if wanted and best and dev_labelled:
            emit(self.progress, step=0, total=None, phase="refit")
            model, _, _ = load_start(self.start)
            model.similarity_fn_name = self.energy.similarity_fn_name
            datasets, losses = twin_datasets(model, refit_data, config, self.energy, self.guide)
            trainer = twin_trainer(
                model, datasets, losses, config, output_dir=self.checkpoints / "refit", max_steps=planned,
                total_steps=planned, bf16=self.bf16, world=1, evaluator=None, eval_steps=None,
                callbacks=[*relay_callbacks(self.progress, self.should_stop, phase="refit"), stop_at_callback(stop)],
                show_progress_bar=self.show_progress_bar)
            trainer.train()
            model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
            if config.base_weight and self.start_weights is not None:
                average_weights(model, self.start_weights, config.base_weight)
            self.model = model
            record.update(done=True, pairs=len(refit_data.train), dev_pairs_added=len(dev_labelled),
                          steps=trainer.state.global_step, planned=planned, base_weight=config.base_weight)
        self.selection["refit"] = record
        self.phases["refit"] = time.perf_counter() - t0

    def _budget_binds(self, refit_steps: int) -> bool:
        """Whether the time budget leaves no room for a refit of ``refit_steps`` twin steps: it cut the plan,
        stopped the twin, or the measured step cost says the refit would not fit the time left."""
        plan, costs = self.plan, self.costs
        if plan is None or costs is None:
            return False  # no budget, or the run surely fitted it at pessimistic step costs
        if plan.cut or (self.deadline is not None and self.deadline.stopped_at is not None):
            return True
        left = plan.budget_s - (time.perf_counter() - self.t_start)
        return refit_steps * costs.twin > left

    # -- the atomic save: the version folder appears complete or not at all -------------------------------------

    def save(self) -> None:
        config, data, trainer = self.config, self.data, self.trainer
        self.phases["total"] = time.perf_counter() - self.t_start
        self.phase_seconds = {k: round(v, 1) for k, v in self.phases.items()}
        self.budget_summary = None
        if self.plan is not None:
            deadline = self.deadline
            self.budget_summary = {**self.plan.to_dict(), "actual_s": round(self.phases["total"], 1),
                                   "twin_stopped_at": deadline.stopped_at if deadline is not None else None}
        encoder = SiameseEncoder(
            self.model,
            energy=self.energy,
            threshold=self.served,
            base_model=self.base_model_name,
            metadata={
                "loss": config.loss,
                "margin": config.margin,
                "ranking_loss": config.ranking_loss if data.ranking else None,
                "thresholds": self.thresholds,
                "threshold_objective": "f1" if config.threshold_policy == "max_f1" else config.threshold_policy,
                "threshold_policy": config.threshold_policy,
                "training": self.given.to_dict(),
                "selection": self.selection,
                "data": data.counts,
                "metrics": self.metrics,
                "history": self.evaluator.history,
                # For the admin page's and `dupq eval --report`'s plots (dupq/evaluation/plots.py).
                "loss_history": [
                    {"step": int(e["step"]), "loss": round(float(e["loss"]), 5)}
                    for e in trainer.state.log_history
                    if "loss" in e and "step" in e
                ],
                "dev_scores": self.recorder.sample(data.dev, config.energy, seed=config.seed),
                "best_step": self.best_step,
                "steps": self.steps,
                "processes": self.world,
                "global_batch_size": config.batch_size * self.world,
                "precision": "bf16" if self.bf16 else "fp32",
                "parent": self.parent,
                "started_from": self.started_from,
                "cross": self.cross_summary,
                "phase_seconds": self.phase_seconds,
                "budget": self.budget_summary,
                "seconds": round(time.perf_counter() - self.t_start, 1),
                "pairs_per_second": round(self.pairs_per_second, 2),
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )
        self.check_stop()
        encoder.save(self.staging)
        if config.int8:
            self.int8()
        os.rename(self.staging, self.output_dir)  # atomic: the version appears complete or not at all

    def _int8_pairs(self) -> int:
        """Dev pairs the int8 check after training will score (0: none), for the time budget."""
        from dupq.config import INT8_CHECK_MAX_PAIRS, INT8_MIN_DEV_PAIRS

        dev = len(self.data.dev)
        return min(dev, INT8_CHECK_MAX_PAIRS) if self.config.int8 and dev >= INT8_MIN_DEV_PAIRS else 0

    def int8(self) -> None:
        """The int8 check in the staging folder (:func:`dupq.training.quantize.quantize_version`): the version's
        int8 export, calibrated on its own training questions, scored against fp32 on its dev pairs (a seeded
        sample of :data:`dupq.config.INT8_CHECK_MAX_PAIRS` of them at most). A failure here never fails the
        training: the version then serves in float, and dupq.json says why."""
        from dupq.config import INT8_CHECK_MAX_PAIRS, INT8_MIN_DEV_PAIRS
        from dupq.training.quantize import _write_record, quantize_version

        dev = list(self.data.dev)
        if len(dev) < INT8_MIN_DEV_PAIRS:
            _write_record(self.staging, {"decision": "float", "reason": (
                f"not checked: {len(dev)} dev pairs are too few to see a 0.3-point change (at least "
                f"{INT8_MIN_DEV_PAIRS}); dupq models quantize VERSION --pairs FILE checks it on more")})
            return
        if len(dev) > INT8_CHECK_MAX_PAIRS:
            sample = random.Random(self.config.seed).sample(dev, INT8_CHECK_MAX_PAIRS)
            dev = sample if {p.label for p in sample} == {0, 1} else dev
        emit(self.progress, step=self.steps, total=self.steps, phase="int8")
        texts = [q for p in self.data.train + self.data.ranking for q in (p.question1, p.question2)]
        name = "the run's dev pairs" if len(dev) == len(self.data.dev) else (
            f"a seeded sample of {len(dev)} of the run's {len(self.data.dev)} dev pairs")
        try:
            quantize_version(self.staging, dev, texts, dev_name=name,
                             calibration_pairs=[(p.question1, p.question2) for p in self.data.train])
        except Exception as e:  # noqa: BLE001 - quantisation is an optimisation; the version stands without it
            log.warning("int8 check failed; the version serves in float: %s", e)
            _write_record(self.staging, {"decision": "float", "reason": f"quantisation failed: {e}"})

    def clean_up(self) -> None:
        """After success, failure or cancellation: the scratch folders (a failed rank 0's staging folder is
        removed by :func:`train`)."""
        if self.rank != 0:
            shutil.rmtree(self.staging, ignore_errors=True)
        if self.local_rank == 0:  # one rank per node removes the shared checkpoint folder
            shutil.rmtree(self.checkpoints, ignore_errors=True)

    def result(self) -> TrainResult:
        return TrainResult(
            version=self.output_dir.name,
            path=self.output_dir,
            metrics=self.metrics,
            thresholds=self.thresholds,
            counts=self.data.counts,
            seconds=time.perf_counter() - self.t_start,
            pairs_per_second=self.pairs_per_second,
            history=self.evaluator.history,
            cross=self.cross_summary,
            phase_seconds=self.phase_seconds,
            budget=self.budget_summary,
            selection=self.selection,
        )


def _pair_length(p: Pair) -> int:  # what the cross-encoder's sampler groups by
    return len(p.question1) + len(p.question2)


def _probe_costs(model: Any, data: PreparedData, cross_pairs: Sequence[Pair], config: TrainConfig, energy: Energy,
                 guide: Any, bf16: bool, start: SiameseEncoder | str | Path, scratch: Path) -> StepCosts:
    """Time two passes of :data:`dupq.training.budget.PROBE_BANDS` real optimiser steps of each model on this machine
    (throwaway copies of the models, on batches as wide as the run's own: :func:`dupq.training.budget.probe_rows`);
    nothing of it reaches the version."""
    t0 = time.perf_counter()
    batch = config.batch_size

    def pair_texts(p: Pair) -> tuple[str, str]:  # the twin's samplers refuse a repeated text inside a batch
        return p.question1, p.question2

    # The ranking loss's parts are separate datasets (one domain per batch): each gets its share of the bands,
    # so that no probe batch is a part's small remainder.
    parts = ranking_parts(data)
    total = sum(len(v) for v in parts.values())
    ranking_rows = [r for part in parts.values() for r in probe_rows(
        part, batch, row_length, bands=max(1, round(PROBE_BANDS * len(part) / total)), seed=config.seed,
        texts=pair_texts)]
    probe = replace(data, train=probe_rows(data.train, batch, row_length, seed=config.seed, texts=pair_texts),
                    ranking=ranking_rows)
    folder = Path(tempfile.mkdtemp(prefix="probe-", dir=scratch))
    try:
        twin = ranking = 0.0
        for kind in ("train", "ranking"):
            rows = getattr(probe, kind)
            if not rows:
                continue
            only = replace(probe, train=rows if kind == "train" else [], ranking=rows if kind == "ranking" else [])
            copy_ = copy.deepcopy(model)
            datasets, losses = twin_datasets(copy_, only, config, energy, guide)
            timer = StepTimer()
            per_pass = max(1, math.ceil(len(rows) / batch))  # batches in one pass over the probe's rows
            twin_trainer(copy_, datasets, losses, config, output_dir=folder / kind, max_steps=2 * per_pass,
                          total_steps=2 * per_pass, bf16=bf16, world=1, evaluator=None, eval_steps=None,
                          callbacks=[timer.callback], show_progress_bar=False).train()
            seconds = timer.seconds_per_step(last=per_pass)  # the second pass; the first warmed up
            twin, ranking = (seconds, ranking) if kind == "train" else (twin, seconds)
            del copy_, datasets, losses
        twin, ranking = twin or ranking, ranking or twin
        cross = 0.0
        if cross_pairs:
            cross = cross_step_seconds(probe_rows(cross_pairs, batch, _pair_length, seed=config.seed),
                                       init=_cross_init(start),
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


def _best_step(checkpoint: str | None) -> int | None:
    if not checkpoint:
        return None
    try:
        return int(checkpoint.rsplit("-", 1)[-1])
    except ValueError:
        return None

