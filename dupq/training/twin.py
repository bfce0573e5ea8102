"""The twin encoder's trainer: datasets and losses, the dev evaluator, callbacks and WiSE-FT weight averaging."""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dupq.data import Pair
from dupq.evaluation import evaluate_encoder
from dupq.models.encoder import (
    BASE_MODEL_NAME,
    PACKAGED,
    SiameseEncoder,
    load_sentence_transformer,
    packaged_model_path,
)
from dupq.models.energy import Energy
from dupq.training.config import Progress, TrainConfig, TrainingCancelled
from dupq.training.cross import common_args
from dupq.training.data import PreparedData, ranking_parts
from dupq.training.hardware import has_accelerator
from dupq.training.losses import build_loss, build_ranking_loss
from dupq.training.progress import emit
from dupq.training.samplers import LengthGroupedNoDuplicatesBatchSampler

#: In-training dev evaluations (checkpoint selection) use at most this many dev pairs, a fixed random sample,
#: to keep them cheap on a CPU; threshold calibration and the reported dev metrics use every dev pair.
EVAL_MAX_PAIRS = 2000


#: Dev evaluations per run when ``eval_steps`` is None (the last step is always evaluated too).
DEFAULT_EVALS = 4


def encode_fn(model: Any, energy: Energy, batch_size: int = 64) -> Callable[[list[str]], np.ndarray]:
    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            show_progress_bar=False,
            normalize_embeddings=energy.normalize,
        )

    return encode


def flat_metrics(result: dict[str, dict[str, Any]]) -> dict[str, float]:
    p, r = result["pairs"], result["retrieval"]
    return {
        "ap": p["ap"],
        "best_f1": p["best_f1"],
        "best_accuracy": p["best_accuracy"],
        "mrr@10": r["mrr@10"],
        "ndcg@10": r["ndcg@10"],
        "recall@1": r["recall@1"],
        "recall@10": r["recall@10"],
    }


def eval_sample(pairs: Sequence[Pair], seed: int) -> list[Pair]:
    """The fixed sample of at most :data:`EVAL_MAX_PAIRS` pairs that in-training evaluations score (seeded)."""
    sample = list(pairs)
    if len(sample) > EVAL_MAX_PAIRS:
        sample = random.Random(seed).sample(sample, EVAL_MAX_PAIRS)
    return sample


def dev_evaluator(dev: Sequence[Pair], energy: Energy, seed: int, progress: Progress | None) -> Any:
    """A sentence-transformers evaluator (pair AP first) over a fixed sample of the dev pairs."""
    from sentence_transformers.sentence_transformer.evaluation import BaseEvaluator

    sample = eval_sample(dev, seed)

    class DevEvaluator(BaseEvaluator):
        """Pair AP (the checkpoint-selection metric) plus retrieval metrics, through dupq.evaluation.

        The library's BinaryClassificationEvaluator needs scikit-learn and has no retrieval view, and its
        InformationRetrievalEvaluator cannot exclude a query from its own corpus, so this one reuses
        dupq.evaluation (the same code that reports dev metrics).
        """

        def __init__(self) -> None:
            super().__init__()
            self.primary_metric = "ap"
            self.seconds = 0.0
            self.history: list[dict[str, Any]] = []

        def __call__(self, model: Any, output_path: str | None = None, epoch: float = -1, steps: int = -1):
            t0 = time.perf_counter()
            emit(progress, step=steps, total=None, epoch=epoch, phase="evaluating")
            metrics = flat_metrics(evaluate_encoder(encode_fn(model, energy), sample, energy=energy))
            self.history.append({"step": steps, "epoch": epoch, **metrics})
            self.seconds += time.perf_counter() - t0
            return self.prefix_name_to_metrics(metrics, "dev")

    return DevEvaluator()


def load_start(start: SiameseEncoder | str | Path) -> tuple[Any, str, str]:
    """A private (uncached) copy of the starting model, its base-model name and a description of it."""
    if isinstance(start, SiameseEncoder):
        # The encoder's module may be the instance the service serves from: train a deep copy, never it.
        return copy.deepcopy(start.model), start.base_model, "encoder"
    folder = Path(start)
    if (folder / "dupq.json").is_file():
        meta = SiameseEncoder.read_config(folder)
        weights = meta.get("weights", ".")
        src = packaged_model_path() if weights == PACKAGED else str(folder / weights)
        return load_sentence_transformer(src, cached=False), meta.get("base_model", BASE_MODEL_NAME), str(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder")
    return load_sentence_transformer(str(folder), cached=False), str(folder), str(folder)


def relay_callbacks(
    progress: Progress | None, should_stop: Callable[[], bool] | None, phase: str = "training"
) -> list[Any]:
    from transformers import TrainerCallback

    class Relay(TrainerCallback):
        """Forwards step/loss to ``progress`` and polls ``should_stop`` after every optimiser step."""

        def __init__(self) -> None:
            self.loss: float | None = None

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any):
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any):
            emit(progress, step=state.global_step, total=state.max_steps, loss=self.loss, epoch=state.epoch,
                  phase=phase)
            if should_stop is not None and should_stop():
                # Raising unwinds trainer.train() at once; train() then removes every temporary folder.
                raise TrainingCancelled(f"training stopped at step {state.global_step}")

    return [Relay()]


def average_weights(model: Any, start: Mapping[str, Any], base_weight: float) -> None:
    """Replace ``model``'s weights by ``(1 - base_weight) * fine-tuned + base_weight * start``, in place.

    This is WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): interpolating the
    fine-tuned weights with the ones training started from keeps most of the in-domain gain and gives back
    most of what fine-tuning forgot out of domain (docs/benchmarks.md). Non-float buffers are kept as they are.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1)
        >>> start = {k: v.clone() for k, v in model.state_dict().items()}
        >>> with torch.no_grad():
        ...     _ = model.weight.add_(1.0)  # stands for fine-tuning
        >>> average_weights(model, start, 0.25)
        >>> bool(torch.allclose(model.weight, start["weight"] + 0.75))
        True
    """
    if not 0.0 <= base_weight < 1.0:
        raise ValueError(f"base_weight must be >= 0 and < 1, got {base_weight}")
    state = model.state_dict()
    missing = sorted(set(state) - set(start))
    if missing:
        raise ValueError(f"the starting weights lack {len(missing)} tensor(s), e.g. {missing[0]}")
    merged = {
        k: (1 - base_weight) * v + base_weight * start[k].to(device=v.device, dtype=v.dtype)
        if v.is_floating_point()
        else v
        for k, v in state.items()
    }
    model.load_state_dict(merged)


def twin_steps(data: PreparedData, config: TrainConfig, world: int) -> tuple[int, float]:
    """The twin's optimiser steps (every rank takes ``batch_size`` pairs per step) and the ranking-loss share."""
    contrastive = math.ceil(len(data.train) / config.batch_size)
    ranking = sum(math.ceil(len(part) / config.batch_size) for part in ranking_parts(data).values())
    steps_per_epoch = math.ceil((contrastive + ranking) / world)
    total = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    return total, ranking / (contrastive + ranking) if contrastive + ranking else 0.0


def twin_datasets(model: Any, data: PreparedData, config: TrainConfig, energy: Energy,
                   guide: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The twin's training datasets and their losses: contrastive on the labelled pairs, ranking on the rest."""
    from datasets import Dataset

    datasets: dict[str, Any] = {}
    losses: dict[str, Any] = {}
    if data.train:
        datasets["labelled"] = Dataset.from_dict(
            {
                "sentence1": [p.question1 for p in data.train],
                "sentence2": [p.question2 for p in data.train],
                "label": [p.label for p in data.train],
            }
        )
        losses["labelled"] = build_loss(
            model, loss=config.loss, energy=energy, margin=config.margin, ranking_weight=config.ranking_weight
        )
    if data.ranking:
        ranking_loss = build_ranking_loss(model, config.ranking_loss, guide=guide)
        # Positive-only pairs and labelled duplicates are separate datasets, so that each batch's in-batch
        # negatives come from one domain (a labelled domain's own questions, not QQP's).
        for name, part in ranking_parts(data).items():
            datasets[name] = Dataset.from_dict(
                {"anchor": [p.question1 for p in part], "positive": [p.question2 for p in part]}
            )
            losses[name] = ranking_loss
    return datasets, losses


def twin_trainer(model: Any, datasets: dict[str, Any], losses: dict[str, Any], config: TrainConfig, *,
                  output_dir: Path, max_steps: int | None, total_steps: int, bf16: bool, world: int,
                  evaluator: Any, eval_steps: int | None, callbacks: Sequence[Any], show_progress_bar: bool) -> Any:
    """The twin's SentenceTransformerTrainer (``total_steps``: what ``max_steps`` or the epochs come to); with
    ``evaluator=None`` (a probe) it neither evaluates nor saves."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import PrinterCallback

    checkpointing: dict[str, Any] = (
        {
            "eval_strategy": "steps",
            "eval_steps": eval_steps,
            "save_strategy": "steps",
            "save_steps": eval_steps,
            "save_total_limit": 1,  # with load_best_model_at_end the best checkpoint is kept as well
            "save_only_model": True,  # no optimizer state: 3x smaller checkpoints, and we never resume
            "load_best_model_at_end": True,
            "metric_for_best_model": "eval_dev_ap",
            "greater_is_better": True,
        }
        if evaluator is not None
        else {"eval_strategy": "no", "save_strategy": "no"}
    )
    if world > 1:
        import torch.distributed as dist

        # Data-parallel: the launcher's process group (gloo on CPUs, NCCL on GPUs); each node's first rank
        # saves checkpoints on its own disk, so every rank can load the best one back.
        checkpointing.update(ddp_backend=str(dist.get_backend()), save_on_each_node=True)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        **common_args(epochs=config.epochs, max_steps=max_steps, total_steps=total_steps,
                      batch_size=config.batch_size, learning_rate=config.learning_rate,
                      warmup_ratio=config.warmup_ratio, seed=config.seed, bf16=bf16,
                      show_progress_bar=show_progress_bar, use_cpu=not has_accelerator()),
        # No text twice in a batch (BatchSamplers.NO_DUPLICATES), with batches grouped by length; with two
        # datasets each batch comes from one of them, drawn in proportion to their sizes.
        batch_sampler=LengthGroupedNoDuplicatesBatchSampler,
        multi_dataset_batch_sampler="proportional",
        **checkpointing,
    )
    single = len(datasets) == 1
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=next(iter(datasets.values())) if single else datasets,
        loss=next(iter(losses.values())) if single else losses,
        evaluator=evaluator,
        callbacks=list(callbacks),
    )
    if not show_progress_bar:
        trainer.remove_callback(PrinterCallback)  # it would print every log dict to stdout
    return trainer


def stop_at_callback(step: int) -> Any:
    """A trainer callback that ends training after optimiser step ``step``, leaving the learning-rate schedule
    as planned for ``max_steps`` (the refit stops where the selection run's best checkpoint was, on the same
    schedule)."""
    from transformers import TrainerCallback

    class _StopAt(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step >= step:
                control.should_training_stop = True

    return _StopAt()


def row_length(p: Pair) -> int:  # what the twin's sampler groups by
    return max(len(p.question1), len(p.question2))
