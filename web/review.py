"""The moderators' review queue under ``/admin/review`` (a key of scope ``moderate`` or higher, web/auth.py): label
the pairs the model is least sure of; each label and undo is recorded in the audit log.

``GET /admin/review`` is the page (S = same, D = different, J / K or ↓ / ↑ move, U = undo), ``GET
/admin/review.json`` the queue as JSON, ``POST /admin/review/label`` stores a pair with source ``review``
(JSON when asked, else a redirect back), ``POST /admin/review/undo/<id>`` removes one review label. Candidate
selection: :mod:`dupq.review`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for

from dupq.errors import DupQError
from dupq.review import uncertain_pairs
from web.auth import audit, requires
from web.errors import error_response
from web.pages import wants_json
from web.service import get_service, recent_searches

bp = Blueprint("review", __name__)

#: Pairs shown per page of the queue.
QUEUE_SIZE = 20


def queue(limit: int = QUEUE_SIZE) -> list[dict[str, Any]]:
    return uncertain_pairs(get_service(), recent_searches(), limit=limit)


@bp.get("/review")
@requires("moderate", page=True)
def page():
    svc = get_service()
    return render_template(
        "review.html", queue=queue(), model=svc.version, threshold=svc.encoder.threshold, counts=svc.pair_counts()
    )


@bp.get("/review.json")
@requires("moderate")
def queue_json():
    limit = request.args.get("limit", str(QUEUE_SIZE))
    n = int(limit) if limit.isdigit() else QUEUE_SIZE
    svc = get_service()
    return jsonify({"model": svc.version, "threshold": svc.encoder.threshold, "pairs": queue(min(max(n, 1), 200))})


def _failed(e: DupQError) -> Any:
    """A refused label or undo: the JSON error shape when asked, else a flash message on the queue page."""
    if wants_json():
        return error_response(e.status, e.code, e.message)
    flash(e.message, "error")
    return redirect(url_for("admin.review.page"))


@bp.post("/review/label")
@requires("moderate")
def label():
    svc = get_service()
    raw = request.form.get("label", "")
    try:
        pair = svc.add_pair(
            request.form.get("question1"),
            request.form.get("question2"),
            int(raw) if raw in ("0", "1") else raw,
            source="review",
            model_version=svc.version,
        )
    except DupQError as e:
        return _failed(e)
    audit("review.label", f"pair {pair['id']}: {'same' if pair['label'] else 'different'}")
    if wants_json():
        return jsonify({"pair": pair}), 201
    flash(f"Labelled {'same' if pair['label'] else 'different'} (pair {pair['id']}).", "ok")
    return redirect(url_for("admin.review.page"))


@bp.post("/review/undo/<int:pair_id>")
@requires("moderate")
def undo(pair_id: int):
    try:
        get_service().delete_pair(pair_id, source="review")
    except DupQError as e:
        return _failed(e)
    audit("review.undo", f"pair {pair_id}")
    if wants_json():
        return jsonify({"undone": pair_id})
    flash("Label undone.", "ok")
    return redirect(url_for("admin.review.page"))
