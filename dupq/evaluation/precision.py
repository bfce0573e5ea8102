"""The int8 check: may a version serve its int8 model? Both sets of dev metrics in, a decision out.

The bound is on duplicate detection itself, not on the vectors: the int8 model's dev pair AP and nDCG@10 must
each be at most ``tolerance`` (:data:`dupq.config.INT8_TOLERANCE`, 0.3 points) below the fp32 model's on the
same pairs, scored by the same harness (:func:`dupq.evaluation.evaluate_encoder`). A gain is fine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The metrics the decision reads, as (name in the record, path in ``evaluate_encoder``'s result).
CHECKED = (("ap", ("pairs", "ap")), ("ndcg@10", ("retrieval", "ndcg@10")))
#: The metrics a record keeps of each model (the checked ones and a few to read beside them).
KEPT = (*CHECKED, ("f1", ("pairs", "f1")), ("mrr@10", ("retrieval", "mrr@10")),
        ("recall@10", ("retrieval", "recall@10")))


def summary(result: Mapping[str, Any]) -> dict[str, float]:
    """The kept metrics of one :func:`dupq.evaluation.evaluate_encoder` result, rounded to 5 digits.

    Example:
        >>> summary({"pairs": {"ap": 0.8123456, "f1": 0.7}, "retrieval": {"ndcg@10": 0.9}})
        {'ap': 0.81235, 'ndcg@10': 0.9, 'f1': 0.7}
    """
    out = {}
    for name, (part, key) in KEPT:
        value = result.get(part, {}).get(key)
        if value is not None:
            out[name] = round(float(value), 5)
    return out


def int8_decision(fp32: Mapping[str, float], int8: Mapping[str, float], tolerance: float) -> tuple[bool, str]:
    """Whether int8 holds quality (each checked metric within ``tolerance`` of fp32's), and why. A metric
    missing from both (the re-ranker's nDCG@10: it scores pairs, not a ranking) is not checked.

    Example:
        >>> int8_decision({"ap": 0.820, "ndcg@10": 0.940}, {"ap": 0.818, "ndcg@10": 0.941}, 0.003)
        (True, 'int8 within 0.3 points of fp32: AP -0.20, nDCG@10 +0.10 points')
        >>> int8_decision({"ap": 0.820, "ndcg@10": 0.940}, {"ap": 0.815, "ndcg@10": 0.940}, 0.003)[1]
        'int8 AP 0.8150 is 0.50 points below fp32 0.8200 (bound 0.3)'
    """
    diffs = []
    for name, _ in CHECKED:
        if fp32.get(name) is None or int8.get(name) is None:  # a pair scorer (the re-ranker) has no nDCG@10
            continue
        a, b = fp32[name], int8[name]
        label = "AP" if name == "ap" else "nDCG@10"
        if b < a - tolerance - 1e-12:
            return False, (f"int8 {label} {b:.4f} is {(a - b) * 100:.2f} points below fp32 {a:.4f} "
                           f"(bound {tolerance * 100:g})")
        diffs.append(f"{label} {(b - a) * 100:+.2f}")
    return True, f"int8 within {tolerance * 100:g} points of fp32: " + ", ".join(diffs) + " points"
