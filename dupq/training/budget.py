"""Fit a training run into a wall-time budget (``TrainConfig.time_budget_minutes``).

The recipe's sizes are fixed (every labelled pair through the cross-encoder, 10,000 positive-only pairs
through the twin's ranking loss), so its wall time is the machine's: the recommended command took 28 min on a
2-core AVX512-BF16 CPU and 55 min on a 2-core AVX2-only one, in fp32 (docs/benchmarks.md). With a budget,
:func:`dupq.training.recipe.train` first times a few real optimiser steps of each model on this machine (the
trainers themselves, on batches as wide as the run's own: :class:`StepTimer`, :func:`probe_rows`), predicts
the run (:func:`plan_run`), and when it would not fit trains fewer steps: the cross-encoder gives way first,
down to :data:`MIN_CROSS_SHARE` of its steps (it adds about one AP point, through the fused re-ranking score;
the twin is the headline model), then both shrink together. After the cross-encoder the twin is planned again
from the time actually left (:func:`plan_twin`), so a misprediction of the first phase is not carried into
the second. The plan is a forecast and the budget a bound: when the twin's steps run slower than its probe
said, a :class:`Deadline` stops it early, keeping the time the final evaluation and the int8 check need
(:func:`reserve_after_twin`, :meth:`StepCosts.int8_seconds`): the budget bounds the whole ``train()`` call,
the int8 check after the save included. A run that fits at any plausible speed (:func:`surely_fits`) is not
probed at all.

Example:
    >>> costs = StepCosts(cross=1.0, twin=1.2, ranking=1.5, batch_size=32)
    >>> plan = plan_run(costs, budget_s=900, elapsed_s=0, cross_steps=300, twin_steps=400,
    ...                 twin_ranking_share=0.25, dev_pairs=1000)
    >>> plan.cut, plan.cross_steps < 300, plan.twin_steps <= 400
    (True, True, True)
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from dupq.errors import ValidationError

__all__ = [
    "MIN_CROSS_SHARE",
    "BudgetError",
    "Deadline",
    "Plan",
    "StepCosts",
    "StepTimer",
    "plan_run",
    "plan_twin",
    "probe_rows",
    "reserve_after_twin",
    "surely_fits",
]

#: The cross-encoder keeps at least this share of its steps before the twin is cut (20,000 of the ~34,000
#: labelled pairs gave cross-encoder dev AP 0.792 against 0.809 for all of them: docs/benchmarks.md).
MIN_CROSS_SHARE = 0.5
#: Seconds per training pair no CPU this runs on is expected to exceed (fp32 on a 2-core AVX2 CPU: 0.04;
#: batch 32 twin step 1.32 s): a run within the budget even at this speed is not probed.
PESSIMISTIC_PAIR_SECONDS = 0.2
#: Loading, checkpoint saves, the final save and the fusion fit: not steps, not evaluation (a few seconds each).
FIXED_SECONDS = 30.0
#: Width bands a probe times, one batch each: the run's batch widths (a batch is padded to its longest row) are
#: sorted and cut into this many equal bands, and each band is probed at its mean width (:func:`probe_rows`).
PROBE_BANDS = 5
#: Optimiser steps per probe: two passes over the bands; the first warms up (allocation, kernel selection), the
#: second is timed (:meth:`StepTimer.seconds_per_step`).
PROBE_STEPS = 2 * PROBE_BANDS
#: A forward pass costs about a third of a training step (the backward pass is about twice the forward).
FORWARD_SHARE = 1 / 3
#: The int8 check of one model (dupq.training.quantize): its export and quantisation (seconds), then its dev
#: pairs scored in fp32 and in int8, in forward passes of the torch model. Rounded up from measured checks: on the
#: emulated AVX2 CPU, 4,000 dev pairs, twin 76 s and re-ranker 84 s; on the AVX512-BF16 CPU, 7,901 pairs, 57 s
#: and 49 s (docs/benchmarks.md). OpenVINO's fp32 pass costs about a torch forward pass, its int8 one less, and
#: the re-ranker's fused check also runs the twin.
INT8_FIXED_SECONDS = 25.0
INT8_TWIN_PASSES = 1.5
INT8_CROSS_PASSES = 2.0


class BudgetError(ValidationError, ValueError):
    """The time budget cannot fit even a minimal run of this data on this machine."""

    code = "time_budget_too_short"


@dataclass(frozen=True)
class StepCosts:
    """Seconds per optimiser step on this machine, measured by the probes.

    Attributes:
        cross: One cross-encoder step (``batch_size`` pairs, concatenated).
        twin: One twin step on labelled pairs (contrastive loss, both columns).
        ranking: One twin step on positive-only pairs (the ranking loss; GIST also runs its guide).
        batch_size: Pairs per step the costs were measured at.
        probe_seconds: Wall time the probes took.
    """

    cross: float
    twin: float
    ranking: float
    batch_size: int
    probe_seconds: float = 0.0

    def twin_step(self, ranking_share: float) -> float:
        """Predicted seconds of an average twin step when ``ranking_share`` of the steps are ranking-loss ones."""
        return (1 - ranking_share) * self.twin + ranking_share * self.ranking

    def encode_seconds(self, texts: int) -> float:
        """Predicted seconds to embed ``texts`` questions with the twin (forward only)."""
        return texts * self.twin * FORWARD_SHARE / (2 * self.batch_size)

    def score_seconds(self, pairs: int) -> float:
        """Predicted seconds to score ``pairs`` pairs with the cross-encoder (forward only)."""
        return pairs * self.cross * FORWARD_SHARE / self.batch_size

    def int8_seconds(self, pairs: int, *, cross: bool) -> float:
        """Predicted seconds of the int8 check after training on ``pairs`` dev pairs (0: no check), the
        re-ranker's included when ``cross``.

        Example:
            >>> costs = StepCosts(cross=0.8, twin=1.1, ranking=1.3, batch_size=32)
            >>> round(costs.int8_seconds(4000, cross=True)), costs.int8_seconds(0, cross=True)
            (185, 0.0)
        """
        if pairs <= 0:
            return 0.0
        twin = INT8_FIXED_SECONDS + INT8_TWIN_PASSES * self.encode_seconds(2 * pairs)
        return twin + (INT8_FIXED_SECONDS + INT8_CROSS_PASSES * self.score_seconds(pairs) if cross else 0.0)


@dataclass(frozen=True)
class Plan:
    """What a budget decided: planned and full step counts, and the predictions behind them (JSON-friendly).

    ``predicted_s`` and ``predicted_full_s`` are the whole ``train()`` call's, the int8 check after the save
    included (``int8_s`` of them).
    """

    budget_s: float
    cross_steps: int
    cross_full_steps: int
    twin_steps: int
    twin_full_steps: int
    predicted_s: float
    predicted_full_s: float
    costs: dict[str, float]
    int8_s: float = 0.0

    @property
    def cut(self) -> bool:
        return self.cross_steps < self.cross_full_steps or self.twin_steps < self.twin_full_steps

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cut": self.cut}

    def describe(self) -> str:
        """One line for the CLI and the logs."""
        minutes = self.budget_s / 60
        costs = self.costs
        head = (f"time budget {minutes:g} min: steps on this machine take {costs['cross']:.2f} s (cross-encoder), "
                f"{costs['twin']:.2f} s / {costs['ranking']:.2f} s (twin contrastive / ranking); the full recipe "
                f"is predicted at {self.predicted_full_s / 60:.1f} min"
                + (f" (its int8 check {self.int8_s / 60:.1f} min of it)" if self.int8_s else ""))
        if not self.cut:
            return head + ": it fits, nothing cut"
        return (head + f", so this run trains {self.cross_steps} of {self.cross_full_steps} cross-encoder steps "
                f"and {self.twin_steps} of {self.twin_full_steps} twin steps (predicted {self.predicted_s / 60:.1f} "
                "min; --time-budget 0 trains the full recipe)")


def surely_fits(budget_s: float, *, cross_steps: int, twin_steps: int, batch_size: int, dev_pairs: int,
                evals: int, eval_pairs: int, int8_pairs: int = 0) -> bool:
    """Whether the run fits ``budget_s`` even at :data:`PESSIMISTIC_PAIR_SECONDS` (then nothing is probed).

    Example:
        >>> surely_fits(2400, cross_steps=6, twin_steps=6, batch_size=8, dev_pairs=50, evals=4, eval_pairs=50)
        True
        >>> surely_fits(2400, cross_steps=1057, twin_steps=1548, batch_size=32, dev_pairs=7901, evals=4,
        ...             eval_pairs=2000)
        False
    """
    pair_s = PESSIMISTIC_PAIR_SECONDS
    steps = (cross_steps + twin_steps) * batch_size * pair_s
    # int8 check: each of its pairs scored twice (fp32, int8) by the twin (two texts) and the cross-encoder.
    evaluation = (3 * dev_pairs + 2 * evals * eval_pairs + 6 * int8_pairs) * pair_s * FORWARD_SHARE
    return FIXED_SECONDS + steps + evaluation <= budget_s


def plan_run(costs: StepCosts, *, budget_s: float, elapsed_s: float, cross_steps: int, twin_steps: int,
             twin_ranking_share: float, dev_pairs: int, evals: int = 4, eval_pairs: int = 2000,
             int8_pairs: int = 0) -> Plan:
    """Plan both phases to fit ``budget_s`` (``elapsed_s`` of it already spent on loading and preparing).

    Args:
        costs: Measured step costs.
        budget_s: The whole :func:`dupq.training.recipe.train` call's budget, in seconds.
        elapsed_s: Seconds already spent.
        cross_steps: The cross-encoder's full step count (0: no cross-encoder).
        twin_steps: The twin's full step count.
        twin_ranking_share: Share of the twin's steps that are ranking-loss steps.
        dev_pairs: Dev pairs (scored by the cross-encoder, embedded for the final evaluation).
        evals: Dev evaluations during the twin's training; eval_pairs: pairs in each.
        int8_pairs: Dev pairs the int8 check after training scores (0: no check).

    Raises:
        BudgetError: Not even one twin step fits after the evaluations.
    """
    cross_eval = costs.score_seconds(dev_pairs) if cross_steps else 0.0
    final_eval = costs.encode_seconds(2 * dev_pairs)
    twin_evals = evals * costs.encode_seconds(2 * eval_pairs)
    twin_per_step = costs.twin_step(twin_ranking_share)
    int8 = costs.int8_seconds(int8_pairs, cross=bool(cross_steps))
    fixed = FIXED_SECONDS + cross_eval + final_eval + twin_evals + int8
    full = fixed + cross_steps * costs.cross + twin_steps * twin_per_step
    available = budget_s - elapsed_s
    planned_cross, planned_twin = cross_steps, twin_steps
    if full > available:
        excess = full - available
        reducible = cross_steps * (1 - MIN_CROSS_SHARE) * costs.cross
        if excess <= reducible:
            planned_cross = math.floor(cross_steps - excess / costs.cross)
        else:  # the cross-encoder at its floor, then both shrink by the same factor
            floor_cross = cross_steps * MIN_CROSS_SHARE
            room = available - fixed
            scale = room / (floor_cross * costs.cross + twin_steps * twin_per_step)
            planned_cross = math.floor(floor_cross * scale)
            planned_twin = math.floor(twin_steps * scale)
        if planned_twin < 1 or (cross_steps and planned_cross < 1):
            raise BudgetError(
                f"a time budget of {budget_s / 60:g} min cannot fit this run on this machine: its evaluations "
                f"and fixed costs alone are predicted at {fixed / 60:.1f} min and the full recipe at "
                f"{full / 60:.1f} min; give a larger --time-budget (or 0 for none)"
            )
    predicted = fixed + planned_cross * costs.cross + planned_twin * twin_per_step
    return Plan(
        budget_s=budget_s,
        cross_steps=planned_cross,
        cross_full_steps=cross_steps,
        twin_steps=planned_twin,
        twin_full_steps=twin_steps,
        predicted_s=round(elapsed_s + predicted, 1),
        predicted_full_s=round(elapsed_s + full, 1),
        costs={k: round(v, 4) for k, v in asdict(costs).items()},
        int8_s=round(int8, 1),
    )


def plan_twin(plan: Plan, costs: StepCosts, *, elapsed_s: float, twin_steps: int, twin_ranking_share: float,
              dev_pairs: int, evals: int = 4, eval_pairs: int = 2000, int8_pairs: int = 0,
              int8_cross: bool = False) -> Plan:
    """Plan the twin again after the cross-encoder, from the time actually left.

    ``twin_steps`` is the twin's full step count now (mining or silver pairs may have added data since
    :func:`plan_run`). The cross-encoder's actual seconds are in ``elapsed_s``, so its misprediction is
    absorbed here; the twin's own step cost is not corrected by it (in the measured runs the cross-encoder's
    probe measured ~17% low while the twin's were within 9%: docs/benchmarks.md). The twin
    never gets more than its full steps, nor fewer than one. ``int8_cross``: the int8 check will include the
    cross-encoder (it was trained).
    """
    int8 = costs.int8_seconds(int8_pairs, cross=int8_cross)
    fixed = FIXED_SECONDS + costs.encode_seconds(2 * dev_pairs) + evals * costs.encode_seconds(2 * eval_pairs) + int8
    per_step = costs.twin_step(twin_ranking_share)
    steps = max(1, min(twin_steps, math.floor((plan.budget_s - elapsed_s - fixed) / per_step)))
    predicted = elapsed_s + fixed + steps * per_step
    return Plan(**{**asdict(plan), "twin_steps": steps, "twin_full_steps": twin_steps,
                   "predicted_s": round(predicted, 1), "int8_s": round(int8, 1)})


def reserve_after_twin(costs: StepCosts, *, dev_pairs: int, eval_pairs: int = 2000, extra_evals: int = 0,
                       int8_pairs: int = 0, int8_cross: bool = False) -> float:
    """Seconds the run needs after the twin's last step: the evaluation the stop triggers, ``extra_evals`` more
    (the WiSE-FT candidates), the final one on every dev pair, the fixed costs (saving, the fusion fit) and the
    int8 check on ``int8_pairs`` dev pairs (:meth:`StepCosts.int8_seconds`).

    Example:
        >>> reserve_after_twin(StepCosts(cross=1.0, twin=1.2, ranking=1.5, batch_size=32), dev_pairs=7901)
        153.8
    """
    return round(FIXED_SECONDS + costs.encode_seconds(2 * dev_pairs)
                 + (1 + extra_evals) * costs.encode_seconds(2 * eval_pairs)
                 + costs.int8_seconds(int8_pairs, cross=int8_cross), 1)


class Deadline:
    """Stops a trainer at the first optimiser step that ends after ``at`` (a ``time.perf_counter()`` time).

    The step that crosses the deadline is evaluated and saved like a scheduled one, so with
    ``load_best_model_at_end`` the best of the evaluated checkpoints, this last one included, is what remains.
    The learning-rate schedule is not shortened: a run stopped at 90% of its steps ends at about a tenth of the
    peak rate, where the linear decay would have been.

    Attributes:
        stopped_at: The step the deadline stopped training at (``None``: it never did).

    Example:
        >>> deadline = Deadline(at=time.perf_counter() + 3600)  # doctest: +SKIP
        >>> trainer = SentenceTransformerTrainer(..., callbacks=[deadline.callback])  # doctest: +SKIP
    """

    def __init__(self, at: float) -> None:
        from transformers import TrainerCallback

        self.at = at
        self.stopped_at: int | None = None
        deadline = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if state.global_step >= state.max_steps or time.perf_counter() < deadline.at:
                    return
                deadline.stopped_at = state.global_step
                control.should_training_stop = True
                if str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "no":
                    control.should_evaluate = True
                if str(getattr(args.save_strategy, "value", args.save_strategy)) != "no":
                    control.should_save = True

        self.callback = _Callback()


def probe_rows(rows: Sequence[Any], batch_size: int, length: Callable[[Any], int], *, bands: int = PROBE_BANDS,
               seed: int = 0, texts: Callable[[Any], Sequence[str]] | None = None) -> list[Any]:
    """Rows for ``bands`` probe batches whose widths stand for the widths of the run's own batches.

    A batch costs what its longest row does: the trainers pad it to that row, and their samplers
    (:mod:`dupq.training.samplers`) pool :data:`~dupq.training.samplers.GROUP_WINDOW` batches of rows, sort them by
    ``length`` and cut them again. This replays that grouping on ``rows`` (seeded), sorts the resulting batch
    widths, cuts them into ``bands`` equal bands and, for each band's mean width, takes the ``batch_size`` unused
    rows whose length is nearest it. A probe batch of such rows is as wide as an average batch of its band, so
    the mean cost over one pass of the probe batches is the mean cost of the run's batches (rows of the mean
    length would not be: a real batch is as wide as its longest row, and each window's last batches hold the
    long tail).

    ``length`` is the one the trainer's sampler groups by (the longest text of a twin row, the sum of a
    cross-encoder pair). ``texts``: a row's texts, none of which may repeat among the picked rows — for a
    no-duplicates sampler, which would otherwise split the rows of one long question's duplicate cluster (all of
    the same length, so picked together) into many small, cheap batches.

    Example:
        >>> rows = ["x" * n for n in range(1, 41)]
        >>> sorted(len(r) for r in probe_rows(rows, 2, len, bands=2))
        [11, 12, 31, 32]
        >>> probe_rows(rows[:3], 2, len, bands=2) == rows[:3]
        True
    """
    from dupq.training.samplers import GROUP_WINDOW

    if len(rows) <= batch_size * bands:
        return list(rows)
    lengths = [length(r) for r in rows]
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    window = batch_size * GROUP_WINDOW
    widths: list[int] = []
    for start in range(0, len(order), window):
        pool = sorted(order[start:start + window], key=lengths.__getitem__)
        widths += [lengths[batch[-1]] for batch in (pool[i:i + batch_size] for i in range(0, len(pool), batch_size))]
    widths.sort()
    targets = [statistics.fmean(widths[len(widths) * b // bands:len(widths) * (b + 1) // bands]) for b in range(bands)]
    used: set[int] = set()
    seen: set[str] = set()
    picked: list[int] = []
    for target in targets:
        batch: list[int] = []
        for i in sorted((i for i in range(len(rows)) if i not in used), key=lambda i: (abs(lengths[i] - target), i)):
            own = set(texts(rows[i])) if texts is not None else set()
            if own & seen:
                continue
            batch.append(i)
            seen |= own
            if len(batch) == batch_size:
                break
        used.update(batch)
        picked += batch
    return [rows[i] for i in sorted(picked)]


class StepTimer:
    """Wall seconds between consecutive optimiser steps of a trainer (a ``transformers`` callback).

    Example:
        >>> timer = StepTimer()
        >>> timer.ends.extend([0.0, 5.0, 6.0, 7.0, 8.0, 11.0])
        >>> timer.seconds_per_step(), timer.seconds_per_step(last=2)
        (1.0, 2.0)
    """

    def __init__(self) -> None:
        from transformers import TrainerCallback

        timer = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                timer.ends.append(time.perf_counter())

        self.ends: list[float] = []
        self.callback = _Callback()

    def seconds_per_step(self, last: int | None = None) -> float:
        """The median interval after the first step (a warm-up: allocation, kernel selection), or with ``last``
        the mean of the last ``last`` intervals (one pass over :func:`probe_rows`' bands: the mean is the cost)."""
        if len(self.ends) < 2:
            raise RuntimeError("a probe needs at least two optimiser steps to time one")
        intervals = [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)]
        if last is not None:
            return statistics.fmean(intervals[-last:])
        return statistics.median(intervals)
