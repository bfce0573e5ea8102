"""The admin page's plots as SVG images under ``/admin/plots/<name>.svg`` (admin sign-in), drawn by
dupq.evaluation.plots.

- ``training.svg``: training loss and dev AP over steps of each trained version;
- ``pr.svg`` / ``scores.svg``: the serving version's precision-recall curve with its threshold marked, and the
  score histograms of duplicates and non-duplicates, from the dev sample stored at training time
  (``dev_scores``); a version without one (the untuned base) is shown on the stored labelled pairs instead,
  scored by it (latest label wins, at most :data:`dupq.evaluation.plots.DEV_SCORE_SAMPLE`);
- ``versions.svg``: dev AP, best F1 and nDCG@10 of each version.

Images are cached per (plot, serving version, versions, stored pairs), so the page costs one render per change.
"""

from __future__ import annotations

import random
import threading
from typing import Any

from flask import Blueprint, Response, abort

from dupq.evaluation import plots
from web.auth import requires
from web.service import get_service

bp = Blueprint("plots", __name__)

_lock = threading.Lock()
_cache: dict[str, tuple[tuple[Any, ...], str]] = {}


def threshold_data(svc: Any) -> dict[str, Any]:
    """``{"scores", "labels", "source"}`` for the serving version's threshold plots (see the module doc)."""
    meta = svc.encoder.metadata
    dev = meta.get("dev_scores") or {}
    if dev.get("scores"):
        return {
            "scores": dev["scores"],
            "labels": dev["labels"],
            "source": f"its dev sample ({len(dev['scores'])} pairs)",
        }
    pairs = svc.training_pairs()
    if len(pairs) > plots.DEV_SCORE_SAMPLE:
        pairs = random.Random(0).sample(pairs, plots.DEV_SCORE_SAMPLE)
    if not pairs:
        return {"scores": [], "labels": [], "source": "no dev sample, no stored labelled pairs"}
    scores = svc.encoder.score_pairs([p.question1 for p in pairs], [p.question2 for p in pairs])
    return {
        "scores": [float(x) for x in scores],
        "labels": [p.label for p in pairs],
        "source": f"{len(pairs)} stored labelled pairs",
    }


def _versions_meta(svc: Any) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for v in svc.versions():
        try:
            out.append((v["version"], svc.version_config(v["version"])))
        except FileNotFoundError:
            continue
    return out


def render(name: str) -> str:
    svc = get_service()
    versions = svc.versions()
    key = (svc.version, tuple(v["version"] for v in versions), sum(svc.pair_counts().values()))
    with _lock:
        hit = _cache.get(name)
        if hit and hit[0] == key:
            return hit[1]
    enc = svc.encoder
    if name == "training":
        svg = plots.training_curves(_versions_meta(svc))
    elif name == "versions":
        svg = plots.version_comparison(plots.version_rows(versions))
    elif name in ("pr", "scores"):
        d = threshold_data(svc)
        if name == "pr":
            svg = plots.pr_curve(
                d["scores"],
                d["labels"],
                threshold=enc.threshold,
                higher_is_better=enc.higher_is_better,
                title=f"Precision–recall of {svc.version}\non {d['source']}",
                policy=enc.metadata.get("threshold_policy"),
            )
        else:
            svg = plots.score_histograms(
                d["scores"],
                d["labels"],
                threshold=enc.threshold,
                energy=enc.energy_name,
                title=f"Scores under {svc.version}\non {d['source']}",
            )
    else:
        abort(404)
    with _lock:
        _cache[name] = (key, svg)
    return svg


@bp.get("/plots/<name>.svg")
@requires("admin")
def image(name: str):
    return Response(render(name), mimetype="image/svg+xml", headers={"Cache-Control": "no-store"})
