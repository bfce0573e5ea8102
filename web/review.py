"""The moderators' review queue under ``/admin/review`` (a key of scope ``moderate`` or higher, web/auth.py): label
the pairs the model is least sure of; each label and undo is recorded in the audit log.

``GET /admin/review`` is the page (S = same, D = different, J / K or ↓ / ↑ move, U = undo), ``GET
/admin/review.json`` the queue as JSON, ``POST /admin/review/label`` stores a pair with source ``review``
(JSON when asked, else a redirect back; with ``close`` = 1 or 2 and a "same" label it also closes the first or the
second question as a duplicate of the other), ``POST /admin/review/undo/<id>`` removes one review label (and
reopens the question its label closed). Candidate
selection: :mod:`dupq.review`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for

from dupq.errors import DupQError
from dupq.review import label_pair, uncertain_pairs, undo_label
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
    f = request.form
    try:
        out = label_pair(svc, f.get("question1"), f.get("question2"), int(raw) if raw in ("0", "1") else raw,
                         close=f.get("close") or None, id1=f.get("id1") or None, id2=f.get("id2") or None)
    except DupQError as e:
        return _failed(e)
    pair, closed = out["pair"], out["closed"]
    message = f"Labelled {'same' if pair['label'] else 'different'} (pair {pair['id']})."
    if closed:
        message += f" {closed['id']} is closed as a duplicate of {closed['duplicate_of']}."
    audit("review.label", f"pair {pair['id']}: {'same' if pair['label'] else 'different'}")
    if closed:
        audit("question.close", f"{closed['id']} -> {closed['duplicate_of']}")
    if wants_json():
        return jsonify({"pair": pair, "closed": closed, "message": message}), 201
    flash(message, "ok")
    return redirect(url_for("admin.review.page"))


@bp.post("/review/undo/<int:pair_id>")
@requires("moderate")
def undo(pair_id: int):
    try:
        out = undo_label(get_service(), pair_id)
    except DupQError as e:
        return _failed(e)
    audit("review.undo", f"pair {pair_id}")
    if wants_json():
        return jsonify(out)
    flash("Label undone." + (f" {out['reopened']} is reopened." if out["reopened"] else ""), "ok")
    return redirect(url_for("admin.review.page"))
