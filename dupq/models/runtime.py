"""Fast inference for :class:`dupq.models.encoder.SiameseEncoder`: the encoder exported to OpenVINO, run in bf16.

Why OpenVINO in bf16 (measured on this 2-core AVX-512 VNNI / AVX512-BF16 CPU, ratios from one run, see
docs/benchmarks.md): against plain ``SentenceTransformer.encode`` in fp32 at batch 32, OpenVINO runs the same
graph 3-4x faster in fp32 and 3.5-6.6x faster with bf16 inference precision (the ratio grows with the
machine's load), at a mean cosine of 0.99999 to the fp32 embeddings and the same dev pair AP. Inference is
98% of a bulk encode (tokenising 4,096 questions: 1.9%), so precision is the lever. A static int8 graph (NNCF,
:mod:`dupq.models.quantize`) is served only for a version whose own dev check passed, and only where the
``inference_precision`` setting allows it (docs/benchmarks.md, int8 inference). ONNX Runtime would pull
``optimum`` (which downgrades transformers), and torch's own bf16 / dynamic int8 were slower or lossier.

What is exported: the whole SentenceTransformer pipeline after tokenisation (transformer, pooling, any
Dense/Normalize modules) as one graph with dynamic batch and sequence axes, traced by
``openvino.convert_model``, plus the model's tokenizer as the Rust ``tokenizers`` library runs it
(``tokenizer.json``: truncating at the model's max sequence length, not padding). Serving from a cached
export therefore needs only ``openvino``, ``tokenizers`` and numpy: torch, transformers and
sentence-transformers are imported only to export (or for the torch backend and training).

One question (a search) is padded to a fixed length (:data:`SINGLE_BUCKETS`) and run through a static-shape
compilation of that length with one thread, from buffers bound once per thread; several texts are
tokenised once, sorted by length so each batch pads only to its own longest text, and run through the
dynamic graph (one batch: the latency compilation; several: the throughput one, asynchronously).

Cache: the IR lives in ``models/<version>/openvino/`` (``model.xml``/``model.bin``/``tokenizer.json``/
``export.json``); export.json
records a key of the source weights' files (path, size, mtime), the OpenVINO version and this module's export
format, so a retrained or replaced model is exported again. Within a process, compiled models are shared by
key, so many homes over the same weights (the test suite) export once; across processes, an export the
caller marks shareable (``shared_cache``: the packaged base model) is linked from a per-user folder.
This module knows nothing of dupq's models: the caller says what may be shared and where.

Example:
    >>> from dupq.models.encoder import load_sentence_transformer, packaged_model_path     # doctest: +SKIP
    >>> st = load_sentence_transformer(packaged_model_path())                    # doctest: +SKIP
    >>> rt = OpenVINORuntime.load_or_export(st, packaged_model_path(), "/tmp/ov")  # doctest: +SKIP
    >>> rt.encode(["How do I reverse a list in Python?"]).shape                  # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dupq.system import cpu_threads

log = logging.getLogger(__name__)

#: Bump when the exported graph or its inputs change, so old caches are re-exported.
EXPORT_FORMAT = 1
#: Files of an export folder. TOKENIZER is the model's tokenizer exactly as :func:`make_tokenizer` configures
#: it (truncation, no padding), saved beside the graph so that serving needs neither torch nor transformers.
XML, BIN, EXPORT_META, TOKENIZER = "model.xml", "model.bin", "export.json", "tokenizer.json"
#: Largest batch run through OpenVINO at once: past 32 the attention buffers outgrow the caches and
#: throughput drops (measured: b32 1.0, b64 0.8, b128 0.6-0.9 of b32 throughput on this CPU).
MAX_BATCH = 32
#: Source files that never influence the exported graph (docs, our own metadata: a version's dupq.json and its
#: cross-encoder's cross.json, where the int8 check is recorded after the export).
_IGNORED = {"README.md", ".gitattributes", "dupq.json", "cross.json"}
#: Folders of a version that are not its weights: the float and int8 exports, checkpoints, the cross-encoder.
_NOT_WEIGHTS = ("openvino", "openvino-int8", "checkpoints", "cross")
#: The precision an export's key is computed with, whatever precision it is compiled in: the IR on disk is fp32
#: either way, so f32 and bf16 share one export (the value the key always had: existing caches stay valid).
KEY_PRECISION = "bf16"


def weights_key(source: str | Path, *, precision: str, kind: str = "embedding") -> str:
    """A key of the model files under ``source``: changes whenever the weights or config files change.

    Uses each file's relative path, size and mtime (cheap: no hashing of the 90 MB weights) plus the
    OpenVINO version, the export format and the inference precision.
    """
    import openvino

    source = Path(source)
    h = hashlib.sha256(f"{EXPORT_FORMAT}|{openvino.__version__}|{precision}".encode())
    if kind != "embedding":  # the twin's keys stay what they were; other graphs of the same files differ
        h.update(f"|{kind}".encode())
    for f in sorted(source.rglob("*")):
        rel = f.relative_to(source)
        # cross/ is a version's cross-encoder (keyed on its own), openvino*/ exports of these files.
        if not f.is_file() or rel.parts[0] in _NOT_WEIGHTS or rel.name in _IGNORED:
            continue
        st = f.stat()
        h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


class _Pipeline:
    """The SentenceTransformer after tokenisation, as a traceable module of (input_ids, attention_mask)."""

    def __new__(cls, st: Any) -> Any:
        import torch

        class Pipeline(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.st = st

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                # token_type_ids are all zero for single texts; BERT's default buffer gives the same result.
                return self.st({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]

        return Pipeline().eval()


class _PairLogitPipeline:
    """A CrossEncoder's transformer as a traceable module of a tokenised pair batch -> its logit (batch,)."""

    def __new__(cls, ce: Any) -> Any:
        import torch

        class PairLogit(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.hf = ce.model  # the transformers sequence-classification model (num_labels=1)

            def forward(
                self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
            ) -> torch.Tensor:
                out = self.hf(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
                return out.logits[:, 0]

        return PairLogit().eval()


def export(st: Any, dest: str | Path, *, key: str, kind: str = "embedding") -> None:
    """Convert ``st`` to OpenVINO IR in ``dest`` (written to a sibling folder, then renamed into place).

    ``kind="embedding"``: a SentenceTransformer, (input_ids, attention_mask) -> sentence embedding.
    ``kind="pair-logit"``: a num_labels=1 CrossEncoder, (input_ids, attention_mask, token_type_ids) of
    tokenised pairs -> logit.
    """
    import openvino as ov
    import torch

    dest = Path(dest)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        dyn = ov.PartialShape([-1, -1])
        if kind == "pair-logit":
            example = st.preprocess([("an example question to trace with", "and its pair"), ("short", "one")])
            names = ("input_ids", "attention_mask", "token_type_ids")
            module = _PairLogitPipeline(st)
        else:
            example = st.preprocess(["an example question to trace the graph with", "short one"])
            names = ("input_ids", "attention_mask")
            module = _Pipeline(st)
        # Tracing warns about shape checks it freezes (mask length == sequence length, no causal mask);
        # both hold for every input this graph gets, and the agreement test checks the result.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ov.convert_model(
                module,
                example_input={n: example[n] for n in names},
                input=[(n, dyn, ov.Type.i64) for n in names],
            )
        # fp32 weights on disk: the precision is chosen at compile time, and "f32" must stay exact.
        ov.save_model(model, str(tmp / XML), compress_to_fp16=False)
        (tmp / TOKENIZER).write_text(make_tokenizer(st).to_str())
        (tmp / EXPORT_META).write_text(json.dumps({"key": key, "openvino": ov.__version__, "format": EXPORT_FORMAT}))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_key(folder: str | Path) -> str | None:
    """The key recorded in an export folder, or None when there is no complete export."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / EXPORT_META).read_text())
    except (OSError, ValueError):
        return None
    if not (folder / XML).is_file() or not (folder / BIN).is_file():
        return None
    return meta.get("key")


_COMPILED: dict[tuple[str, str, int], _Compiled] = {}
_COMPILED_FROM: dict[str, Path] = {}  # key -> an export folder holding it, to link into other homes
_LOCK = threading.Lock()


#: Sequence lengths one question is padded to: each is compiled as a static [1, L] model. Static shapes skip
#: the per-call shape inference and buffer reallocation of the dynamic graph, and the padding stays under
#: 50% of a question (measured on the bundled bank, one question at a time, loaded 2-core machine, one run
#: each: dynamic 4.2-5.1 ms, static 16/32/64/... 2.9-3.7 ms, static 16/24/32/48/... 0.5-0.8 ms less again;
#: docs/benchmarks.md). The attention mask keeps the pads out of attention and of the mean pooling, so the
#: vector is the unpadded one up to rounding. Each compilation holds its own bf16 weights (~40 MB), so past
#: 64 word pieces (rare for a question, and compute-bound, where the dynamic graph loses little) one question
#: goes through the dynamic latency model instead.
SINGLE_BUCKETS = (16, 24, 32, 48, 64)
#: Buckets compiled at warm-up (:meth:`OpenVINORuntime.warm_up`): 9-32 word pieces hold nearly every real
#: question (the bank: median 15, max 27); other lengths compile on first use (~0.5 s once per process).
WARM_BUCKETS = (16, 24, 32)
#: Inference threads of one question: two where the machine has them. On a quiet 2-core machine a static
#: [1, 16] request takes 2.3 ms with two threads vs 3.1 ms with one, and a whole one-question encode 2.1 vs
#: 3.4 ms (docs/benchmarks.md, Speed). The per-layer barrier of two threads costs more than it gains only
#: when another process takes a core away (loaded machine: 4.9-7.3 ms vs 2.9-3.7 ms); concurrent searches
#: do not split the cores further, since the coalescer runs them as one batch.
SINGLE_THREADS = min(2, cpu_threads())


class _Compiled:
    """One exported model, compiled on demand for its three uses (each compiled once, on first need).

    - ``single(L)``: one question padded to bucket ``L`` (:data:`SINGLE_BUCKETS`), a static [1, L] model
      with :data:`SINGLE_THREADS` inference threads; each thread keeps one infer request per bucket whose
      input tensors wrap preallocated numpy buffers (no allocation per search).
    - ``latency``: dynamic shapes, one stream over every core: one batch (coalesced searches, a small add).
    - ``bulk``: one stream per core, each with one thread, fed asynchronously: no cross-thread barrier per
      layer, which also keeps it fast when other processes take cores away (measured 8.8-10.5x plain torch
      fp32 vs 5.5-6.8x for the latency model on bulk encodes, same run, on a loaded 2-core machine).
    """

    def __init__(self, core: Any, model: Any, precision: str, threads: int, tokenizer: Any) -> None:
        self.core, self.model, self.precision, self.threads = core, model, precision, threads
        self.tokenizer = tokenizer  # the export's own: shared by every runtime over this compiled model
        self.input_names = [i.get_any_name() for i in model.inputs]
        self._latency: Any = None
        self._bulk: Any = None
        self._single: dict[int, Any] = {}
        self._single_locks: dict[int, threading.Lock] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def _compile(self, model: Any, config: dict[str, Any]) -> Any:
        return self.core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": self.precision, **config})

    @property
    def latency(self) -> Any:
        with self._lock:
            if self._latency is None:
                self._latency = self._compile(
                    self.model, {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY"}
                )
            return self._latency

    def request(self) -> Any:
        """This thread's infer request on the latency model (one per thread: requests are not thread-safe)."""
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.latency.create_infer_request()
        return req

    @property
    def bulk(self) -> Any:
        with self._lock:
            if self._bulk is None:
                self._bulk = self._compile(
                    self.model,
                    {
                        "PERFORMANCE_HINT": "THROUGHPUT",
                        "NUM_STREAMS": self.threads,
                        "INFERENCE_NUM_THREADS": self.threads,
                    },
                )
            return self._bulk

    def run_bulk(self, batches: Sequence[tuple[np.ndarray, dict[str, np.ndarray]]], out: np.ndarray) -> None:
        """Run ``(rows, inputs)`` batches on the throughput model, one in flight per stream, and write each
        batch's first output into ``out[rows]``.

        This thread starts the requests and waits for them itself (``start_async`` + ``wait``) rather than
        handing OpenVINO a Python callback (``AsyncInferQueue``): a callback runs Python on OpenVINO's worker
        thread, and a garbage collection it happens to trigger there can free OpenVINO objects from inside
        their own thread pool, which aborts the process ("terminate called without an active exception":
        2 of 40 re-ranking processes on a loaded 2-core machine; docs/benchmarks.md).
        """
        requests = self.bulk_requests()
        in_flight: list[np.ndarray | None] = [None] * len(requests)

        def collect(slot: int) -> None:
            rows, in_flight[slot] = in_flight[slot], None
            if rows is not None:
                requests[slot].wait()
                out[rows] = requests[slot].get_output_tensor(0).data.reshape((len(rows), *out.shape[1:]))

        try:
            for i, (rows, inputs) in enumerate(batches):
                slot = i % len(requests)  # batches come longest first, so round-robin keeps streams even
                collect(slot)
                requests[slot].start_async(inputs)  # copies the inputs into the request's own tensors
                in_flight[slot] = rows
            for slot in range(len(requests)):
                collect(slot)
        except BaseException:  # no request may still be running when the error leaves (reused later)
            for slot, rows in enumerate(in_flight):
                if rows is not None:
                    with contextlib.suppress(Exception):
                        requests[slot].wait()
            raise

    def bulk_requests(self) -> list[Any]:
        """This thread's infer requests on the throughput model, one per stream."""
        reqs = getattr(self._local, "bulk", None)
        if reqs is None:
            reqs = self._local.bulk = [self.bulk.create_infer_request() for _ in range(self.threads)]
        return reqs

    def single(self, length: int) -> Any:
        """The static [1, length] compilation (compiled now if it is not yet)."""
        compiled = self._single.get(length)
        if compiled is None:
            with self._lock:  # one lock per length: warm_up compiles several lengths in parallel
                lock = self._single_locks.setdefault(length, threading.Lock())
            with lock:
                compiled = self._single.get(length)
                if compiled is None:
                    model = self.model.clone()
                    model.reshape({name: [1, length] for name in self.input_names})
                    compiled = self._compile(
                        model, {"INFERENCE_NUM_THREADS": SINGLE_THREADS, "PERFORMANCE_HINT": "LATENCY"}
                    )
                    self._single[length] = compiled
        return compiled

    def single_request(self, length: int) -> tuple[Any, dict[str, np.ndarray]]:
        """This thread's request on bucket ``length`` and the numpy buffers its inputs are bound to."""
        slots = getattr(self._local, "single", None)
        if slots is None:
            slots = self._local.single = {}
        slot = slots.get(length)
        if slot is None:
            import openvino as ov

            req = self.single(length).create_infer_request()
            buffers = {name: np.zeros((1, length), dtype=np.int64) for name in self.input_names}
            for name, buf in buffers.items():
                req.set_tensor(name, ov.Tensor(buf, shared_memory=True))
            slot = slots[length] = (req, buffers)
        return slot


def _int8_compiled(folder: str | Path, precision: str, threads: int | None) -> tuple[_Compiled, str]:
    """The int8 export in ``folder`` read and wrapped for compiling (shared per key, precision and threads)."""
    import openvino as ov

    folder = Path(folder)
    threads = threads or cpu_threads()
    # The float key it was made from plus its own file's mtime: quantised again, it is compiled again.
    key = f"int8:{cached_key(folder)}:{(folder / BIN).stat().st_mtime_ns}"
    with _LOCK:
        memo = _COMPILED.get((key, precision, threads))
        if memo is None:
            from tokenizers import Tokenizer

            core = ov.Core()
            tokenizer = Tokenizer.from_file(str(folder / TOKENIZER))
            memo = _COMPILED[(key, precision, threads)] = _Compiled(
                core, core.read_model(str(folder / XML)), precision, threads, tokenizer)
        return memo, key


def bucket_for(n: int) -> int | None:
    """The padded length of a question of ``n`` tokens: the first bucket that holds it, else None (dynamic).

    Example:
        >>> bucket_for(15), bucket_for(17), bucket_for(64), bucket_for(65)
        (16, 24, 64, None)
    """
    for b in SINGLE_BUCKETS:
        if b >= n:
            return b
    return None


class OpenVINORuntime:
    """A compiled OpenVINO encoder plus its tokenizer; thread-safe (one infer request per thread).

    Args:
        compiled: The exported pipeline, compiled for latency and for throughput.
        tokenizer: A ``tokenizers.Tokenizer`` (truncating, not padding).
        key: The weights key it was exported from.
    """

    def __init__(self, compiled: _Compiled, tokenizer: Any, key: str) -> None:
        self.compiled = compiled
        self.tokenizer = tokenizer
        self.key = key
        self.dim = int(compiled.model.outputs[0].get_partial_shape()[1].get_length())
        #: Coalesce concurrent single-text encodes into one batch (see :class:`Coalescer`).
        self.microbatch = True
        self._coalescer = Coalescer(self._encode)

    @classmethod
    def load_or_export(
        cls,
        st: Any,
        source: str | Path,
        cache_dir: str | Path | None,
        *,
        precision: str = "bf16",
        threads: int | None = None,
        shared_cache: str | Path | None = None,
        loader: Callable[[], Any] | None = None,
    ) -> OpenVINORuntime:
        """The runtime for ``st`` (loaded from ``source``), exported into ``cache_dir`` unless cached there.

        Args:
            st: The SentenceTransformer, already loaded from ``source`` and unchanged since; or None with
                ``loader``.
            source: Folder its weights came from (the cache key is computed over its files).
            cache_dir: ``models/<version>/openvino``; None keeps the export in memory only.
            precision: OpenVINO inference precision, ``"bf16"`` (default) or ``"f32"``.
            threads: Inference threads (default: the cores this process may use).
            shared_cache: A folder of exports shared by every home: the export is linked from there when
                present, and put there after exporting. Pass it only for weights that are the same in every
                home (the packaged base model); None: no sharing.
            loader: Instead of ``st``: loads it, called only when there is no usable export (so that serving
                from a cached export never imports torch, transformers or sentence-transformers).
        """
        import openvino as ov

        get_st = _once(loader if st is None else (lambda: st))
        threads = threads or cpu_threads()
        key = weights_key(source, precision=KEY_PRECISION)
        shared = Path(shared_cache) if shared_cache is not None else None
        with _LOCK:
            memo = _COMPILED.get((key, precision, threads))
            if memo is not None:
                if cache_dir is not None and cached_key(cache_dir) != key:
                    _link_or_export(get_st, Path(cache_dir), key, shared=shared)
                return cls(memo, memo.tokenizer, key)
            core = ov.Core()
            if cache_dir is not None:
                cache_dir = Path(cache_dir)
                if cached_key(cache_dir) != key:
                    log.info("exporting %s to OpenVINO in %s", source, cache_dir)
                    try:
                        _link_or_export(get_st, cache_dir, key, shared=shared)
                    except OSError as e:  # a read-only home: run from memory
                        log.warning("cannot write the OpenVINO export to %s (%s); exporting in memory", cache_dir, e)
                        cache_dir = None
            if cache_dir is not None:
                model = core.read_model(str(cache_dir / XML))
                tokenizer = _cached_tokenizer(cache_dir, get_st)
                _COMPILED_FROM[key] = cache_dir
            else:
                model = _convert_in_memory(get_st())
                tokenizer = make_tokenizer(get_st())
            compiled = _Compiled(core, model, precision, threads, tokenizer)
            _COMPILED[(key, precision, threads)] = compiled
            return cls(compiled, tokenizer, key)

    @classmethod
    def load_int8(cls, folder: str | Path, *, precision: str = "bf16", threads: int | None = None) -> OpenVINORuntime:
        """The runtime of a static int8 export (``models/<version>/openvino-int8``, :mod:`dupq.models.quantize`).

        The quantised MatMuls run in int8 (VNNI / AMX-INT8 where the CPU has them); ``precision`` (``"bf16"``
        or ``"f32"``) is what the rest of the graph (softmax, norms, GELU) computes in. Compiled models are
        shared per (export key, precision, threads) as :meth:`load_or_export` shares them.
        """
        compiled, key = _int8_compiled(folder, precision, threads)
        return cls(compiled, compiled.tokenizer, key)

    def _request(self) -> Any:
        return self.compiled.request()

    def warm_up(self, buckets: Sequence[int] = WARM_BUCKETS, *, batches: bool = True) -> None:
        """Compile one-question ``buckets`` now and, with ``batches``, the dynamic latency model that runs
        the searches micro-batching coalesces (in parallel: each compilation is mostly one core), so that
        the first searches do not pay for it; then run one padded question through each bucket."""
        todo = list(dict.fromkeys(b for b in map(bucket_for, buckets) if b is not None))
        threads = [threading.Thread(target=self.compiled.single, args=(b,)) for b in todo[1:]]
        if batches:
            threads.append(threading.Thread(target=lambda: self.compiled.latency))
        for t in threads:
            t.start()
        self.compiled.single(todo[0])
        for t in threads:
            t.join()
        for b in todo:
            req, buffers = self.compiled.single_request(b)
            req.infer()

    def encode(self, texts: Sequence[str], *, batch_size: int = MAX_BATCH, normalize: bool = False) -> np.ndarray:
        """Embed texts: float32 (n, dim), rows in input order; L2-normalised when ``normalize``.

        A single text (a search) joins whatever other single texts are being encoded at that moment
        (:class:`Coalescer`), when :attr:`microbatch` is on.
        """
        if len(texts) == 1 and self.microbatch:
            out = self._coalescer(texts[0])[None, :].copy()
        elif len(texts) == 1:
            out = self._encode_one(texts[0])[None, :]
        else:
            out = self._encode(texts, batch_size)
        if normalize and len(out):
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _encode_one(self, text: str) -> np.ndarray:
        """One text through its static bucket: the thread's preallocated buffers, filled in place."""
        ids = self.tokenizer.encode(text).ids  # not encode_batch: its thread pool costs more than one text
        n = len(ids)
        bucket = bucket_for(n)
        if bucket is None:  # a long text: the dynamic graph at its own length
            inputs = {"input_ids": np.asarray([ids], dtype=np.int64), "attention_mask": np.ones((1, n), np.int64)}
            return self._request().infer(inputs)[0][0].copy()
        req, buffers = self.compiled.single_request(bucket)
        input_ids, mask = buffers["input_ids"], buffers["attention_mask"]
        input_ids[0, :n] = ids
        input_ids[0, n:] = 0
        mask[0, :n] = 1
        mask[0, n:] = 0
        req.infer()
        return req.get_output_tensor(0).data[0].copy()  # the request reuses its output buffer

    def _encode(self, texts: Sequence[str], batch_size: int = MAX_BATCH) -> np.ndarray:
        n = len(texts)
        if n == 1:
            return self._encode_one(texts[0])[None, :]
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        batch_size = max(1, min(batch_size, MAX_BATCH))
        ids = [e.ids for e in self.tokenizer.encode_batch(list(texts))]  # tokenised once, in parallel
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")  # longest first: each batch pads to its own longest
        batches = []
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            width = int(lengths[rows[0]])
            input_ids = np.zeros((len(rows), width), dtype=np.int64)
            for j, r in enumerate(rows):
                input_ids[j, : lengths[r]] = ids[r]
            mask = (np.arange(width)[None, :] < lengths[rows][:, None]).astype(np.int64)
            batches.append((rows, {"input_ids": input_ids, "attention_mask": mask}))
        if len(batches) == 1:
            out[batches[0][0]] = self._request().infer(batches[0][1])[0]
            return out
        self.compiled.run_bulk(batches, out)  # several batches: the throughput model, one per stream
        return out


class OpenVINOPairScorer:
    """A CrossEncoder (num_labels=1) exported to OpenVINO: tokenised pairs in, logits out; thread-safe.

    Built like :class:`OpenVINORuntime` (same weights key, same export/compile cache, same precision), but
    the graph is :class:`_PairLogitPipeline` and a pair is tokenised as ``[CLS] a [SEP] b [SEP]`` with its
    token type ids, exactly as the CrossEncoder tokenises it.

    Example:
        >>> sc = OpenVINOPairScorer.load_or_export(ce, "models/v1/cross", "models/v1/cross/openvino")  # doctest: +SKIP
        >>> sc.logits([("How do I boil an egg?", "Best way to boil eggs?")])                          # doctest: +SKIP
    """

    def __init__(self, compiled: _Compiled, tokenizer: Any, key: str) -> None:
        self.compiled = compiled
        self.tokenizer = tokenizer
        self.key = key

    @classmethod
    def load_or_export(
        cls,
        ce: Any,
        source: str | Path,
        cache_dir: str | Path | None,
        *,
        precision: str = "bf16",
        threads: int | None = None,
        loader: Callable[[], Any] | None = None,
    ) -> OpenVINOPairScorer:
        """The scorer for ``ce`` (loaded from ``source``), exported into ``cache_dir`` unless cached there.

        ``ce`` may be None with ``loader`` (called only when there is no usable export), as in
        :meth:`OpenVINORuntime.load_or_export`.
        """
        import openvino as ov

        get_ce = _once(loader if ce is None else (lambda: ce))
        threads = threads or cpu_threads()
        key = weights_key(source, precision=KEY_PRECISION, kind="pair-logit")
        with _LOCK:
            memo = _COMPILED.get((key, precision, threads))
            if memo is not None:
                # Compiled already (another home in this process served the same weights): this home still
                # gets its export, as the twin's does, so a later process serves it without torch.
                if cache_dir is not None and cached_key(cache_dir) != key:
                    try:
                        _link_or_export(get_ce, Path(cache_dir), key, kind="pair-logit")
                    except OSError as e:  # a read-only home: the compiled model in memory serves
                        log.warning("cannot write the OpenVINO export to %s (%s)", cache_dir, e)
                return cls(memo, memo.tokenizer, key)
            core = ov.Core()
            if cache_dir is not None and cached_key(cache_dir) != key:
                try:
                    _link_or_export(get_ce, Path(cache_dir), key, kind="pair-logit")
                except OSError as e:  # a read-only home: run from memory
                    log.warning("cannot write the OpenVINO export to %s (%s); exporting in memory", cache_dir, e)
                    cache_dir = None
            if cache_dir is None:
                import tempfile

                with tempfile.TemporaryDirectory(prefix="dupq-ov-") as d:
                    export(get_ce(), Path(d) / "openvino", key="memory", kind="pair-logit")
                    model = core.read_model(str(Path(d) / "openvino" / XML))
                tokenizer = make_tokenizer(get_ce())
            else:
                model = core.read_model(str(Path(cache_dir) / XML))
                tokenizer = _cached_tokenizer(Path(cache_dir), get_ce)
                _COMPILED_FROM[key] = Path(cache_dir)
            compiled = _Compiled(core, model, precision, threads, tokenizer)
            _COMPILED[(key, precision, threads)] = compiled
            return cls(compiled, tokenizer, key)

    @classmethod
    def load_int8(cls, folder: str | Path, *, precision: str = "bf16", threads: int | None = None
                  ) -> OpenVINOPairScorer:
        """The scorer of a static int8 export of the pair-logit graph (``cross/openvino-int8``), built as
        :meth:`OpenVINORuntime.load_int8` builds the twin's."""
        compiled, key = _int8_compiled(folder, precision, threads)
        return cls(compiled, compiled.tokenizer, key)

    def _request(self) -> Any:
        return self.compiled.request()

    def logits(self, pairs: Sequence[tuple[str, str]], *, batch_size: int = MAX_BATCH) -> np.ndarray:
        """The cross-encoder's logit of each pair, float32 (n,), in input order."""
        n = len(pairs)
        out = np.empty(n, dtype=np.float32)
        if n == 0:
            return out
        encs = self.tokenizer.encode_batch([(a, b) for a, b in pairs])
        lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")  # longest first: each batch pads to its own longest
        batch_size = max(1, min(batch_size, MAX_BATCH))
        threads = self.compiled.threads
        if 1 < n <= batch_size * threads:
            # A re-ranking request (~20 pairs): one batch per stream of the throughput model, in parallel
            # (measured 190 vs 250 ms for 20 pairs on the loaded 2-core machine, against one batch).
            batch_size = -(-n // threads)
        batches = []
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            width = int(lengths[rows[0]])
            ids = np.zeros((len(rows), width), dtype=np.int64)
            types = np.zeros((len(rows), width), dtype=np.int64)
            for j, r in enumerate(rows):
                ids[j, : lengths[r]] = encs[r].ids
                types[j, : lengths[r]] = encs[r].type_ids
            mask = (np.arange(width)[None, :] < lengths[rows][:, None]).astype(np.int64)
            batches.append((rows, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}))
        if len(batches) == 1:
            out[batches[0][0]] = self._request().infer(batches[0][1])[0].reshape(-1)
            return out
        self.compiled.run_bulk(batches, out)
        return out


class Coalescer:
    """Opportunistic micro-batching: concurrent single-text calls share one batch, with no waiting window.

    The first caller to find the runtime idle runs everything queued at that moment (up to ``max_batch``)
    as one batch; callers that arrive meanwhile queue up and are served by the next batch. A lone request
    runs alone at once, so single-client latency is unchanged, while under concurrent load several searches
    share one inference (measured earlier with 4 concurrent threads on 2 cores: 1.3-1.6x the encodes per second
    of running them one at a time, in a benchmark process shared with other work; not re-measured since the
    one-question path became static buckets, docs/benchmarks.md).

    Args:
        run: Encodes a list of texts into rows (in order).
        max_batch: Most texts per batch.

    Example:
        >>> c = Coalescer(lambda ts: np.array([[len(t)] for t in ts], dtype=np.float32))
        >>> c("four").tolist()
        [4.0]
    """

    def __init__(self, run: Callable[[list[str]], np.ndarray], max_batch: int = MAX_BATCH) -> None:
        self._run = run
        self._max = max_batch
        self._cv = threading.Condition()
        self._queue: list[_Slot] = []
        self._busy = False

    def __call__(self, text: str) -> np.ndarray:
        slot = _Slot(text)
        with self._cv:
            self._queue.append(slot)
        while True:
            with self._cv:
                while self._busy and not slot.done:
                    self._cv.wait()
                if slot.done:
                    return slot.result()
                self._busy = True
                batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            try:
                rows = self._run([s.text for s in batch])
                for s, row in zip(batch, rows, strict=True):
                    s.value = row
            except BaseException as e:  # every caller of the batch gets the error, not a hang
                for s in batch:
                    s.error = e
            finally:
                with self._cv:
                    for s in batch:
                        s.done = True
                    self._busy = False
                    self._cv.notify_all()


class _Slot:
    __slots__ = ("text", "value", "error", "done")

    def __init__(self, text: str) -> None:
        self.text = text
        self.value: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False

    def result(self) -> np.ndarray:
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value


def make_tokenizer(st: Any) -> Any:
    """The model's own fast tokenizer, truncating at its max sequence length and not padding."""
    from tokenizers import Tokenizer

    backend = getattr(st.tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("the OpenVINO backend needs a model with a fast (tokenizers) tokenizer")
    tok = Tokenizer.from_str(backend.to_str())  # a private copy: padding settings are per tokenizer
    tok.no_padding()
    tok.enable_truncation(int(getattr(st, "max_seq_length", None) or 512))
    return tok


def _once(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` called at most once (loading a model twice for one export would double its cost)."""
    box: list[Any] = []

    def get() -> Any:
        if not box:
            box.append(fn())
        return box[0]

    return get


def _cached_tokenizer(folder: Path, get_model: Callable[[], Any]) -> Any:
    """The tokenizer saved with the export in ``folder``; an export made before it was saved there gets it
    from the model once (the only case that loads torch for a cached export), written for the next start."""
    from tokenizers import Tokenizer

    f = folder / TOKENIZER
    if f.is_file():
        return Tokenizer.from_file(str(f))
    tok = make_tokenizer(get_model())
    _save_tokenizer(folder, tok)  # a read-only home: the next start loads the model again
    return tok


def _save_tokenizer(folder: Path, tok: Any) -> None:
    """Write ``tok`` as ``folder``'s TOKENIZER (written then renamed); a folder that cannot be written is
    left as it is."""
    f = folder / TOKENIZER
    tmp = f.with_name(f"{f.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        tmp.write_text(tok.to_str())
        os.replace(tmp, f)
    except OSError as e:
        log.debug("cannot save the tokenizer in %s: %s", folder, e)
        tmp.unlink(missing_ok=True)


def _convert_in_memory(st: Any) -> Any:
    import tempfile

    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="dupq-ov-") as d:
        export(st, Path(d) / "openvino", key="memory")
        return ov.Core().read_model(str(Path(d) / "openvino" / XML))  # read_model loads .bin into memory


def _copy_export(src: Path, dest: Path) -> None:
    """Put a copy of export folder ``src`` at ``dest`` (hard links where possible), written then renamed."""
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name in (XML, BIN, EXPORT_META, TOKENIZER):
            if name == TOKENIZER and not (src / name).is_file():
                continue  # an export made before the tokenizer was saved with it: added on first load
            try:
                os.link(src / name, tmp / name)
            except OSError:  # another filesystem
                shutil.copy2(src / name, tmp / name)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _link_or_export(get_st: Callable[[], Any], dest: Path, key: str, *, shared: Path | None = None,
                    kind: str = "embedding") -> None:
    """Link an export of the same key made earlier (in this process or the ``shared`` folder), else export.

    Callers pass ``shared`` only for the packaged base model (the same export in every home, made once per
    machine instead of once per home); a trained version's export would only pile up there. ``kind`` is
    :func:`export`'s (the key already names it: an export of another kind never has the same key).
    """
    for src in (_COMPILED_FROM.get(key), shared / key if shared else None):
        if src is not None and cached_key(src) == key and src.resolve() != dest.resolve():
            if not (src / TOKENIZER).is_file():
                # An export made before the tokenizer was saved with it: completed once, here, so that the
                # homes linking it later start without loading the model (torch) for its tokenizer.
                _save_tokenizer(src, make_tokenizer(get_st()))
            _copy_export(src, dest)
            return
    export(get_st(), dest, key=key, kind=kind)
    if shared is not None:
        try:
            shared.mkdir(parents=True, exist_ok=True)
            _copy_export(dest, shared / key)
        except OSError as e:  # a read-only or full cache only costs the next home an export
            log.debug("not sharing the export in %s: %s", shared, e)
