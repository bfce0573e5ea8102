"""Evaluation results as a plain-text table (`dupq eval`, the benchmarks)."""

from __future__ import annotations

from typing import Any

_PAIR_COLUMNS = [
    ("AP", "ap"),
    ("best F1", "best_f1"),
    ("F1 thr", "best_f1_threshold"),
    ("best acc", "best_accuracy"),
    ("acc thr", "best_accuracy_threshold"),
    ("served thr", "threshold"),
    ("P@served", "precision"),
    ("R@served", "recall"),
]


_RETRIEVAL_COLUMNS = [("MRR@10", "mrr@10"), ("nDCG@10", "ndcg@10"), ("R@1", "recall@1"), ("R@10", "recall@10")]


def format_results(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """A plain-text table of ``{name: {"pairs"?: ..., "retrieval"?: ...}}``, one row per model.

    Example:
        >>> print(format_results({"m": {"retrieval": {"mrr@10": 1.0, "ndcg@10": 1.0, "recall@1": 1.0,
        ...                                           "recall@10": 1.0}}}))
        model  MRR@10  nDCG@10     R@1    R@10
        m      1.0000   1.0000  1.0000  1.0000
    """
    columns: list[tuple[str, str, str]] = []
    if any("pairs" in r for r in results.values()):
        columns += [("pairs", head, key) for head, key in _PAIR_COLUMNS]
    if any("retrieval" in r for r in results.values()):
        columns += [("retrieval", head, key) for head, key in _RETRIEVAL_COLUMNS]

    def cell(result: dict[str, dict[str, Any]], part: str, key: str) -> str:
        value = result.get(part, {}).get(key)
        return "-" if value is None else f"{value:.4f}"

    table = [["model", *(head for _, head, _ in columns)]]
    table += [[name, *(cell(r, part, key) for part, _, key in columns)] for name, r in results.items()]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in table
    ]
    return "\n".join(line.rstrip() for line in lines)
