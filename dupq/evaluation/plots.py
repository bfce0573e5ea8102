"""Plots of how a model trained and where its threshold sits: matplotlib (Agg, no display) rendering SVG.

Every function returns an SVG document as a string; :func:`data_uri` wraps one for an ``<img>`` (each plot
then keeps its own element ids, and nothing in it can run). Used by the admin page and by
``dupq eval --report FILE.html`` (:func:`html_report`).

Where the data comes from:

- training loss over steps: ``loss_history`` in a version's ``dupq.json`` (the trainer's logged losses);
- dev AP over steps: ``history`` (the dev evaluations during training);
- precision-recall curve and score histograms: a ``(score, label)`` sample — a version's ``dev_scores`` (up to
  :data:`DEV_SCORE_SAMPLE` dev pairs, stored at training time by :class:`PairScoreRecorder`), or the scores
  ``dupq eval`` computed on its pair file.

Example:
    >>> svg = pr_curve([0.9, 0.8, 0.3, 0.2], [1, 0, 1, 0], threshold=0.5)
    >>> svg.lstrip().startswith("<svg") or svg.lstrip().startswith("<?xml")
    True
"""

from __future__ import annotations

import base64
import html
import io
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from dupq.models.energy import Energy

#: Dev pairs whose (score, label) a version keeps for its plots.
DEV_SCORE_SAMPLE = 2000

_COLORS = ["#0b57b0", "#c0392b", "#1e8449", "#8e44ad", "#b07d00", "#17a2b8", "#555555"]


def _figure(width: float = 6.4, height: float = 3.6) -> tuple[Any, Any]:
    from matplotlib.figure import Figure  # no pyplot: thread-safe, no global backend state

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _svg(fig: Any) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text: small and selectable
        fig.savefig(buf, format="svg")
    return buf.getvalue()


def data_uri(svg: str) -> str:
    """``data:image/svg+xml;base64,...`` for an ``<img src>``."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def _message(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#555555")
    ax.set_xticks([])
    ax.set_yticks([])


# -- training ---------------------------------------------------------------------------------------------------
def training_curves(versions: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Training loss (left) and dev AP (right) over optimiser steps, one line per version.

    Args:
        versions: ``(name, dupq.json metadata)`` of each version; those without a history are skipped.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.4), layout="constrained")
    ax_loss, ax_ap = fig.subplots(1, 2)
    drawn = 0
    for n, (name, meta) in enumerate(versions):
        loss = meta.get("loss_history") or []
        dev = [h for h in meta.get("history") or [] if h.get("ap") is not None and (h.get("step") or 0) >= 0]
        if not loss and not dev:
            continue
        color = _COLORS[n % len(_COLORS)]
        if loss:
            ax_loss.plot([e["step"] for e in loss], [e["loss"] for e in loss], color=color, label=name, lw=1.5)
        if dev:
            ax_ap.plot([h["step"] for h in dev], [h["ap"] for h in dev], color=color, marker="o", label=name, lw=1.5)
            best = meta.get("best_step")
            for h in dev:
                if best is not None and h["step"] == best:
                    ax_ap.plot([h["step"]], [h["ap"]], marker="*", markersize=13, color=color, zorder=5)
        drawn += 1
    if not drawn:
        _message(ax_loss, "no trained version yet")
        _message(ax_ap, "no trained version yet")
    else:
        ax_loss.set(title="Training loss", xlabel="step", ylabel="loss")
        ax_ap.set(title="Dev pair AP during training (★ kept)", xlabel="step", ylabel="average precision")
        for ax in (ax_loss, ax_ap):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return _svg(fig)


# -- threshold ---------------------------------------------------------------------------------------------------
def _pr_points(scores: np.ndarray, labels: np.ndarray, higher_is_better: bool) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores if higher_is_better else scores, kind="stable")
    y = labels[order]
    tp = np.cumsum(y)
    k = np.arange(1, len(y) + 1)
    return tp / max(1, y.sum()), tp / k  # recall, precision at each cut


def _at_threshold(
    scores: np.ndarray, labels: np.ndarray, threshold: float, higher_is_better: bool
) -> tuple[float, float]:
    pred = scores >= threshold if higher_is_better else scores <= threshold
    tp = float((pred & (labels == 1)).sum())
    precision = tp / pred.sum() if pred.sum() else 1.0
    recall = tp / max(1, (labels == 1).sum())
    return float(recall), float(precision)


def pr_curve(
    scores: Sequence[float],
    labels: Sequence[int],
    *,
    threshold: float | None,
    higher_is_better: bool = True,
    title: str = "Precision–recall",
    policy: str | None = None,
) -> str:
    """The precision-recall curve of ``(score, label)`` pairs with the served threshold marked (and the
    operating point it was calibrated for, ``policy``: ``max_f1``, ``precision:P`` or ``recall:R``)."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    fig, ax = _figure(5.2, 3.8)
    if len(s) == 0 or y.sum() == 0 or y.sum() == len(y):
        _message(ax, "needs scored pairs of both labels")
        return _svg(fig)
    recall, precision = _pr_points(s, y, higher_is_better)
    ax.plot(recall, precision, color=_COLORS[0], lw=1.8, label="dev pairs")
    ax.axhline(y.mean(), color="#888888", ls=":", lw=1, label=f"chance ({y.mean():.2f})")
    if threshold is not None:
        r, p = _at_threshold(s, y, threshold, higher_is_better)
        ax.plot(
            [r],
            [p],
            marker="o",
            markersize=9,
            color=_COLORS[1],
            zorder=5,
            label=f"served threshold {threshold:.3f}" + (f" ({policy})" if policy else "") + f": P {p:.2f}, R {r:.2f}",
        )
    ax.set(title=title, xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return _svg(fig)


def score_histograms(
    scores: Sequence[float],
    labels: Sequence[int],
    *,
    threshold: float | None,
    energy: str = "cosine",
    title: str = "Scores of duplicates and non-duplicates",
) -> str:
    """Histograms of the scores of duplicate and non-duplicate pairs, with the threshold as a line."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    fig, ax = _figure(5.2, 3.8)
    if len(s) == 0:
        _message(ax, "no scored pairs")
        return _svg(fig)
    bins = np.linspace(float(s.min()), float(s.max()) + 1e-9, 31)
    ax.hist(s[y == 0], bins=bins, alpha=0.6, color=_COLORS[0], label=f"non-duplicates ({int((y == 0).sum())})")
    ax.hist(s[y == 1], bins=bins, alpha=0.6, color=_COLORS[4], label=f"duplicates ({int((y == 1).sum())})")
    if threshold is not None:
        ax.axvline(threshold, color=_COLORS[1], lw=2, label=f"threshold {threshold:.3f}")
    ax.set(title=title, xlabel="cosine similarity" if energy == "cosine" else "Euclidean distance", ylabel="pairs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _svg(fig)


# -- version against version ---------------------------------------------------------------------------------------
def version_comparison(
    rows: Sequence[tuple[str, Mapping[str, float | None]]],
    *,
    title: str = "Version against version (each on its own dev split)",
) -> str:
    """Grouped bars: each row ``(name, {"dev AP": x, "best F1": y, "nDCG@10": z})``; a missing value is no bar."""
    fig, ax = _figure(max(5.2, 1.2 + 1.1 * len(rows)), 3.6)
    metrics = sorted({m for _, vals in rows for m, v in vals.items() if v is not None}, key=str)
    if not rows or not metrics:
        _message(ax, "no evaluated version yet")
        return _svg(fig)
    width = 0.8 / len(metrics)
    x = np.arange(len(rows))
    for j, m in enumerate(metrics):
        vals = [vals.get(m) for _, vals in rows]
        xs = [x[i] + j * width for i, v in enumerate(vals) if v is not None]
        ys = [v for v in vals if v is not None]
        bars = ax.bar(xs, ys, width=width, color=_COLORS[j % len(_COLORS)], label=m)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(x + width * (len(metrics) - 1) / 2, [name for name, _ in rows], fontsize=8, rotation=15)
    center, span = (len(rows) - 1) / 2 + width * (len(metrics) - 1) / 2, max(len(rows), 2.5)
    ax.set_xlim(center - span / 2, center + span / 2)  # one or two groups stay bars, not walls
    ax.set(title=title, ylim=(0, 1.08), ylabel="score")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="lower right")
    return _svg(fig)


def version_rows(versions: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, float | None]]]:
    """Rows for :func:`version_comparison` from ``ModelRegistry.list()`` (dev metrics of each version)."""
    rows = []
    for v in versions:
        dev = (v.get("metrics") or {}).get("dev") or {}
        p, r = dev.get("pairs") or {}, dev.get("retrieval") or {}
        if p or r:
            name = v["version"] + (" (current)" if v.get("current") else "")
            rows.append((name, {"dev AP": p.get("ap"), "best F1": p.get("best_f1"), "nDCG@10": r.get("ndcg@10")}))
    return rows


# -- collecting scores ------------------------------------------------------------------------------------------
class PairScoreRecorder:
    """Wraps an encode function and keeps the vectors it returns, so pair scores cost no second encoding.

    Example:
        >>> rec = PairScoreRecorder(encode_fn)                     # doctest: +SKIP
        >>> evaluate_encoder(rec, dev_pairs, energy="cosine")      # doctest: +SKIP
        >>> rec.sample(dev_pairs, "cosine")                        # doctest: +SKIP
        {'scores': [...], 'labels': [...], 'of': 412}
    """

    def __init__(self, encode: Callable[[list[str]], Any]) -> None:
        self.encode = encode
        self.vectors: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> Any:
        out = self.encode(texts)
        for t, v in zip(texts, np.asarray(out, dtype=np.float32), strict=True):
            self.vectors[t] = v
        return out

    def scores(self, pairs: Sequence[Any], energy: Energy | str) -> np.ndarray:
        """``energy``'s pair energy of each pair, from the recorded vectors (as the version scores pairs)."""
        a = np.stack([self.vectors[p.question1] for p in pairs])
        b = np.stack([self.vectors[p.question2] for p in pairs])
        return Energy.from_name(energy).pair_energy(a, b)

    def sample(
        self, pairs: Sequence[Any], energy: str, *, limit: int = DEV_SCORE_SAMPLE, seed: int = 0
    ) -> dict[str, Any]:
        """``{"scores", "labels", "of"}``: up to ``limit`` of the pairs (a fixed random sample), scores rounded."""
        pairs = [p for p in pairs if p.question1 in self.vectors and p.question2 in self.vectors]
        of = len(pairs)
        if len(pairs) > limit:
            pairs = random.Random(seed).sample(pairs, limit)
        if not pairs:
            return {"scores": [], "labels": [], "of": 0}
        return {
            "scores": [round(float(x), 4) for x in self.scores(pairs, energy)],
            "labels": [int(p.label) for p in pairs],
            "of": of,
        }


# -- the eval report ------------------------------------------------------------------------------------------
def html_report(*, title: str, summary: str, table: str, figures: Sequence[tuple[Any, ...]]) -> str:
    """A self-contained HTML page: the metrics table and each ``(caption, svg[, wide])`` as an image."""
    full = ' class="full"'
    figs = "\n".join(
        f'<figure{full if len(f) > 2 and f[2] else ""}><img src="{data_uri(f[1])}" alt="{html.escape(f[0])}">'
        f"<figcaption>{html.escape(f[0])}</figcaption></figure>"
        for f in figures
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 64rem; margin: 1.5rem auto; padding: 0 1rem; color: #1f1f1f; }}
pre {{ background: #f5f5f5; padding: .75rem; border-radius: 6px; overflow-x: auto; }}
.plots {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 28rem), 1fr)); gap: 1rem; }}
figure {{ margin: 0; border: 1px solid #ddd; border-radius: 8px; padding: .5rem; }}
figure.full {{ grid-column: 1 / -1; }}
img {{ width: 100%; height: auto; }} figcaption {{ font-size: .85rem; color: #444; }}
</style></head><body><main>
<h1>{html.escape(title)}</h1>
<p>{html.escape(summary)}</p>
<pre>{html.escape(table)}</pre>
<div class="plots">
{figs}
</div>
</main></body></html>
"""


def write_eval_report(
    path: Any,
    versions: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
    *,
    data_name: str,
    model: str,
    encoder: Any,
    results: Mapping[str, Mapping[str, Any]],
    table: str,
    pairs: Sequence[Any] | None,
    recorder: PairScoreRecorder | None,
) -> None:
    """``dupq eval --report``: the metrics table and the plots, as one self-contained HTML file.

    On a pair file: the evaluated model's precision-recall curve (served threshold marked) and score histograms
    on those pairs (scores from the vectors the evaluation computed), and every evaluated model on those pairs.
    From ``versions`` (each version's registry record and dupq.json, which the caller reads from its home, on
    either backend): training loss / dev AP over steps of each version and their dev metrics.
    """
    from pathlib import Path

    figures: list[tuple[Any, ...]] = []
    if pairs is not None and recorder is not None:
        scores = recorder.scores(list(pairs), encoder.energy_name)
        labels = [p.label for p in pairs]
        figures.append(
            (
                f"Precision–recall of {model} on {data_name}; the dot is its served threshold",
                pr_curve(
                    scores,
                    labels,
                    threshold=encoder.threshold,
                    higher_is_better=encoder.higher_is_better,
                    title=f"Precision–recall of {model}",
                    policy=encoder.metadata.get("threshold_policy"),
                ),
            )
        )
        figures.append(
            (
                f"Scores of duplicate and non-duplicate pairs of {data_name} under {model}",
                score_histograms(
                    scores,
                    labels,
                    threshold=encoder.threshold,
                    energy=encoder.energy_name,
                    title=f"Scores under {model}",
                ),
            )
        )
    rows = []
    for label, r in results.items():
        p, ret = r.get("pairs") or {}, r.get("retrieval") or {}
        rows.append((label, {"AP": p.get("ap"), "best F1": p.get("best_f1"), "nDCG@10": ret.get("ndcg@10")}))
    figures.append((f"Models on {data_name}", version_comparison(rows, title=f"Models on {Path(data_name).name}")))
    if versions:
        figures.append(
            (
                "Training loss and dev AP over steps of each version (★: the checkpoint kept)",
                training_curves([(record["version"], meta) for record, meta in versions]),
                True,
            )
        )
        figures.append(
            ("Version against version: each version's own dev metrics",
             version_comparison(version_rows([record for record, _ in versions])))
        )
    summary = f"Model {model} on {data_name}" + (
        f"; served threshold {encoder.threshold:.4f} ({encoder.energy_name})." if encoder.threshold is not None else "."
    )
    Path(path).write_text(html_report(title=f"dupq eval: {model}", summary=summary, table=table, figures=figures))
