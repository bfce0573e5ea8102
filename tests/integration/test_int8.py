"""Static int8 per version (issue 28): the check after training, ``dupq models quantize``, the
``inference_precision`` setting, ``dupq models list`` and ``dupq eval --runtime``.

Real NNCF quantisation of the real model, calibrated on a few questions, checked on the fixtures' dev pairs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from support import FIXTURES, tiny_version

from dupq.cli import main
from dupq.config import Settings, SettingsError
from dupq.evaluation.precision import int8_decision
from dupq.models.encoder import SiameseEncoder
from dupq.models.quantize import INT8_DIR, cpu_bf16

DEV = str(FIXTURES / "train" / "dev.tsv")
BOTH_BACKENDS = True  # the CLI tests run on the SQLite home and on PostgreSQL
BEST_FLOAT = "bf16" if cpu_bf16() else "fp32"


def test_an_isa_capped_below_bf16_counts_as_no_bf16() -> None:
    """OpenVINO honours ONEDNN_MAX_CPU_ISA (how the AVX2-only kind is emulated) while its capabilities still say
    BF16 from cpuid: dupq must then choose fp32, or a bf16 model fails to compile."""
    import subprocess
    import sys

    code = "from dupq.models.quantize import cpu_bf16, float_precision; print(cpu_bf16(), float_precision())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"},
                         capture_output=True, text=True, timeout=120, check=True).stdout.split()
    assert out == ["False", "fp32"]


def test_training_skips_the_check_on_too_few_dev_pairs() -> None:
    folder = tiny_version._trained()  # trained with the default int8=True, on 10 dev pairs
    record = SiameseEncoder.read_config(folder)["int8"]
    assert record["decision"] == "float" and "10 dev pairs are too few" in record["reason"]
    assert not (folder / INT8_DIR).exists()
    enc = SiameseEncoder.load(folder, cached=False, backend="openvino", precision="auto")
    assert enc.serving_precision == (BEST_FLOAT, f"{BEST_FLOAT}: {record['reason']}")


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> Path:
    """The tiny version (with its re-ranker) quantised and checked on the fixtures' dev pairs, once."""
    from dupq.data import read_pairs
    from dupq.training.quantize import quantize_version

    folder = tmp_path_factory.mktemp("int8") / "v"
    shutil.copytree(tiny_version._trained(), folder, ignore=shutil.ignore_patterns("openvino"))
    train = read_pairs(FIXTURES / "train" / "pairs.tsv").pairs
    quantize_version(folder, read_pairs(DEV).pairs, [q for p in train for q in (p.question1, p.question2)],
                     subset_size=40, calibration_pairs=[(p.question1, p.question2) for p in train])
    return folder


def test_quantize_version_records_the_decision(quantized: Path) -> None:
    record = SiameseEncoder.read_config(quantized)["int8"]
    assert (quantized / INT8_DIR / "model.xml").is_file() and (quantized / INT8_DIR / "model.bin").is_file()
    for model in ("fp32", "int8"):
        assert 0 < record[model]["ap"] <= 1 and 0 < record[model]["ndcg@10"] <= 1
    passed, reason = int8_decision(record["fp32"], record["int8"], record["tolerance"])
    assert record["decision"] == ("int8" if passed else "float") and record["reason"] == reason
    assert record["tolerance"] == 0.003 and record["calibration"]["model_type"] == "transformer"
    assert 0 < record["calibration"]["calibration_questions"] <= 40

    # The re-ranker gets the same treatment: its pair-logit graph quantised and checked on dev pair AP.
    cross = json.loads((quantized / "cross" / "cross.json").read_text())["int8"]
    assert cross == record["cross"] and (quantized / "cross" / INT8_DIR / "model.xml").is_file()
    assert cross["decision"] == ("int8" if int8_decision(cross["fp32"], cross["int8"], 0.003)[0] else "float")
    assert "ndcg@10" not in cross["fp32"] and cross["calibration"]["calibration_questions"] > 0


def test_the_reranker_serves_int8_when_forced(quantized: Path) -> None:
    from dupq.models.cross import CrossScorer

    folder = quantized / "cross"
    pairs = [("How do I reverse a list in Python?", "Python: reversing a list"),
             ("How do I boil an egg?", "Which laptop should I buy?")]
    forced = CrossScorer.load(folder, backend="openvino", precision="int8")
    fp32 = CrossScorer.load(folder, backend="openvino", precision="fp32")
    assert forced.serving_precision[0] == "int8" and fp32.serving_precision[0] == "fp32"
    a, b = forced.logits(pairs), fp32.logits(pairs)
    assert forced.runtime.key.startswith("int8:") and not fp32.runtime.key.startswith("int8:")
    assert np.all(np.abs(a - b) < 0.5 + 0.1 * np.abs(b))  # close to fp32's logits
    assert CrossScorer.load(folder, backend="openvino").serving_precision[0] == BEST_FLOAT  # never int8 unasked


def test_the_setting_forces_each_way(quantized: Path, tmp_path: Path) -> None:
    folder = tmp_path / "v"
    shutil.copytree(quantized, folder)  # copy2 keeps the weights' mtimes: the int8 graph stays theirs
    decision = SiameseEncoder.read_config(folder)["int8"]["decision"]
    text = ["How do I reverse a list in Python?", "Best way to boil an egg?"]

    def load(precision: str | None) -> SiameseEncoder:
        return SiameseEncoder.load(folder, cached=False, backend="openvino", precision=precision)

    auto = load("auto")
    assert auto.serving_precision[0] == ("int8" if decision == "int8" else BEST_FLOAT)
    forced = load("int8")
    assert forced.serving_precision[0] == "int8"
    assert forced.runtime.key.startswith("int8:")  # the int8 graph really serves
    fp32 = load("fp32")
    assert fp32.serving_precision == ("fp32", "fp32 (set)") and not fp32.runtime.key.startswith("int8:")
    assert load("bf16").serving_precision[0] == BEST_FLOAT  # bf16 on a CPU without it: fp32, and says so
    assert load(None).serving_precision[0] == BEST_FLOAT  # training, the gate, a plain eval: never int8
    a, b = forced.encode(text), fp32.encode(text)
    cosines = (a * b).sum(axis=1)
    assert np.all(cosines > 0.95) and not np.allclose(a, b, atol=1e-6)  # close to fp32, but not the same graph

    # New weights (a retrain into the folder): the int8 graph of the old ones is never served.
    weights = next(p for p in folder.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    precision, why = load("auto").serving_precision
    assert precision == BEST_FLOAT
    assert "stale" in why or decision != "int8"
    assert load("int8").serving_precision[0] == BEST_FLOAT  # forced, but there is no int8 graph of these weights


def test_settings_reject_an_unknown_precision() -> None:
    assert Settings.load(environ={"DUPQ_INFERENCE_PRECISION": "int8"}).inference_precision == "int8"
    assert Settings.load(environ={}).inference_precision == "auto"
    with pytest.raises(SettingsError, match="inference_precision must be one of auto, int8, bf16, fp32"):
        Settings.load(environ={"DUPQ_INFERENCE_PRECISION": "int4"})


def test_quantize_base_then_list_and_eval_at_the_serving_precision(runner, tmp_path: Path) -> None:
    r = runner.invoke(main, ["models", "quantize", "base", "--pairs", DEV, "--subset-size", "40", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)  # NNCF's progress bars went to stderr
    record = out["int8"]
    assert record["dev"] == {"pairs": 10, "file": "dev.tsv"}
    assert 0 < record["calibration"]["calibration_questions"] <= 40  # the small bank's stored questions
    assert out["precision"] == ("int8" if record["decision"] == "int8" else BEST_FLOAT), out["precision_reason"]

    listed = json.loads(runner.invoke(main, ["models", "list", "--json"]).output)
    base = next(v for v in listed if v["version"] == "base")
    assert base["int8"]["decision"] == record["decision"] and base["precision"] == out["precision"]
    table = runner.invoke(main, ["models", "list"]).output
    line = next(line for line in table.splitlines() if line.startswith("*"))
    assert f" {out['precision']} " in line and ("passed AP" in line or "FAILED AP" in line)

    runtime = json.loads(runner.invoke(main, ["eval", DEV, "--runtime", "--json"]).output)
    assert runtime["precision"] == out["precision"]
    plain = json.loads(runner.invoke(main, ["eval", DEV, "--json"]).output)
    assert plain["precision"] == BEST_FLOAT  # a plain eval never scores int8
    assert abs(plain["results"]["base"]["pairs"]["ap"] - record["fp32"]["ap"]) < 0.01

    runner.env["DUPQ_INFERENCE_PRECISION"] = "fp32"
    forced = json.loads(runner.invoke(main, ["eval", DEV, "--runtime", "--json"]).output)
    assert forced["precision"] == "fp32"
    assert forced["results"]["base"]["pairs"]["ap"] == pytest.approx(record["fp32"]["ap"], abs=1e-4)
    assert " fp32 " in next(line for line in runner.invoke(main, ["models", "list"]).output.splitlines()
                            if line.startswith("*"))


def test_quantize_errors_are_one_line(runner, tmp_path: Path) -> None:
    r = runner.invoke(main, ["models", "quantize", "v20990101-000000", "--pairs", DEV])
    assert r.exit_code == 1 and "unknown model version" in r.output and "Traceback" not in r.output
    one_label = tmp_path / "dups.tsv"
    one_label.write_text("question1\tquestion2\tlabel\nHow do I boil an egg?\tBest way to boil eggs?\t1\n")
    r = runner.invoke(main, ["models", "quantize", "base", "--pairs", str(one_label)])
    assert r.exit_code == 1 and "both duplicates and non-duplicates" in r.output
    runner.env["DUPQ_INFERENCE_PRECISION"] = "int4"
    r = runner.invoke(main, ["models", "list"])
    assert r.exit_code == 2 and "inference_precision must be one of" in r.output
