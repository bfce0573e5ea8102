"""The recipe chosen on dev (issue 24) in real runs: the packaged model, the tiny fixtures, a few steps.

Behaviour, not quality: each choice (steps, WiSE-FT weight, re-ranker, threshold) is made by the written rule
from the numbers the run recorded in dupq.json's ``"selection"``, and the version matches the choice.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
from support import FIXTURES

from dupq.data import read_pairs
from dupq.evaluation.metrics import pair_metrics
from dupq.models.cross import has_cross
from dupq.models.encoder import SiameseEncoder, packaged_model_path
from dupq.training import TrainConfig, train
from dupq.training import selection as sel

PAIRS = read_pairs(FIXTURES / "train" / "pairs.tsv").pairs
DEV = read_pairs(FIXTURES / "train" / "dev.tsv").pairs


def test_a_version_records_and_follows_its_selection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sel, "CROSS_MIN_PAIRS", 1)  # train the cross-encoder on the fixture: the check decides
    half = len(PAIRS) // 2
    sources = {"a.tsv": PAIRS[:half], "b.tsv": PAIRS[half:]}
    config = TrainConfig(max_steps=4, batch_size=8, eval_steps=2, cross_max_steps=2, time_budget_minutes=None,
                         threshold_policy="recall:0.9")
    out = tmp_path / "v"
    result = train(PAIRS, config, start=packaged_model_path(), output_dir=out, dev_pairs=DEV, sources=sources,
                   show_progress_bar=False)
    meta = json.loads((out / "dupq.json").read_text())
    selection = meta["selection"]
    assert result.selection == selection and selection["rule"] == sel.RULE
    assert meta["training"] == config.to_dict() and meta["training"]["base_weight"] is None  # as given

    # steps: epochs=None resolved by the rule (max_steps bounds this run)
    steps = selection["steps"]
    assert steps["auto"] and steps["epochs"] == sel.auto_epochs(steps["steps_per_epoch"])
    assert steps["trained"] <= 4 and steps["best_step"] in (2, 4)

    # WiSE-FT: every candidate evaluated on every check, the chosen one is the rule's
    wise = selection["base_weight"]
    assert [c["base_weight"] for c in wise["candidates"]] == list(sel.WISE_CANDIDATES)
    assert "dev" in wise["checks"] and set(wise["start"]) == set(wise["checks"])
    assert all(set(c["checks"]) == set(wise["checks"]) for c in wise["candidates"])
    assert all(k == "dev" or k.startswith("source:") for k in wise["checks"])
    # No file shares a question with DEV, so each held a cluster split of its own out of training as its check.
    held = sum(n for k, n in wise["checks"].items() if k != "dev")
    assert held > 0 and meta["data"]["source_check_pairs"] == held
    assert meta["data"]["dropped_for_source_checks"] >= held
    again, _ = sel.choose_base_weight(copy.deepcopy(wise["candidates"]), wise["start"])
    assert wise["chosen"] == again["base_weight"]

    # the re-ranker: trained, then kept only if its fusion beat the twin out of fold, and the folder says so
    rr = selection["reranker"]
    assert rr["trained"] and rr["out_of_fold"]["n"] == meta["data"]["dev_pairs"]
    oof = rr["out_of_fold"]
    expected = oof["fused_ap"] is not None and oof["fused_ap"] > oof["twin_ap"]
    assert rr["kept"] == expected == has_cross(out) == (meta["cross"] is not None)
    assert rr["reason"].startswith("kept" if expected else "removed")

    # the threshold: calibrated for the policy on dev, served, and recorded
    assert meta["threshold_policy"] == "recall:0.9" and meta["threshold_objective"] == "recall:0.9"
    assert meta["threshold"] == selection["threshold"]["threshold"] == result.metrics["dev"]["pairs"]["threshold"]
    enc = SiameseEncoder.load(out, cached=False, backend="torch")
    scores = enc.score_pairs([p.question1 for p in DEV], [p.question2 for p in DEV])
    assert pair_metrics(scores, [p.label for p in DEV], threshold=enc.threshold)["recall"] >= 0.9
    assert set(meta["thresholds"]) == {"f1", "accuracy"}


def test_training_stops_when_dev_ap_stops_improving(tmp_path: Path) -> None:
    config = TrainConfig(max_steps=30, batch_size=8, eval_steps=1, base_weight=0.0, learning_rate=1e-4,
                         time_budget_minutes=None)
    out = tmp_path / "v"
    result = train(PAIRS, config, start=packaged_model_path(), output_dir=out, dev_pairs=DEV,
                   show_progress_bar=False)
    steps = result.selection["steps"]
    # AP is bounded: it cannot rise for 30 evaluations in a row, so patience ends the run early.
    assert steps["stopped_early"] and steps["trained"] < 30
    assert steps["trained"] <= steps["best_step"] + sel.PATIENCE * 1
    assert [h["step"] for h in result.history] == list(range(1, steps["trained"] + 1))
    wise = result.selection["base_weight"]
    assert wise["chosen"] == 0.0 and not wise["auto"] and "given" in wise["reason"]
    rr = result.selection["reranker"]  # 23 labelled pairs: below the rule's minimum, so none
    assert not rr["trained"] and "fewer than" in rr["reason"] and not has_cross(out) and result.cross is None


def test_small_data_refits_on_train_and_dev_with_the_chosen_recipe(tmp_path: Path) -> None:
    # No dev given: dupq splits dev from the pairs, chooses on it, then trains again on train + dev.
    config = TrainConfig(max_steps=4, batch_size=8, eval_steps=2, time_budget_minutes=None)
    runs = {}
    for refit in (None, False):
        out = tmp_path / f"v-{refit}"
        runs[refit] = (train(PAIRS, TrainConfig(**{**config.to_dict(), "refit": refit}),
                             start=packaged_model_path(), output_dir=out, show_progress_bar=False), out)
    (auto, auto_dir), (off, off_dir) = runs[None], runs[False]
    record = auto.selection["refit"]
    assert record["done"] and record["reason"].startswith("refit:")
    assert off.selection["refit"] == {"done": False, "reason": "refit=false"}
    dev_labelled = auto.counts["dev_pairs"] - auto.counts.get("dev_mined_negatives", 0)
    assert record["dev_pairs_added"] == dev_labelled > 0
    assert record["pairs"] == auto.counts["train_pairs"] + dev_labelled
    # the schedule scaled to the larger data, stopped at the best checkpoint's share of it
    steps = auto.selection["steps"]
    scale = math.ceil(record["pairs"] / 8) / steps["steps_per_epoch"]
    assert record["steps"] == max(1, min(record["planned"], round(steps["best_step"] * scale)))
    # The selection run is the same in both; its held-out numbers and threshold are what both record.
    assert auto.metrics == off.metrics and auto.thresholds == off.thresholds
    a = SiameseEncoder.load(auto_dir, cached=False, backend="torch")
    b = SiameseEncoder.load(off_dir, cached=False, backend="torch")
    assert a.threshold == b.threshold
    qs = [p.question1 for p in DEV[:8]]
    assert not np.allclose(a.encode(qs), b.encode(qs), atol=1e-4)  # the refit's weights are its own
    # given dev pairs: nothing to refit on
    given = train(PAIRS, config, start=packaged_model_path(), output_dir=tmp_path / "given", dev_pairs=DEV,
                  show_progress_bar=False)
    assert not given.selection["refit"]["done"] and "given" in given.selection["refit"]["reason"]
