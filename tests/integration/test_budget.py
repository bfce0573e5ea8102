"""The training time budget (dupq/training/budget.py): planning from measured step costs, the probes, train(),
the CLI.

The planning tests use given costs (pure arithmetic); the training tests use the real models on the tiny
fixtures, with budgets small enough that train() probes this machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import FIXTURES

from dupq.cli import main
from dupq.data import read_pairs
from dupq.errors import DupQError
from dupq.models.encoder import packaged_model_path
from dupq.training import TrainConfig, train
from dupq.training.budget import (
    FIXED_SECONDS,
    MIN_CROSS_SHARE,
    BudgetError,
    Deadline,
    StepCosts,
    StepTimer,
    plan_run,
    plan_twin,
    probe_sample,
    reserve_after_twin,
    surely_fits,
)

PAIRS_FILE = FIXTURES / "train" / "pairs.tsv"
DEV_FILE = FIXTURES / "train" / "dev.tsv"
COSTS = StepCosts(cross=1.0, twin=1.2, ranking=1.6, batch_size=32)


def _plan(budget_s: float, **kw):
    args = {"elapsed_s": 10.0, "cross_steps": 1000, "twin_steps": 1500, "twin_ranking_share": 0.3,
            "dev_pairs": 8000} | kw
    return plan_run(COSTS, budget_s=budget_s, **args)


def test_a_run_that_fits_is_not_cut() -> None:
    plan = _plan(10_000)
    assert not plan.cut and (plan.cross_steps, plan.twin_steps) == (1000, 1500)
    assert plan.predicted_s == plan.predicted_full_s < 10_000
    assert "nothing cut" in plan.describe() and plan.to_dict()["cut"] is False


def test_the_cross_encoder_gives_way_first_then_both() -> None:
    full = _plan(10_000).predicted_full_s
    slightly = _plan(full - 100)  # 100 s over: the cross-encoder alone loses 100 steps (1 s each)
    assert slightly.twin_steps == 1500 and slightly.cross_steps == pytest.approx(900, abs=1)
    assert slightly.predicted_s <= full - 100 + 1
    far = _plan(full / 2)  # the cross-encoder at its floor is not enough: both shrink by one factor
    assert far.cross_steps < MIN_CROSS_SHARE * 1000 and far.twin_steps < 1500
    assert far.cross_steps / (MIN_CROSS_SHARE * 1000) == pytest.approx(far.twin_steps / 1500, abs=0.01)
    assert far.predicted_s <= full / 2 + 2
    assert "trains" in far.describe() and "--time-budget 0" in far.describe()


def test_a_budget_below_the_fixed_costs_is_a_clear_error() -> None:
    with pytest.raises(BudgetError, match="cannot fit this run") as e:
        _plan(FIXED_SECONDS)
    assert isinstance(e.value, DupQError) and isinstance(e.value, ValueError)


def test_the_twin_is_planned_again_from_the_time_left() -> None:
    plan = _plan(4_000)  # the full run is predicted at ~3,300 s: it fits
    assert not plan.cut
    on_time = plan_twin(plan, COSTS, elapsed_s=1200, twin_steps=1500, twin_ranking_share=0.3,
                        dev_pairs=8000)
    assert on_time.twin_steps == 1500  # never more than the full steps
    slow = plan_twin(plan, COSTS, elapsed_s=2000, twin_steps=1500, twin_ranking_share=0.3,
                     dev_pairs=8000)  # the cross-encoder overran its prediction by ~800 s
    late = plan_twin(plan, COSTS, elapsed_s=3000, twin_steps=1500, twin_ranking_share=0.3,
                     dev_pairs=8000)
    assert slow.twin_steps < 1500 and late.twin_steps < slow.twin_steps
    assert late.predicted_s <= 4_000 + 2 and slow.twin_full_steps == 1500


def test_surely_fits_and_probe_sample() -> None:
    assert surely_fits(2400, cross_steps=6, twin_steps=6, batch_size=8, dev_pairs=50, evals=4, eval_pairs=50)
    assert not surely_fits(600, cross_steps=600, twin_steps=600, batch_size=32, dev_pairs=50, evals=4,
                           eval_pairs=50)
    rows = ["x" * n for n in (1, 5, 9, 10, 11, 30)]  # mean 11
    assert probe_sample(rows, 3, len) == ["x" * 9, "x" * 10, "x" * 11]
    assert probe_sample(rows[:2], 3, len) == rows[:2]


def test_step_timer_needs_two_steps() -> None:
    timer = StepTimer()
    with pytest.raises(RuntimeError):
        timer.seconds_per_step()
    timer.ends.extend([1.0, 1.5, 2.5, 3.0])
    assert timer.seconds_per_step() == 0.5


def _tiny_trainer(tmp_path: Path, deadline: Deadline, max_steps: int):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from dupq.models.encoder import load_sentence_transformer

    model = load_sentence_transformer(packaged_model_path(), cached=False)
    pairs = [p for p in read_pairs(PAIRS_FILE).pairs if p.label == 1]
    data = Dataset.from_dict({"anchor": [p.question1 for p in pairs], "positive": [p.question2 for p in pairs]})
    args = SentenceTransformerTrainingArguments(str(tmp_path / "ckpt"), max_steps=max_steps,
                                                per_device_train_batch_size=4, save_strategy="no",
                                                eval_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True)
    return SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                                      loss=MultipleNegativesRankingLoss(model), callbacks=[deadline.callback])


def test_a_deadline_stops_a_real_trainer_and_only_when_due(tmp_path: Path) -> None:
    import time

    due = Deadline(at=time.perf_counter())  # already past: the first step that ends stops training
    trainer = _tiny_trainer(tmp_path / "a", due, max_steps=4)
    trainer.train()
    assert trainer.state.global_step == 1 and due.stopped_at == 1
    later = Deadline(at=time.perf_counter() + 3600)
    trainer = _tiny_trainer(tmp_path / "b", later, max_steps=3)
    trainer.train()
    assert trainer.state.global_step == 3 and later.stopped_at is None
    # What is kept after the twin: the fixed costs and two encodings of the dev pairs (triggered + final).
    assert reserve_after_twin(COSTS, dev_pairs=0, eval_pairs=0) == FIXED_SECONDS
    assert reserve_after_twin(COSTS, dev_pairs=8000) > reserve_after_twin(COSTS, dev_pairs=100)


def test_train_probes_this_machine_and_trains_the_planned_steps(tmp_path: Path) -> None:
    """A budget the pessimistic bound cannot promise: train() times real steps, and trains what it planned."""
    pairs, dev = read_pairs(PAIRS_FILE).pairs, read_pairs(DEV_FILE).pairs
    # 2 minutes: below the pessimistic bound of 88 steps of 8 pairs, and room for the probes on a loaded machine.
    config = TrainConfig(epochs=20, cross_epochs=2, batch_size=8, time_budget_minutes=2.0, seed=0, bf16=False,
                         cross_encoder=True)
    result = train(pairs, config, start=packaged_model_path(), output_dir=tmp_path / "v", dev_pairs=dev,
                   show_progress_bar=False)
    budget = result.budget
    assert budget is not None, "a 2-minute budget is below the pessimistic bound: the run must be probed"
    assert budget["costs"]["cross"] > 0 and budget["costs"]["twin"] > 0 and budget["costs"]["probe_seconds"] > 0
    meta = json.loads((tmp_path / "v" / "dupq.json").read_text())
    # The twin trains its planned steps, or fewer when its deadline stopped it (its steps ran slower than probed).
    # ... or fewer still when dev AP stopped improving (early stopping, dupq.training.selection).
    planned = budget["twin_stopped_at"] or budget["twin_steps"]
    assert meta["budget"] == budget and meta["steps"] <= planned
    assert meta["steps"] == planned or meta["selection"]["steps"]["stopped_early"]
    assert meta["cross"]["steps"] == budget["cross_steps"]
    assert budget["cut"] == (budget["twin_steps"] < budget["twin_full_steps"]
                             or budget["cross_steps"] < budget["cross_full_steps"])
    assert budget["actual_s"] == result.phase_seconds["total"]


def test_cli_time_budget_too_short_and_none(runner, tmp_path: Path) -> None:
    runner.env["DUPQ_BACKEND"] = "torch"
    r = runner.invoke(main, ["train", str(PAIRS_FILE), "--dev", str(DEV_FILE), "--epochs", "5", "--batch-size", "8",
                             "--time-budget", "0.3", "--no-progress"])
    assert r.exit_code == 1, r.output
    assert "cannot fit this run" in r.output and "Traceback" not in r.output
    listing = runner.invoke(main, ["models", "list"])
    assert listing.output.count("\nv") == 0, listing.output  # no version was made
    r = runner.invoke(main, ["train", str(PAIRS_FILE), "--dev", str(DEV_FILE), "--max-steps", "1",
                             "--batch-size", "8", "--time-budget", "0", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "time budget" not in r.output
    r = runner.invoke(main, ["train", str(PAIRS_FILE), "--time-budget", "-1"])
    assert r.exit_code == 2 and "time_budget_minutes must be > 0" in r.output
