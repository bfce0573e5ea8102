"""Fine-tuning: config validation, the contrastive loss, threshold calibration, mining, and real short runs.

The runs use the real packaged model on the tiny fixtures in ``tests/fixtures/train`` (20 steps of 8 pairs),
so they check behaviour (positives move closer, negatives apart; nothing half-written on cancel or crash),
not quality.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from support import FIXTURES

from dupq.data import Pair, duplicate_clusters, read_pairs
from dupq.evaluation.metrics import calibrate_threshold
from dupq.models.encoder import SiameseEncoder, packaged_model_path
from dupq.models.energy import Energy
from dupq.training import (
    DEFAULT_MARGIN,
    ONLINE_MARGIN,
    TrainConfig,
    TrainingCancelled,
    average_weights,
    build_loss,
    prepare_data,
    split_by_labels,
    train,
)
from dupq.training.data import ranking_parts
from dupq.training.mining import mine_negatives, negatives_needed

TRAIN = FIXTURES / "train"
PAIRS = read_pairs(TRAIN / "pairs.tsv").pairs
DEV = read_pairs(TRAIN / "dev.tsv").pairs


def base_model() -> Any:
    return SiameseEncoder.from_pretrained().model  # the shared cached instance: tests only read it


# --- config --------------------------------------------------------------------------------------------------


def test_config_defaults_round_trip_and_margin_per_energy() -> None:
    c = TrainConfig()
    assert (c.loss, c.energy, c.margin) == ("online-contrastive", "cosine", ONLINE_MARGIN["cosine"])
    assert TrainConfig(loss="contrastive").margin == DEFAULT_MARGIN["cosine"]
    assert TrainConfig(energy="euclidean", loss="contrastive").margin == pytest.approx(
        math.sqrt(2 * DEFAULT_MARGIN["cosine"]))
    assert TrainConfig(energy="euclidean").margin == pytest.approx(math.sqrt(2 * ONLINE_MARGIN["cosine"]))
    c = TrainConfig(loss="online-contrastive", margin=0.3, max_steps=7, bf16=True, eval_steps=3)
    assert TrainConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": "triplet"}, "loss must be one of"),
        ({"energy": "dot"}, "energy must be one of"),
        ({"margin": 0}, "margin must be > 0"),
        ({"margin": float("nan")}, "margin must be a finite number"),
        ({"epochs": -1}, "epochs must be > 0"),
        ({"max_steps": 0}, "max_steps must be an integer >= 1"),
        ({"max_steps": 2.5}, "max_steps must be an integer"),
        ({"batch_size": True}, "batch_size must be an integer"),
        ({"learning_rate": "fast"}, "learning_rate must be a finite number"),
        ({"warmup_ratio": 1.0}, "warmup_ratio must be >= 0.0 and < 1.0"),
        ({"negatives_per_positive": -0.5}, "negatives_per_positive must be >= 0"),
        ({"ranking_weight": -1}, "ranking_weight must be >= 0"),
        ({"base_weight": 1.0}, "base_weight must be >= 0.0 and < 1.0"),
        ({"bf16": "yes"}, "bf16 must be true or false"),
        ({"dev_fraction": 1.0}, "dev_fraction must be > 0.0 and < 1.0"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_config_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown training option.*lerning_rate"):
        TrainConfig.from_dict({"lerning_rate": 1e-4})


# --- loss ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("energy", "margin", "expected"),
    [
        # d = 1 - cos: positive (1,0)~(0.6,0.8) d=0.4 -> 0.5*0.16 = 0.08;
        # negative (1,0)~(0.8,0.6) d=0.2 < margin 0.5 -> 0.5*(0.5-0.2)^2 = 0.045; mean 0.0625.
        ("cosine", 0.5, 0.0625),
        # d = |a-b|: positive d^2 = 0.8 -> 0.4; negative d = sqrt(0.4) -> 0.5*(1 - sqrt(0.4))^2; mean of both.
        ("euclidean", 1.0, (0.4 + 0.5 * (1 - math.sqrt(0.4)) ** 2) / 2),
    ],
)
def test_contrastive_loss_equals_hadsell_formula(energy: str, margin: float, expected: float) -> None:
    loss = build_loss(base_model(), loss="contrastive", energy=energy, margin=margin, ranking_weight=0)
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.6, 0.8], [0.8, 0.6], [0.0, 1.0]])
    # The third pair is a negative beyond the margin (cos distance 1, Euclidean sqrt 2): it adds 0.
    value = loss.compute_loss_from_embeddings([a, b], torch.tensor([1, 0, 0]))
    assert float(value) == pytest.approx(expected * 2 / 3, abs=1e-6)


def test_online_contrastive_uses_the_energy_distance() -> None:
    from sentence_transformers.sentence_transformer.losses import OnlineContrastiveLoss, SiameseDistanceMetric

    from dupq.training.losses import ContrastiveRankingLoss

    margin = Energy.EUCLIDEAN.default_margin
    kw = {"loss": "online-contrastive", "energy": Energy.EUCLIDEAN, "margin": margin}
    loss = build_loss(base_model(), **kw, ranking_weight=0)
    assert isinstance(loss, OnlineContrastiveLoss)
    assert loss.distance_metric == SiameseDistanceMetric.EUCLIDEAN
    # With the ranking term (the default) the same loss is wrapped, not replaced.
    loss = build_loss(base_model(), **kw, ranking_weight=1.0)
    assert isinstance(loss, ContrastiveRankingLoss) and isinstance(loss.contrastive, OnlineContrastiveLoss)
    assert loss.contrastive.distance_metric == SiameseDistanceMetric.EUCLIDEAN


def test_ranking_term_adds_symmetric_in_batch_loss_over_the_duplicates() -> None:
    from dupq.training.losses import ContrastiveRankingLoss

    loss = build_loss(base_model(), loss="contrastive", energy=Energy.COSINE, margin=0.5, ranking_weight=0.5)
    assert isinstance(loss, ContrastiveRankingLoss)
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    b = torch.tensor([[0.6, 0.8], [0.8, 0.6], [0.0, 1.0]])
    # Contrastive: two positives at cos distance 0.4 -> 0.08 each, the negative is beyond the margin; mean over 3.
    # Ranking over the two duplicates only: each row's logits are 20 * cos = (12 own, 16 other), in both
    # directions, so each term is -(12 - logsumexp(12, 16)) = log(1 + e^4).
    value = loss.compute_loss_from_embeddings([a, b], torch.tensor([1, 1, 0]))
    assert float(value) == pytest.approx(0.16 / 3 + 0.5 * math.log1p(math.exp(4)), abs=1e-5)
    # One duplicate in the batch has no in-batch negative: only the contrastive term is left.
    value = loss.compute_loss_from_embeddings([a, b], torch.tensor([1, 0, 0]))
    assert float(value) == pytest.approx((0.08 + 0.5 * (0.5 - 0.4) ** 2) / 3, abs=1e-6)


def test_average_weights_interpolates_floats_towards_the_start() -> None:
    model = torch.nn.BatchNorm1d(2)  # float weights plus an integer buffer (num_batches_tracked)
    start = {k: v.clone() for k, v in model.state_dict().items()}  # weight 1, bias 0, count 0
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.bias.fill_(-2.0)
    model.num_batches_tracked.fill_(7)
    average_weights(model, start, 0.25)
    assert model.weight.tolist() == pytest.approx([0.75 * 3 + 0.25 * 1] * 2)
    assert model.bias.tolist() == pytest.approx([0.75 * -2] * 2)
    assert int(model.num_batches_tracked) == 7  # not a weight: kept
    with pytest.raises(ValueError, match="base_weight must be"):
        average_weights(model, start, 1.0)
    with pytest.raises(ValueError, match="lack 1 tensor"):
        average_weights(model, {k: v for k, v in start.items() if k != "bias"}, 0.5)


# --- thresholds ----------------------------------------------------------------------------------------------


def test_calibrate_thresholds_on_synthetic_scores() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = np.array([1, 1, 0, 1, 0, 0])
    # Cutting below 0.6 catches every duplicate with one false positive: F1 6/7, the best; threshold halfway
    # to 0.5. Accuracy 5/6 is reached below 0.8 and below 0.6; ties go to the higher threshold (0.75).
    assert [calibrate_threshold(scores, labels, objective=o) for o in ("f1", "accuracy")] == pytest.approx(
        [0.55, 0.75])
    distances = 1 - scores  # the Euclidean convention: lower = more duplicate
    assert [calibrate_threshold(distances, labels, higher_is_better=False, objective=o)
            for o in ("f1", "accuracy")] == pytest.approx([0.45, 0.25])


# --- data: split and mining ----------------------------------------------------------------------------------


def test_a_labelled_domain_without_positive_only_pairs_also_trains_the_ranking_loss() -> None:
    """QQP-like file (labelled + positive-only sources) and an AskUbuntu-like file (labelled only): the second's
    duplicates reach the ranking loss as their own dataset, stay in the contrastive loss, and are not capped."""
    qqp = {"lab": [Pair("q1", "q2", 1), Pair("q1", "q3", 0)],
           "para": [Pair(f"p{i}", f"p{i}'", 1) for i in range(5)]}
    au = {"au": [Pair("u1", "u2", 1), Pair("u3", "u4", 1), Pair("u1", "u5", 0)]}
    lab_q, pos_q = split_by_labels(qqp)
    lab_a, pos_a = split_by_labels(au)
    assert len(pos_q) == 5 and [p.question1 for p in pos_a] == ["u1", "u3"]
    assert split_by_labels(au, rank_labelled=False)[1] == []
    dev = [Pair("d1", "d2", 1), Pair("d3", "d4", 0)]
    data = prepare_data(lab_q + lab_a, dev, TrainConfig(max_positive_only=2), positive_only=pos_q + pos_a)
    parts = ranking_parts(data)
    assert len(parts["positive_only"]) == 2  # the cap applies to positive-only pairs only
    assert {(p.question1, p.question2) for p in parts["labelled_duplicates"]} == {("u1", "u2"), ("u3", "u4")}
    assert {("u1", "u2"), ("u3", "u4")} <= {(p.question1, p.question2) for p in data.train}  # still labelled
    assert data.counts["labelled_duplicates_ranked"] == 2 and data.counts["dropped_repeats"] == 0
    none = prepare_data(lab_q + lab_a, dev, TrainConfig(ranking_loss="none"), positive_only=pos_q + pos_a)
    assert none.ranking == [] and len(none.train) == len(lab_q) + len(lab_a) + 5


def test_prepare_data_never_shares_a_question_between_train_and_dev() -> None:
    data = prepare_data(PAIRS, None, TrainConfig(dev_fraction=0.3))
    train_q = {q for p in data.train for q in (p.question1, p.question2)}
    dev_q = {q for p in data.dev for q in (p.question1, p.question2)}
    assert data.train and data.dev and not train_q & dev_q
    assert data.counts["train_pairs"] + data.counts["dev_pairs"] + data.counts["dropped_crossing_pairs"] == len(PAIRS)

    # An explicit dev set that shares a question with training: the training pairs with it are dropped.
    dev = [Pair("How do I boil an egg?", "Boiling eggs: how?", 1), Pair("How do I boil an egg?", "Why?", 0)]
    data = prepare_data(PAIRS, dev, TrainConfig())
    assert data.counts["dropped_crossing_pairs"] == 2  # t19 and t20
    assert all("How do I boil an egg?" not in (p.question1, p.question2) for p in data.train)


def test_negatives_needed_counts_positive_pairs_without_a_negative() -> None:
    # t25-t32 are positive-only; every other positive shares a question with a labelled negative.
    assert negatives_needed(PAIRS, 1.0) == 8
    assert negatives_needed(PAIRS, 0.5) == 4
    assert negatives_needed(PAIRS, 0) == 0


def test_mining_never_returns_a_question_of_the_anchor_cluster() -> None:
    clusters = duplicate_clusters(PAIRS)
    mined = mine_negatives(PAIRS, base_model(), count=12, seed=0)
    assert 0 < len(mined) <= 12
    known = {frozenset((p.question1, p.question2)) for p in PAIRS}
    for p in mined:
        assert p.label == 0
        assert clusters[p.question1] != clusters[p.question2]
        assert frozenset((p.question1, p.question2)) not in known
    # The three Ubuntu-upgrade questions are one cluster (t26 + t27): none is ever a negative of another.
    ubuntu = {q for q in clusters if clusters[q] == clusters["How do I update Ubuntu from the terminal?"]}
    assert len(ubuntu) == 3
    assert not any({p.question1, p.question2} <= ubuntu for p in mined)


def test_neighbour_pairs_are_new_pairs_of_close_questions() -> None:
    from dupq.training.mining import label_silver, neighbour_pairs

    clusters = duplicate_clusters(PAIRS)
    known = {frozenset((p.question1, p.question2)) for p in PAIRS}
    candidates = neighbour_pairs(PAIRS, base_model(), count=15, per_question=1, seed=0)
    assert 0 < len(candidates) <= 15
    assert len({frozenset(c) for c in candidates}) == len(candidates)  # no pair twice, in either order
    for a, b in candidates:
        assert a != b and frozenset((a, b)) not in known
        assert a not in clusters or clusters.get(b) != clusters[a]  # a known cluster-mate is no news
    # Neighbours, not random pairs: closer on average than random pairs of the same questions.
    enc = base_model()
    near = np.mean([float(np.dot(*enc.encode([a, b], normalize_embeddings=True))) for a, b in candidates])
    qs = sorted({q for p in PAIRS for q in (p.question1, p.question2)})
    rand = np.mean([float(np.dot(*enc.encode([qs[i], qs[-1 - i]], normalize_embeddings=True))) for i in range(10)])
    assert near > rand
    silver = label_silver(candidates, lambda ps: [0.9 if i % 2 else 0.1 for i in range(len(ps))], 0.5)
    assert [p.label for p in silver] == [i % 2 for i in range(len(candidates))]


def test_mined_negatives_are_kept_only_where_the_teacher_says_non_duplicate() -> None:
    from dupq.training import add_mined_negatives

    config = TrainConfig(negatives_per_positive=1.0)
    data = prepare_data(PAIRS, DEV, config)
    everything = add_mined_negatives(data, base_model(), config)
    assert everything.counts["mined_negatives"] > 1
    judged = {frozenset((p.question1, p.question2)) for p in everything.train[len(data.train):][::2]}
    teacher_calls: list[int] = []

    def teacher(ps: list[Pair]) -> list[bool]:  # stands for the cross-encoder: every other one is a duplicate
        teacher_calls.append(len(ps))
        return [frozenset((p.question1, p.question2)) in judged for p in ps]

    filtered = add_mined_negatives(data, base_model(), config, teacher=teacher)
    kept = filtered.train[len(data.train):]
    assert teacher_calls == [everything.counts["mined_negatives"]]
    assert len(kept) == everything.counts["mined_negatives"] - len(judged)
    assert not judged & {frozenset((p.question1, p.question2)) for p in kept}
    assert filtered.counts["mined_rejected_by_teacher"] == len(judged)
    assert filtered.counts["mined_candidates"] == everything.counts["mined_negatives"]


# --- real fine-tuning ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One 20-step fine-tune (batch 8) of the packaged model, shared by the tests below."""
    root = tmp_path_factory.mktemp("train")
    scratch = root / "scratch"
    scratch.mkdir()
    shared = SiameseEncoder.from_pretrained()
    probe = ["How do I reverse a list in Python?"]
    before = shared.encode(probe)
    events: list[dict[str, Any]] = []
    old_tempdir = tempfile.tempdir
    tempfile.tempdir = str(scratch)  # checkpoints go here, so the test can see that they are removed
    try:
        # The pre-issue-10 path (contrastive loss, mined negatives, no cross-encoder): still selectable.
        config = TrainConfig(max_steps=20, batch_size=8, learning_rate=1e-4, eval_steps=10, seed=0,
                             loss="contrastive", negatives_per_positive=1.0, cross_encoder=False)
        # Start from the cached instance the service would be serving: training must work on a copy.
        result = train(PAIRS, config, start=shared, output_dir=root / "models" / "v1", dev_pairs=DEV, parent="base",
                       progress=events.append, show_progress_bar=False)
    finally:
        tempfile.tempdir = old_tempdir
    return {"result": result, "config": config, "events": events, "root": root, "scratch": scratch,
            "shared_before": before, "shared_after": shared.encode(probe)}


def _mean_cos(enc: SiameseEncoder, pairs: list[Pair]) -> float:
    return float(np.mean(enc.score_pairs([p.question1 for p in pairs], [p.question2 for p in pairs])))


def test_fine_tune_moves_positives_closer_and_negatives_apart(trained: dict[str, Any]) -> None:
    tuned = SiameseEncoder.load(trained["result"].path, cached=False, backend="torch")
    base = SiameseEncoder.from_pretrained()
    pos = [p for p in PAIRS if p.label == 1]
    neg = [p for p in PAIRS if p.label == 0]
    assert _mean_cos(tuned, pos) > _mean_cos(base, pos) + 0.01
    assert _mean_cos(tuned, neg) < _mean_cos(base, neg) - 0.01


def test_trained_version_is_complete_and_described(trained: dict[str, Any]) -> None:
    result, config = trained["result"], trained["config"]
    meta = SiameseEncoder.read_config(result.path)
    assert result.version == "v1" and meta["parent"] == "base" and meta["energy"] == "cosine"
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["threshold"] == result.thresholds["f1"] and meta["threshold_objective"] == "f1"
    assert set(meta["thresholds"]) == {"f1", "accuracy"}
    assert meta["training"] == config.to_dict() and meta["loss"] == "contrastive"
    counts = meta["data"]
    assert counts["mined_negatives"] > 0  # the fixture's positive-only clusters got negatives
    assert counts["train_pairs"] == counts["positives"] + counts["negatives"] + counts["mined_negatives"]
    assert counts["dev_pairs"] == len(DEV) and counts["dropped_crossing_pairs"] == 0
    dev = meta["metrics"]["dev"]
    assert 0 <= dev["pairs"]["ap"] <= 1 and 0 <= dev["retrieval"]["ndcg@10"] <= 1
    assert dev["pairs"]["threshold"] == result.thresholds["f1"]
    assert [h["step"] for h in meta["history"]] == [10, 20] and meta["best_step"] in (10, 20)
    assert result.pairs_per_second > 0 and result.seconds > 0


def test_training_leaves_no_temporary_files_and_shared_model_untouched(trained: dict[str, Any]) -> None:
    assert [p.name for p in (trained["root"] / "models").iterdir()] == ["v1"]
    assert list(trained["scratch"].iterdir()) == []  # the trainer's checkpoints were deleted
    np.testing.assert_array_equal(trained["shared_before"], trained["shared_after"])


def test_progress_reports_every_phase(trained: dict[str, Any]) -> None:
    events = trained["events"]
    assert {e["phase"] for e in events} == {"mining", "training", "evaluating"}
    assert all({"step", "total", "loss", "epoch", "phase"} <= set(e) for e in events)
    steps = [e for e in events if e["phase"] == "training"]
    assert [e["step"] for e in steps] == list(range(1, 21)) and steps[-1]["total"] == 20
    assert steps[-1]["loss"] is not None


def _interrupting(kind: str) -> dict[str, Any]:
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return kind == "cancel" and calls["n"] > 3  # two polls before training, then steps 1 and 2

    def progress(event: dict[str, Any]) -> None:
        if kind == "crash" and event["phase"] == "training" and event["step"] == 2:
            raise RuntimeError("simulated crash")

    return {"should_stop": should_stop, "progress": progress}


@pytest.mark.parametrize(("kind", "error"), [("cancel", TrainingCancelled), ("crash", RuntimeError)])
def test_cancel_or_crash_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str,
                                        error: type[Exception]) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    models = tmp_path / "models"
    config = TrainConfig(max_steps=5, batch_size=8, negatives_per_positive=0, eval_steps=5)
    with pytest.raises(error):
        train(PAIRS, config, start=packaged_model_path(), output_dir=models / "v2", dev_pairs=DEV,
              show_progress_bar=False, **_interrupting(kind))
    assert list(models.iterdir()) == []  # neither the version nor its staging sibling
    assert [p.name for p in tmp_path.iterdir()] == ["models"]  # checkpoints removed too


def test_existing_output_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    with pytest.raises(FileExistsError):
        train(PAIRS, TrainConfig(max_steps=1), start=packaged_model_path(), output_dir=tmp_path / "v1", dev_pairs=DEV)
