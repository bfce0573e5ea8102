"""What this CPU allows the encoder: matmul throughput, the bare OpenVINO request, and the floors they set.

Measures and prints (no test): the fp32 GEMM throughput torch reaches on this machine (one large square
product, and the [16, 384] x [384, 1536] shape of one question's feed-forward layer), the exported model's
bare OpenVINO request for one question ([1, 16], back to back and after a 20 ms idle gap), its bulk
throughput over dev questions, and, when NNCF is importable, the same with weight-only int8 weights
(``nncf.compress_weights``) and their mean / min cosine to the f32 vectors. From the model's size it then
prints the least time the issue-10 / issue-11 targets need at the measured GEMM rate, so a missed target can
be told apart from one the hardware cannot reach. NNCF is not a dupq dependency; to include its rows:

    pip install --target /tmp/nncf_site --no-deps nncf ninja pydot tabulate pyparsing
    PYTHONPATH=/tmp/nncf_site python scripts/research/cpu_limits.py <version>/openvino ../shared/data/dev/qqp_pairs_dev.tsv

Example:
    python scripts/research/cpu_limits.py ~/.local/share/dupq/models/base/openvino ../shared/data/dev/qqp_pairs_dev.tsv
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np


def gemm_rates(threads: int) -> dict[str, float]:
    """GFLOP/s of torch fp32 matmuls: a 2048^3 product and one question's feed-forward shape."""
    import torch

    torch.set_num_threads(threads)
    out = {}
    for name, (m, k, n), reps in (("gemm_2048", (2048, 2048, 2048), 10), ("gemm_16x384x1536", (16, 384, 1536), 3000)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(max(2, reps // 20)):
            a @ b
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        out[name] = 2 * m * k * n * reps / (time.perf_counter() - t) / 1e9
    return out


def dev_questions(path: Path, n: int) -> list[str]:
    """The first ``n`` distinct questions of a pair file, read as dupq reads it."""
    from dupq.data import read_pairs

    qs = (q for p in read_pairs(path).pairs for q in (p.question1, p.question2))
    return list(dict.fromkeys(qs))[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", type=Path, help="an OpenVINO export folder (model.xml + tokenizer.json)")
    ap.add_argument("dev", type=Path, help="a pair file whose questions are encoded")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import openvino as ov
    from tokenizers import Tokenizer

    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    res: dict[str, object] = {"load_start": os.getloadavg()[0]}
    res.update(gemm_rates(args.threads))
    print(json.dumps({k: round(v, 1) for k, v in res.items() if k.startswith("gemm")}), flush=True)

    core = ov.Core()
    tok = Tokenizer.from_file(str(args.export / "tokenizer.json"))
    encs = tok.encode_batch(dev_questions(args.dev, 2048))
    lengths = [len(e.ids) for e in encs]
    res["mean_wordpieces"] = statistics.mean(lengths)

    def read(mode: str | None):
        model = core.read_model(str(args.export / "model.xml"))
        if mode:
            import nncf

            model = nncf.compress_weights(model, mode=getattr(nncf.CompressWeightsMode, mode))
        return model

    variants: dict[str, str | None] = {"f32": None}
    try:
        import nncf  # noqa: F401

        variants["int8_weights"] = "INT8_ASYM"
    except ImportError:
        print("nncf not importable: no int8-weight rows")

    names = [i.get_any_name() for i in read(None).inputs]

    def feed(batch, length: int | None = None):
        width = length or max(len(e.ids) for e in batch)
        ids = np.zeros((len(batch), width), np.int64)
        mask = np.zeros_like(ids)
        for i, e in enumerate(batch):
            ids[i, : len(e.ids)], mask[i, : len(e.ids)] = e.ids, 1
        d = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            d["token_type_ids"] = np.zeros_like(ids)
        return d

    order = np.argsort(lengths)
    singles, ref = {}, None
    for tag, mode in variants.items():
        model = read(mode)
        bulk = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": args.threads,
                                                 "INFERENCE_NUM_THREADS": args.threads})
        out = np.zeros((len(encs), 384), np.float32)

        def run_bulk(bulk=bulk, out=out) -> None:
            queue = ov.AsyncInferQueue(bulk, args.threads)
            queue.set_callback(lambda req, idx: out.__setitem__(idx, req.get_output_tensor(0).data))
            for s in range(0, len(encs), 32):
                idx = order[s : s + 32]
                queue.start_async(feed([encs[i] for i in idx]), idx)
            queue.wait_all()

        run_bulk()
        times = []
        for _ in range(3):
            t = time.perf_counter()
            run_bulk()
            times.append(time.perf_counter() - t)
        unit = out / np.linalg.norm(out, axis=1, keepdims=True)
        ref = unit.copy() if ref is None else ref
        cos = (unit * ref).sum(1)
        res[f"{tag}_bulk_qps"] = len(encs) / statistics.median(times)
        res[f"{tag}_cos_mean"], res[f"{tag}_cos_min"] = float(cos.mean()), float(cos.min())
        model.reshape({n: [1, 16] for n in names})
        singles[tag] = core.compile_model(
            model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": args.threads}
        ).create_infer_request()

    short = [e for e in encs if len(e.ids) <= 16][:300]
    for gap in (0.0, 0.02):
        times_by: dict[str, list[float]] = {t: [] for t in singles}
        for i, e in enumerate(short if gap == 0 else short[:150]):
            for tag in list(singles)[:: 1 if i % 2 else -1]:  # alternate which variant goes first
                if gap:
                    time.sleep(gap)
                t = time.perf_counter()
                singles[tag].infer(feed([e], 16))
                times_by[tag].append(1000 * (time.perf_counter() - t))
        for tag, ts in times_by.items():
            res[f"{tag}_single16_ms_{'idle20ms' if gap else 'b2b'}"] = statistics.median(ts[10:])

    # Floors from the model's size: 6 layers x (4 x 384^2 + 2 x 384 x 1536) weights, 2 FLOP per weight per token.
    flop_per_token = 2 * 6 * (4 * 384 * 384 + 2 * 384 * 1536)
    rate = res["gemm_2048"] * 1e9
    res["floor_one_question_ms"] = 1000 * 16 * flop_per_token / rate
    res["floor_one_question_ms_at_m16_rate"] = 1000 * 16 * flop_per_token / (res["gemm_16x384x1536"] * 1e9)
    res["floor_rerank20_ms"] = 1000 * 20 * (2 * res["mean_wordpieces"] - 1) * flop_per_token / rate
    res["ceiling_bulk_qps"] = rate / (res["mean_wordpieces"] * flop_per_token)
    res["load_end"] = os.getloadavg()[0]
    for k, v in res.items():
        print(f"{k:40s} {v:.4f}" if isinstance(v, float) else f"{k:40s} {v}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
