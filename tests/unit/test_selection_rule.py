"""The rule that chooses a version's recipe on dev (dupq.training.selection) and the threshold policies
(dupq.evaluation.metrics.calibrate_threshold): pure functions, no model."""

from __future__ import annotations

import numpy as np
import pytest

from dupq.data import Pair
from dupq.evaluation.metrics import calibrate_threshold, pair_metrics, parse_threshold_policy
from dupq.training import TrainConfig
from dupq.training import selection as sel

# --- sizes ----------------------------------------------------------------------------------------------------


def test_auto_dev_fraction_gives_small_data_a_dev_set_to_select_on() -> None:
    assert sel.auto_dev_fraction(200) == 0.3  # 60 pairs, not the 20 of a fixed 10%
    assert sel.auto_dev_fraction(1000) == 0.3
    assert sel.auto_dev_fraction(2000) == 0.15
    assert sel.auto_dev_fraction(95_000) == 0.1
    for n in (1, 50, 700, 5000, 10**6):
        assert 0.1 <= sel.auto_dev_fraction(n) <= 0.3


def test_auto_epochs_trains_a_few_hundred_steps_on_small_data_and_one_epoch_on_big() -> None:
    assert sel.auto_epochs(8) * 8 >= sel.MIN_AUTO_STEPS  # 200 pairs: ~8 steps an epoch
    assert sel.auto_epochs(40) == 8
    assert sel.auto_epochs(1) == sel.MAX_AUTO_EPOCHS
    assert sel.auto_epochs(900) == 1  # the recommended command: one epoch, as before


def test_the_cross_encoder_is_not_trained_where_it_cannot_pay() -> None:
    assert sel.cross_rule(None, 200)[0] is False
    assert sel.cross_rule(None, sel.CROSS_MIN_PAIRS - 1)[0] is False
    assert "fewer than" in sel.cross_rule(None, 1000)[1]
    assert sel.cross_rule(None, sel.CROSS_MIN_PAIRS)[0] is True
    assert sel.cross_rule(True, 10)[0] is True and sel.cross_rule(False, 10**6)[0] is False


# --- the WiSE-FT weight ---------------------------------------------------------------------------------------


def _cand(w: float, **checks: tuple[float, float]) -> dict:
    return {"base_weight": w, "checks": {k: {"ap": ap, "ndcg@10": nd} for k, (ap, nd) in checks.items()}}


def test_best_ap_among_the_weights_that_keep_retrieval() -> None:
    start = {"dev": {"ap": 0.80, "ndcg@10": 0.90}}
    cands = [_cand(0.0, dev=(0.88, 0.89)), _cand(0.25, dev=(0.86, 0.90)), _cand(0.5, dev=(0.84, 0.91))]
    chosen, why = sel.choose_base_weight(cands, start)
    assert chosen["base_weight"] == 0.25 and "not below" in why
    assert [c["meets_constraint"] for c in cands] == [False, True, True]


def test_weight_zero_wins_when_it_keeps_retrieval() -> None:
    start = {"dev": {"ap": 0.80, "ndcg@10": 0.90}}
    cands = [_cand(0.0, dev=(0.88, 0.92)), _cand(0.25, dev=(0.86, 0.92)), _cand(0.5, dev=(0.84, 0.91))]
    assert sel.choose_base_weight(cands, start)[0]["base_weight"] == 0.0


def test_the_constraint_holds_per_source() -> None:
    start = {"dev": {"ap": 0.80, "ndcg@10": 0.90}, "source:askubuntu": {"ap": 0.7, "ndcg@10": 0.60}}
    cands = [_cand(0.0, dev=(0.88, 0.93), **{"source:askubuntu": (0.7, 0.58)}),
             _cand(0.25, dev=(0.86, 0.92), **{"source:askubuntu": (0.7, 0.60)}),
             _cand(0.5, dev=(0.84, 0.91), **{"source:askubuntu": (0.7, 0.61)})]
    assert sel.choose_base_weight(cands, start)[0]["base_weight"] == 0.25  # 0 forgets AskUbuntu's retrieval


def test_no_weight_meets_the_constraint_takes_the_smallest_shortfall() -> None:
    start = {"dev": {"ap": 0.80, "ndcg@10": 0.95}}
    cands = [_cand(0.0, dev=(0.88, 0.90)), _cand(0.25, dev=(0.86, 0.93)), _cand(0.5, dev=(0.84, 0.92))]
    chosen, why = sel.choose_base_weight(cands, start)
    assert chosen["base_weight"] == 0.25 and "shortfall" in why


def test_config_base_weight_none_means_chosen_and_a_value_is_an_override() -> None:
    assert TrainConfig().base_weight is None and TrainConfig().epochs is None
    assert TrainConfig(base_weight=0.5).base_weight == 0.5
    with pytest.raises(ValueError, match="base_weight"):
        TrainConfig(base_weight=1.0)
    with pytest.raises(ValueError, match="cross_encoder"):
        TrainConfig(cross_encoder="yes")  # type: ignore[arg-type]


# --- per-source checks ----------------------------------------------------------------------------------------


def _source(prefix: str, n: int) -> list[Pair]:
    pairs = []
    for i in range(n):
        pairs.append(Pair(f"{prefix} q{i} a", f"{prefix} q{i} b", 1))
        pairs.append(Pair(f"{prefix} q{i} a", f"{prefix} q{(i + 1) % n} c", 0))
    return pairs


def test_a_source_without_dev_pairs_of_its_own_holds_out_a_cluster_split() -> None:
    quora, ubuntu = _source("quora", 40), _source("ubuntu", 200)
    dev = [Pair("quora q0 a", "a dev question", 1)]  # shares a question with the quora file only
    held, questions = sel.hold_out_sources({"quora": quora, "ubuntu": ubuntu}, dev, seed=0)
    assert set(held) == {"ubuntu"} and held["ubuntu"] and any(p.label for p in held["ubuntu"])
    assert all(q.startswith("ubuntu") for q in questions)
    kept = sel.drop_questions(ubuntu, questions)
    assert kept is not None and not {q for p in kept for q in (p.question1, p.question2)} & questions
    checks = sel.source_checks({"quora": quora, "ubuntu": ubuntu}, dev, held)
    assert set(checks) == {"source:ubuntu"}  # the dev pair is not one of quora's pairs: dev is quora's check
    assert sel.hold_out_sources({"quora": quora}, dev, seed=0) == ({}, set())  # one source: dev is its check


def test_without_given_dev_each_source_is_checked_on_its_share_of_the_split() -> None:
    a, b = _source("a", 10), _source("b", 10)
    dev = [a[0], a[1], b[0]]
    checks = sel.source_checks({"a": a, "b": b}, dev, {})
    assert {k: len(v) for k, v in checks.items()} == {"source:a": 2, "source:b": 1}


# --- the re-ranker's out-of-fold check ------------------------------------------------------------------------


def _dev(n: int = 120) -> list[Pair]:
    return [Pair(f"q{i}", f"r{i}", int(i % 2 == 0)) for i in range(n)]


def test_folds_keep_duplicate_clusters_together() -> None:
    pairs = [Pair("a", "b", 1), Pair("b", "c", 1), Pair("d", "e", 1), Pair("a", "f", 0)] + _dev(40)
    folds = sel.cluster_folds(pairs, k=5, seed=0)
    assert folds[0] == folds[1] == folds[3]
    assert set(folds) == set(range(5))


def test_a_reranker_that_adds_information_is_kept_and_one_that_does_not_is_removed() -> None:
    dev = _dev()
    y = np.array([p.label for p in dev])
    rng = np.random.default_rng(0)
    noisy_twin = y * 0.3 + rng.normal(0, 0.3, len(y))
    good_cross = (2 * y - 1) * 3.0 + rng.normal(0, 0.5, len(y))
    oof = sel.out_of_fold(noisy_twin, good_cross, dev)
    assert oof["fused_ap"] > oof["twin_ap"] and sel.keep_reranker(None, oof)[0]
    perfect_twin = y.astype(float)
    noise_cross = rng.normal(0, 1, len(y))
    oof = sel.out_of_fold(perfect_twin, noise_cross, dev)
    assert oof["twin_ap"] == 1.0
    keep, why = sel.keep_reranker(None, oof)
    assert not keep and why.startswith("removed")
    assert sel.keep_reranker(True, oof)[0]  # cross_encoder=True: kept whatever the check says


def test_too_few_dev_pairs_for_the_check_remove_the_reranker() -> None:
    dev = [Pair("a", "b", 1), Pair("c", "d", 0)]
    oof = sel.out_of_fold([0.9, 0.1], [1.0, -1.0], dev, k=2)
    assert oof["fused_ap"] is None and not sel.keep_reranker(None, oof)[0]


# --- threshold policies ---------------------------------------------------------------------------------------


SCORES = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
LABELS = np.array([1, 1, 0, 1, 1, 0, 1, 0, 0, 0])


@pytest.mark.parametrize("target", [0.5, 0.7, 0.8, 1.0])
def test_precision_policy_gives_the_most_recall_at_that_precision(target: float) -> None:
    t = calibrate_threshold(SCORES, LABELS, objective=f"precision:{target}")
    m = pair_metrics(SCORES, LABELS, threshold=t)
    assert m["precision"] >= target
    lower = SCORES[SCORES < t]  # any lower threshold (one more pair predicted duplicate) breaks the target
    if lower.size:
        below = pair_metrics(SCORES, LABELS, threshold=float(lower.max()))
        assert below["precision"] < target or below["recall"] == m["recall"]


@pytest.mark.parametrize("target", [0.2, 0.6, 0.8, 1.0])
def test_recall_policy_gives_the_most_precision_at_that_recall(target: float) -> None:
    t = calibrate_threshold(SCORES, LABELS, objective=f"recall:{target}")
    m = pair_metrics(SCORES, LABELS, threshold=t)
    assert m["recall"] >= target
    higher = SCORES[SCORES >= t]
    if higher.size > 1:  # the next higher threshold (one pair fewer) misses the recall target
        above = pair_metrics(SCORES, LABELS, threshold=float(np.sort(higher)[1]))
        assert above["recall"] < target


def test_policies_on_distances_and_max_f1() -> None:
    distances = 1 - SCORES
    t = calibrate_threshold(distances, LABELS, higher_is_better=False, objective="recall:1.0")
    assert pair_metrics(distances, LABELS, higher_is_better=False, threshold=t)["recall"] == 1.0
    assert calibrate_threshold(SCORES, LABELS, objective="max_f1") == calibrate_threshold(SCORES, LABELS)


def test_an_unreachable_precision_takes_the_most_precise_cut() -> None:
    scores, labels = [0.9, 0.8, 0.7], [0, 1, 0]
    t = calibrate_threshold(scores, labels, objective="precision:0.99")
    # Cuts reach precision 0 (0.9 alone), 0.5 (down to 0.8) and 1/3 (all): the most precise with a duplicate.
    assert pair_metrics(scores, labels, threshold=t)["precision"] == 0.5 and 0.7 < t < 0.8


@pytest.mark.parametrize("bad", ["precision", "precision:0", "recall:1.5", "recall:x", "accuracy", "p:0.9", ""])
def test_bad_policies_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="threshold_policy"):
        parse_threshold_policy(bad)
    with pytest.raises(ValueError, match="threshold_policy"):
        TrainConfig(threshold_policy=bad)


def test_pr_curve_marks_the_policy() -> None:
    pytest.importorskip("matplotlib")
    from dupq.evaluation.plots import pr_curve

    svg = pr_curve(list(SCORES), list(LABELS), threshold=0.55, policy="recall:0.9")
    assert "recall:0.9" in svg


def test_distractors_join_the_retrieval_corpus_only() -> None:
    from dupq.evaluation import evaluate_encoder

    vectors = {"how to cook rice": [1.0, 0.0], "best way to cook rice": [0.9, 0.1], "fix a car": [0.0, 1.0],
               "cook rice fast": [0.99, 0.01]}

    def encode(texts: list[str]) -> np.ndarray:
        v = np.array([vectors[t] for t in texts], dtype=np.float64)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    pairs = [Pair("how to cook rice", "best way to cook rice", 1), Pair("how to cook rice", "fix a car", 0)]
    alone = evaluate_encoder(encode, pairs)
    crowded = evaluate_encoder(encode, pairs, distractors=["cook rice fast", "fix a car"])
    assert alone["retrieval"]["ndcg@10"] == 1.0
    assert crowded["retrieval"]["ndcg@10"] < 1.0  # the distractor outranks one query's duplicate
    assert crowded["retrieval"]["queries"] == alone["retrieval"]["queries"] == 2
    assert crowded["pairs"]["ap"] == alone["pairs"]["ap"]
    assert sel.check_distractors(pairs, seed=0, n=2) == sel.check_distractors(pairs, seed=0, n=2)
    assert len(sel.check_distractors(pairs, seed=0, n=2)) == 2
