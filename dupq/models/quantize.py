"""Static int8 of a version's OpenVINO export (NNCF post-training quantisation) and the serving precision.

A version may serve in int8 only where its own check passed: the int8 model's dev pair AP and nDCG@10 each
within :data:`dupq.config.INT8_TOLERANCE` of the fp32 model's on the same pairs, the same harness
(:func:`dupq.evaluation.evaluate_encoder`). The check and its numbers live in the version's ``dupq.json``
under ``"int8"`` (:func:`dupq.training.quantize.quantize_version` writes them); this module makes the int8
graph and decides, from the ``inference_precision`` setting, that record and the CPU, what a version serves in.

The int8 graph: the version's fp32 IR (``models/<version>/openvino/``, :mod:`dupq.models.runtime`) through
``nncf.quantize`` with ``ModelType.TRANSFORMER`` (which keeps the softmax, the layer norms and the GELU in
floating point and applies SmoothQuant to the MatMuls), calibrated on a sample of the version's own questions,
one question per calibration item (no padding), the embeddings' Gather and the pooling never quantised
(NNCF quantises only the weighted ops' inputs: MatMul/FullyConnected). It is saved beside the float export
in ``models/<version>/openvino-int8/`` with the key of the float export it was made from, so a retrained or
replaced model is never served by a stale int8 graph (it falls back to float, logged).

Example:
    >>> resolve_precision("auto", {"decision": "int8"}, int8_ready=True, cpu_bf16=True)
    ('int8', 'int8: its dev check passed')
    >>> resolve_precision("auto", {"decision": "float"}, int8_ready=True, cpu_bf16=False)[0]
    'fp32'
    >>> resolve_precision("bf16", None, int8_ready=False, cpu_bf16=False)
    ('fp32', 'bf16 asked, but this CPU has no native bf16: fp32')
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dupq.config import INFERENCE_PRECISIONS

log = logging.getLogger(__name__)

#: The int8 export's folder inside a version folder (beside ``openvino/``, the float export).
INT8_DIR = "openvino-int8"
#: Calibration questions by default: NNCF's own default subset size; more changed the dev AP by < 0.05 points
#: on the packaged model (docs/benchmarks.md, int8 inference).
CALIBRATION_SIZE = 300


@functools.lru_cache(maxsize=1)
def cpu_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively here (AVX512-BF16 or AMX); without it a bf16 hint
    would be emulated or ignored, so dupq asks for f32 instead and says so.

    The plugin's ``OPTIMIZATION_CAPABILITIES`` come from cpuid, so where it says BF16 a tiny graph (a MatMul and a
    Softmax, ~0.1 s once per process) is also compiled with the bf16 hint: with oneDNN capped below
    AVX512_CORE_BF16 (``ONEDNN_MAX_CPU_ISA=AVX2``, how an AVX2-only CPU is emulated on a newer one) the plugin
    honours the cap and that compilation fails, where a bf16 model would too.
    """
    import openvino as ov

    try:
        core = ov.Core()
        if "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            return False
        import openvino.opset13 as ops

        x = ops.parameter([1, 4, 8, 8], ov.Type.f32)
        graph = ov.Model([ops.softmax(ops.matmul(x, x, False, True), -1)], [x])
        core.compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
        return True
    except Exception:  # noqa: BLE001 - an unknown plugin, or bf16 kernels it cannot run: no bf16
        return False


def cpu_flags() -> list[str]:
    """The CPU flags that decide inference speed (for benchmarks and ``dupq models list --json``)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return [f for f in wanted if f in flags]


def float_precision(cpu_has_bf16: bool | None = None) -> str:
    """The best float precision of this CPU: ``"bf16"`` where it is native, else ``"fp32"``."""
    return "bf16" if (cpu_bf16() if cpu_has_bf16 is None else cpu_has_bf16) else "fp32"


def resolve_precision(setting: str, check: dict[str, Any] | None, *, int8_ready: bool,
                      cpu_bf16: bool) -> tuple[str, str]:
    """What a version serves in, and why: ``("int8" | "bf16" | "fp32", reason)``.

    Args:
        setting: ``inference_precision``: ``auto`` (int8 where the version's check passed, else the best
            float precision of the CPU), ``int8``, ``bf16`` or ``fp32`` (forced).
        check: The version's ``dupq.json`` ``"int8"`` record (None: never checked).
        int8_ready: Whether the version's int8 export is present and made from its current weights.
        cpu_bf16: Whether the CPU has native bf16.
    """
    if setting not in INFERENCE_PRECISIONS:
        raise ValueError(f"inference_precision must be one of {INFERENCE_PRECISIONS}, got {setting!r}")
    best = "bf16" if cpu_bf16 else "fp32"
    if setting == "fp32":
        return "fp32", "fp32 (set)"
    if setting == "bf16":
        return ("bf16", "bf16 (set)") if cpu_bf16 else ("fp32", "bf16 asked, but this CPU has no native bf16: fp32")
    if setting == "int8":
        if int8_ready:
            passed = (check or {}).get("decision") == "int8"
            return "int8", "int8 (set)" + ("" if passed else "; its dev check did not pass")
        return best, f"int8 asked, but the version has no int8 export (dupq models quantize): {best}"
    if check is None:
        return best, f"{best}: int8 never checked"
    if check.get("decision") != "int8":
        return best, f"{best}: {check.get('reason') or 'the int8 check did not pass'}"
    if not int8_ready:
        return best, f"{best}: the int8 export is missing or stale (dupq models quantize)"
    return "int8", "int8: its dev check passed"


def int8_ready(version_dir: str | Path, float_key: str | None) -> bool:
    """Whether ``version_dir`` holds an int8 export made from the float export of key ``float_key``."""
    folder = Path(version_dir) / INT8_DIR
    try:
        meta = json.loads((folder / "export.json").read_text())
    except (OSError, ValueError):
        return False
    return (float_key is not None and meta.get("key") == float_key and (folder / "model.xml").is_file()
            and (folder / "model.bin").is_file())


def quantize_ir(
    float_dir: str | Path,
    dest: str | Path,
    texts: Sequence[str] | Sequence[tuple[str, str]],
    *,
    key: str,
    subset_size: int = CALIBRATION_SIZE,
    smooth_quant_alpha: float | None = None,
    ignored_types: Sequence[str] = (),
    fast_bias_correction: bool = True,
) -> dict[str, Any]:
    """Quantise the float IR in ``float_dir`` to static int8 in ``dest`` (written aside, then renamed).

    Args:
        float_dir: A float export folder (``model.xml``/``model.bin``/``tokenizer.json``).
        dest: The int8 folder to write (``models/<version>/openvino-int8``).
        texts: Calibration questions (the version's own); at most ``subset_size`` are used. For a cross-encoder's
            pair-logit graph: question pairs, tokenised as ``[CLS] a [SEP] b [SEP]`` with their token type ids.
        key: The float export's key, recorded so that a stale int8 graph is recognised.
        subset_size: Calibration questions used.
        smooth_quant_alpha: SmoothQuant's alpha for the MatMuls (None: NNCF's default for transformers;
            negative: SmoothQuant off).
        ignored_types: Operation types never quantised, besides those ``ModelType.TRANSFORMER`` keeps in float.
        fast_bias_correction: NNCF's fast bias correction (False: the slower full one).

    Returns:
        The options used (recorded in dupq.json's int8 record).
    """
    import nncf
    import numpy as np
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters
    from tokenizers import Tokenizer

    float_dir, dest = Path(float_dir), Path(dest)
    tok = Tokenizer.from_file(str(float_dir / "tokenizer.json"))
    sample = [t for t in dict.fromkeys(texts) if (t[0].strip() if isinstance(t, tuple) else t.strip())][:subset_size]
    if not sample:
        raise ValueError("no calibration questions to quantise with")
    model = ov.Core().read_model(str(float_dir / "model.xml"))
    names = {i.get_any_name() for i in model.inputs}
    items = []
    for enc in tok.encode_batch(sample):
        ids = np.asarray([enc.ids], dtype=np.int64)
        item = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in names:
            item["token_type_ids"] = np.asarray([enc.type_ids], dtype=np.int64)
        items.append(item)
    advanced = None
    if smooth_quant_alpha is not None:
        advanced = AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=float(smooth_quant_alpha)))
    ignored = nncf.IgnoredScope(types=list(ignored_types), validate=False) if ignored_types else None
    # NNCF draws progress bars and logs on stdout: both go to stderr (or nowhere), so that stdout stays the
    # command's own (``dupq models quantize --json``).
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            quantized = nncf.quantize(
                model,
                nncf.Dataset(items),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(items),
                fast_bias_correction=fast_bias_correction,
                ignored_scope=ignored,
                advanced_parameters=advanced,
            )
    finally:
        nncf_log.setLevel(level)
    options = {"calibration_questions": len(items), "smooth_quant_alpha": smooth_quant_alpha,
               "ignored_types": list(ignored_types), "fast_bias_correction": fast_bias_correction,
               "model_type": "transformer", "nncf": nncf.__version__}
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        ov.save_model(quantized, str(tmp / "model.xml"), compress_to_fp16=False)
        shutil.copy2(float_dir / "tokenizer.json", tmp / "tokenizer.json")
        (tmp / "export.json").write_text(json.dumps({"key": key, "openvino": ov.__version__, "int8": options}))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return options
