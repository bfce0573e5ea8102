"""Quantise a version folder to static int8 and check it on dev pairs: the step after training, and
``dupq models quantize VERSION --pairs DEV`` for an existing version (``base`` included).

1. the version's float OpenVINO export (``<version>/openvino``), made now if it is missing;
2. its static int8 graph (:func:`dupq.models.quantize.quantize_ir`), calibrated on ``texts`` (the version's own
   training questions after training; a sample of the stored questions for the command);
3. both scored on the dev pairs by :func:`dupq.evaluation.evaluate_encoder` (fp32: the float graph compiled in
   f32; int8: the int8 graph as it would serve, the rest of the graph in the CPU's best float precision);
4. the decision (:func:`dupq.evaluation.precision.int8_decision`) and both metric sets written into dupq.json
   as ``"int8"``. The int8 export stays on disk either way, so ``inference_precision=int8`` can still force it;
5. the version's cross-encoder (re-ranker), if it has one, likewise: its pair-logit graph quantised (calibrated
   on question pairs), its re-ranking score (fused with the twin's fp32 score where it has a fusion) scored on
   the dev pairs in fp32 and int8, the decision on pair AP (a pair scorer has no nDCG@10) in cross.json's
   ``"int8"``.

Example:
    >>> record = quantize_version("models/v1", dev_pairs, questions)   # doctest: +SKIP
    >>> record["decision"], record["reason"]                           # doctest: +SKIP
    ('int8', 'int8 within 0.3 points of fp32: AP -0.11, nDCG@10 -0.03 points')
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dupq.config import INT8_TOLERANCE
from dupq.data import Pair
from dupq.evaluation import evaluate_encoder
from dupq.evaluation.precision import int8_decision, summary
from dupq.models.cross import CROSS_META
from dupq.models.encoder import META_FILE, PACKAGED, SiameseEncoder, packaged_model_path
from dupq.models.quantize import CALIBRATION_SIZE, INT8_DIR, cpu_flags, float_precision, quantize_ir


def calibration_sample(texts: Sequence[str], n: int = CALIBRATION_SIZE, *, seed: int = 0) -> list[str]:
    """A seeded sample of ``n`` distinct questions of ``texts`` (all of them when there are fewer).

    Example:
        >>> calibration_sample(["a", "b", "a", "c"], 10)
        ['a', 'b', 'c']
    """
    unique = list(dict.fromkeys(t for t in texts if t and t.strip()))
    if len(unique) <= n:
        return unique
    return random.Random(seed).sample(unique, n)


def quantize_version(
    folder: str | Path,
    dev_pairs: Sequence[Pair],
    texts: Sequence[str],
    *,
    tolerance: float = INT8_TOLERANCE,
    subset_size: int = CALIBRATION_SIZE,
    smooth_quant_alpha: float | None = None,
    shared_export_cache: str | Path | None = None,
    dev_name: str | None = None,
    calibration_pairs: Sequence[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Quantise the version in ``folder``, check it on ``dev_pairs`` and record the outcome in its dupq.json.

    Args:
        folder: The version folder (complete: weights and dupq.json; ``base``'s holds only dupq.json).
        dev_pairs: Labelled pairs with both labels (the version's dev pairs).
        texts: Calibration questions; a seeded sample of ``subset_size`` is used.
        tolerance: Largest drop of dev AP and of dev nDCG@10 that int8 may cost (0.003 = 0.3 points).
        subset_size: Calibration questions used.
        smooth_quant_alpha: SmoothQuant alpha of the MatMuls (None: NNCF's default for transformers).
        shared_export_cache: The machine's shared export folder (for ``base``: its float export is linked).
        dev_name: What the dev pairs were (a file name), recorded.
        calibration_pairs: Question pairs to calibrate the cross-encoder on (default: consecutive ``texts``).

    Returns:
        The ``"int8"`` record written into dupq.json: ``decision`` (``"int8"`` or ``"float"``), ``reason``,
        ``fp32`` and ``int8`` metrics, ``tolerance``, ``calibration`` options, ``seconds``, ``cpu``.

    Raises:
        ValueError: dev pairs without both labels, or no calibration question.
    """
    from dupq.models.runtime import OpenVINORuntime, cached_key

    t0 = time.perf_counter()
    folder = Path(folder)
    dev_pairs = list(dev_pairs)
    if {p.label for p in dev_pairs} != {0, 1}:
        raise ValueError("the int8 check needs dev pairs with both duplicates and non-duplicates")
    meta = SiameseEncoder.read_config(folder)
    encoder = SiameseEncoder.load(folder, backend="openvino", shared_export_cache=shared_export_cache)
    source = packaged_model_path() if meta.get("weights") == PACKAGED else str(folder / meta.get("weights", "."))
    export_dir = folder / "openvino"
    fp32 = OpenVINORuntime.load_or_export(
        None, source, export_dir, precision="f32", loader=lambda: encoder.model,
        shared_cache=shared_export_cache if meta.get("weights") == PACKAGED else None,
    )
    fp32.microbatch = False
    options = quantize_ir(export_dir, folder / INT8_DIR, calibration_sample(texts, subset_size),
                          key=cached_key(export_dir) or fp32.key, subset_size=subset_size,
                          smooth_quant_alpha=smooth_quant_alpha)
    rest = float_precision()
    int8 = OpenVINORuntime.load_int8(folder / INT8_DIR, precision={"bf16": "bf16", "fp32": "f32"}[rest])
    int8.microbatch = False
    normalize = encoder.energy.normalize
    scores = {}
    for name, runtime in (("fp32", fp32), ("int8", int8)):
        result = evaluate_encoder(lambda t, r=runtime: r.encode(t, normalize=normalize), dev_pairs,
                                  energy=encoder.energy, threshold=encoder.threshold)
        scores[name] = summary(result)
    passed, reason = int8_decision(scores["fp32"], scores["int8"], tolerance)
    record = {
        "decision": "int8" if passed else "float",
        "reason": reason,
        "tolerance": tolerance,
        "fp32": scores["fp32"],
        "int8": scores["int8"],
        "int8_rest_precision": rest,
        "dev": {"pairs": len(dev_pairs), "file": dev_name},
        "calibration": options,
        "cpu": cpu_flags(),
        "seconds": round(time.perf_counter() - t0, 1),
        "checked_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    from dupq.models.cross import CROSS_DIR, has_cross

    if has_cross(folder):
        from dupq.evaluation import pair_scores

        twin = pair_scores(lambda t: fp32.encode(t, normalize=normalize), dev_pairs, energy=encoder.energy)
        sample = calibration_sample(texts, subset_size + 1)
        pairs = list(calibration_pairs or zip(sample, sample[1:], strict=False))
        try:
            record["cross"] = quantize_cross(folder / CROSS_DIR, dev_pairs, twin, pairs, tolerance=tolerance,
                                             subset_size=subset_size, smooth_quant_alpha=smooth_quant_alpha)
        except Exception as e:  # noqa: BLE001 - the re-ranker then stays in float; the twin's record stands
            record["cross"] = {"decision": "float", "reason": f"quantisation failed: {e}"}
            _write_record(folder / CROSS_DIR, record["cross"], meta_file=CROSS_META)
    _write_record(folder, record)
    return record


def quantize_cross(folder: Path, dev_pairs: Sequence[Pair], twin_scores: Any, pairs: Sequence[tuple[str, str]], *,
                   tolerance: float, subset_size: int, smooth_quant_alpha: float | None) -> dict[str, Any]:
    """The cross-encoder in ``folder`` (``<version>/cross``) quantised and checked; the record is written into
    its cross.json as ``"int8"`` and returned."""
    import random as _random

    from dupq.evaluation import pair_metrics
    from dupq.models.cross import CrossScorer
    from dupq.models.runtime import KEY_PRECISION, OpenVINOPairScorer, cached_key, weights_key

    t0 = time.perf_counter()
    cross = CrossScorer.load(folder, backend="openvino")
    fp32 = OpenVINOPairScorer.load_or_export(None, folder, folder / "openvino", precision="f32",
                                             loader=lambda: cross.model)
    pairs = list(dict.fromkeys(pairs))
    _random.Random(0).shuffle(pairs)
    options = quantize_ir(folder / "openvino", folder / INT8_DIR, pairs[:subset_size],
                          key=cached_key(folder / "openvino") or weights_key(folder, precision=KEY_PRECISION,
                                                                             kind="pair-logit"),
                          subset_size=subset_size, smooth_quant_alpha=smooth_quant_alpha)
    rest = float_precision()
    int8 = OpenVINOPairScorer.load_int8(folder / INT8_DIR, precision={"bf16": "bf16", "fp32": "f32"}[rest])
    question_pairs = [(p.question1, p.question2) for p in dev_pairs]
    labels = [p.label for p in dev_pairs]
    scores = {}
    for name, scorer in (("fp32", fp32), ("int8", int8)):
        fused = cross.rerank_logits(scorer.logits(question_pairs), twin_scores)
        metrics = pair_metrics(fused, labels, threshold=cross.rerank_threshold)
        scores[name] = {"ap": round(float(metrics["ap"]), 5), "f1": round(float(metrics["f1"]), 5)}
    passed, reason = int8_decision(scores["fp32"], scores["int8"], tolerance)
    record = {"decision": "int8" if passed else "float", "reason": reason, "tolerance": tolerance,
              "scorer": cross.scorer, "fp32": scores["fp32"], "int8": scores["int8"], "int8_rest_precision": rest,
              "calibration": options, "seconds": round(time.perf_counter() - t0, 1)}
    _write_record(folder, record, meta_file=CROSS_META)
    return record


def _write_record(folder: Path, record: dict[str, Any], *, meta_file: str = META_FILE) -> None:
    """Put ``record`` into the folder's dupq.json (or cross.json) as ``"int8"`` (written aside, then renamed)."""
    path = folder / meta_file
    meta = json.loads(path.read_text())
    meta["int8"] = record
    tmp = path.with_name(meta_file + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, path)
