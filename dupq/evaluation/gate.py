"""The retrain gate: a candidate version against the current one on the same held-out pairs, and the verdict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dupq.data import Pair


def gate_reports(
    candidate: Any, current: Any, sets: Mapping[str, Sequence[Pair]], *, candidate_cross: Any = None
) -> dict[str, Any]:
    """Evaluate candidate and current encoder on the same pair sets (pair + retrieval metrics each).

    With ``candidate_cross`` (the candidate's :class:`dupq.models.cross.CrossScorer`), each report also holds
    ``"candidate_cross_encoder": {"pairs": ...}``: the re-ranking scorer's pair metrics beside the twin's
    (reported only; :func:`gate_decision` judges the twin). A set without both labels cannot give an AP: it is
    reported as skipped.
    """
    from dupq.evaluation import evaluate_encoder, pair_metrics

    reports: dict[str, Any] = {}
    for name, pairs in sets.items():
        if {p.label for p in pairs} != {0, 1}:
            reports[name] = {"skipped": "needs both duplicate and non-duplicate pairs"}
            continue
        reports[name] = {
            role: evaluate_encoder(enc.encode, list(pairs), energy=enc.energy_name, threshold=enc.threshold)
            for role, enc in (("candidate", candidate), ("current", current))
        }
        if candidate_cross is not None:
            scores = candidate_cross.score([(p.question1, p.question2) for p in pairs], batch_size=64)
            reports[name]["candidate_cross_encoder"] = {
                "pairs": pair_metrics(scores, [p.label for p in pairs], threshold=candidate_cross.threshold)
            }
    return reports


def gate_decision(reports: Mapping[str, Any], tolerance: float) -> tuple[bool, str]:
    """Pass when, on every report, the candidate's AP is at most ``tolerance`` below the current model's.

    Example:
        >>> r = {"held_out": {"candidate": {"pairs": {"ap": 0.80}}, "current": {"pairs": {"ap": 0.81}}}}
        >>> gate_decision(r, 0.02)[0], gate_decision(r, 0.005)[0]
        (True, False)
        >>> gate_decision({"held_out": {"skipped": "one label only"}}, 0.02)[0]
        False
    """
    judged = {k: v for k, v in reports.items() if "skipped" not in v}
    if not judged:
        return False, "no gate report could be computed (need duplicate and non-duplicate held-out pairs)"
    for name, r in judged.items():
        cand, cur = r["candidate"]["pairs"]["ap"], r["current"]["pairs"]["ap"]
        if cand < cur - tolerance:
            return False, f"{name}: candidate AP {cand:.4f} < current AP {cur:.4f} - tolerance {tolerance}"
    return True, "candidate AP within tolerance on " + ", ".join(judged)
