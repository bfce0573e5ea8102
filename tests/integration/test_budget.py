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
    PROBE_BANDS,
    BudgetError,
    Deadline,
    StepCosts,
    StepTimer,
    plan_run,
    plan_twin,
    probe_rows,
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


def test_surely_fits_and_probe_rows() -> None:
    assert surely_fits(2400, cross_steps=6, twin_steps=6, batch_size=8, dev_pairs=50, evals=4, eval_pairs=50)
    assert not surely_fits(600, cross_steps=600, twin_steps=600, batch_size=32, dev_pairs=50, evals=4,
                           eval_pairs=50)
    assert not surely_fits(2400, cross_steps=6, twin_steps=6, batch_size=8, dev_pairs=50, evals=4, eval_pairs=50,
                           int8_pairs=20_000)  # the int8 check counts too
    # Text lengths have a long tail (here a log-normal, as question lengths roughly are). A real batch is as wide as
    # its longest row and each window's last batches hold the long rows, so an average batch is wider than an
    # average row: the probe's batches must be as wide as the run's, not as its rows.
    import math
    import random
    import statistics

    rng = random.Random(0)
    rows = ["x" * max(5, round(math.exp(rng.gauss(4.0, 0.5)))) for _ in range(4000)]
    picked = probe_rows(rows, 8, len)
    assert len(picked) == 8 * PROBE_BANDS and len(set(map(id, picked))) == len(picked)
    lengths = sorted(map(len, rows))
    widths = sorted(len(r) for r in picked)
    mean_row, mean_probe = statistics.fmean(lengths), statistics.fmean(widths)
    assert mean_probe > 1.08 * mean_row  # rows of the mean length would under-predict the run
    assert widths[-1] > lengths[int(0.9 * len(lengths))] and widths[0] < statistics.median(lengths)
    assert probe_rows(rows[:10], 8, len) == rows[:10]  # too few rows for the bands: all of them
    assert probe_rows(rows, 8, len, seed=1) == probe_rows(rows, 8, len, seed=1)


def test_step_timer_needs_two_steps() -> None:
    timer = StepTimer()
    with pytest.raises(RuntimeError):
        timer.seconds_per_step()
    timer.ends.extend([1.0, 1.5, 2.5, 3.0])
    assert timer.seconds_per_step() == 0.5
    assert timer.seconds_per_step(last=2) == 0.75  # one timed pass over the bands: the mean


def test_the_int8_check_is_inside_the_budget() -> None:
    """The int8 check after the save is part of train(): the plan and the twin's deadline keep time for it."""
    assert COSTS.int8_seconds(0, cross=True) == 0.0
    twin_only, both = COSTS.int8_seconds(4000, cross=False), COSTS.int8_seconds(4000, cross=True)
    assert 0 < twin_only < both and COSTS.int8_seconds(2000, cross=True) < both
    without, with_int8 = _plan(3_000), _plan(3_000, int8_pairs=4000)
    assert with_int8.int8_s == pytest.approx(both, abs=0.1) and without.int8_s == 0
    assert with_int8.predicted_full_s == pytest.approx(without.predicted_full_s + both, abs=0.2)
    assert with_int8.cross_steps + with_int8.twin_steps < without.cross_steps + without.twin_steps
    assert with_int8.predicted_s <= 3_000 + 2 and "int8 check" in with_int8.describe()
    assert reserve_after_twin(COSTS, dev_pairs=8000, int8_pairs=4000, int8_cross=True) == pytest.approx(
        reserve_after_twin(COSTS, dev_pairs=8000) + both, abs=0.1)
    again = plan_twin(with_int8, COSTS, elapsed_s=1500, twin_steps=1500, twin_ranking_share=0.3, dev_pairs=8000,
                      int8_pairs=4000, int8_cross=False)
    assert again.int8_s == pytest.approx(twin_only, abs=0.1)


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


def test_train_probes_this_machine_and_trains_the_planned_steps(tmp_path: Path, monkeypatch) -> None:
    """A budget the pessimistic bound cannot promise: train() times real steps, and trains what it planned; the
    int8 check after the save is planned inside the budget, on a seeded sample of the dev pairs."""
    import dupq.config

    pairs, dev = read_pairs(PAIRS_FILE).pairs, read_pairs(DEV_FILE).pairs
    # The fixtures' 10 dev pairs stand for a large dev set: checked from 4 pairs on, on 8 of them at most.
    monkeypatch.setattr(dupq.config, "INT8_MIN_DEV_PAIRS", 4)
    monkeypatch.setattr(dupq.config, "INT8_CHECK_MAX_PAIRS", 8)
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
    assert budget["int8_s"] > 0  # the check's time was kept for it
    record = meta["int8"]
    assert record["dev"] == {"pairs": 8, "file": "a seeded sample of 8 of the run's 10 dev pairs"}, record
    assert record["decision"] in ("int8", "float") and "fp32" in record


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
