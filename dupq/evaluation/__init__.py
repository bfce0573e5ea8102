"""Measuring a model on labelled pairs and retrieval tasks; data in, numbers and figures out (opens no store).

- :mod:`~dupq.evaluation.metrics`: pair metrics (AP, best F1 and accuracy, thresholds) and retrieval metrics;
- :mod:`~dupq.evaluation.tasks`: retrieval tasks from labelled pairs or a BEIR folder;
- :mod:`~dupq.evaluation.ranking`: dense ranking by an encoder's energy, pair scores, ``evaluate_encoder``;
- :mod:`~dupq.evaluation.bm25`: the lexical baseline;
- :mod:`~dupq.evaluation.gate`: the retrain gate's reports and decision;
- :mod:`~dupq.evaluation.report` and :mod:`~dupq.evaluation.plots`: a text table, SVG figures, an HTML report.
"""

from dupq.evaluation.bm25 import evaluate_bm25, evaluate_bm25_on_task, evaluate_bm25_pairs, rank_bm25
from dupq.evaluation.metrics import calibrate_threshold, pair_metrics, retrieval_metrics
from dupq.evaluation.ranking import (
    evaluate_encoder,
    evaluate_encoder_on_task,
    evaluate_retrieval,
    pair_scores,
    rank_by_scores,
    rank_dense,
)
from dupq.evaluation.report import format_results
from dupq.evaluation.tasks import RetrievalTask, load_beir, retrieval_task_from_pairs

__all__ = [
    "RetrievalTask",
    "calibrate_threshold",
    "evaluate_bm25",
    "evaluate_bm25_on_task",
    "evaluate_bm25_pairs",
    "evaluate_encoder",
    "evaluate_encoder_on_task",
    "evaluate_retrieval",
    "format_results",
    "load_beir",
    "pair_metrics",
    "pair_scores",
    "rank_bm25",
    "rank_by_scores",
    "rank_dense",
    "retrieval_metrics",
    "retrieval_task_from_pairs",
]
