"""The admin page: counts, the running job with a live progress bar, model versions, promote / rollback.

A person signs in with the admin token once (the session then holds a signed "admin" claim, never the
token); the page polls ``/admin/status.json`` for the job's progress.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for

from dupq.errors import DupQError
from web.auth import admin_token, check_admin, sign_in, sign_out, signed_in
from web.service import get_service

bp = Blueprint("admin", __name__, url_prefix="/admin")


def status() -> dict[str, Any]:
    svc = get_service()
    job = svc.latest_job()
    return {
        "model": svc.version,
        "questions": svc.question_counts(),
        "pairs": svc.pair_counts(),
        "closed_duplicates": svc.duplicate_count(),
        "job": job.to_dict() if job else None,
        "versions": svc.versions(),
    }


@bp.get("/")
def index():
    if admin_token() is None:
        return render_template("admin.html", disabled=True), 403
    if not signed_in():
        return render_template("admin.html", login=True), 401
    return render_template("admin.html", status=status())


@bp.post("/login")
def login():
    if not sign_in(request.form.get("token", "")):
        flash("Wrong token.", "error")
    return redirect(url_for("admin.index"))


@bp.post("/logout")
def logout():
    sign_out()
    return redirect(url_for("admin.index"))


@bp.get("/status.json")
def status_json():
    check_admin()
    return jsonify(status())


def _act(fn: Any, done: str | None) -> Any:
    check_admin()
    try:
        fn()
        if done:
            flash(done, "ok")
    except DupQError as e:
        flash(e.message, "error")
    return redirect(url_for("admin.index"))


@bp.post("/promote")
def promote():
    v = request.form.get("version", "")
    return _act(lambda: get_service().promote(v), f"Promoted {v}.")


@bp.post("/rollback")
def rollback():
    return _act(lambda: get_service().rollback(), "Rolled back.")


@bp.post("/duplicate-of")
def close_as_duplicate():
    """Close a question as a duplicate of another (the page's small form; the API: POST .../duplicate-of)."""
    qid, canonical = request.form.get("question", "").strip(), request.form.get("canonical", "").strip()

    def close() -> None:
        out = get_service().close_as_duplicate(qid, canonical, actor="admin")
        flash(f"{qid} is closed as a duplicate of {out['duplicate_of']}." if out["closed"] else
              f"{qid} already was a duplicate of {out['duplicate_of']}.", "ok")

    return _act(close, None)


@bp.post("/reopen")
def reopen():
    qid = request.form.get("question", "").strip()
    return _act(lambda: get_service().reopen(qid), f"Reopened {qid}: it is no longer a duplicate.")


@bp.post("/train")
def train():
    opts: dict[str, Any] = {}
    if request.form.get("max_steps", "").isdigit():
        opts["max_steps"] = int(request.form["max_steps"])
    return _act(lambda: get_service().start_training(opts), "Training job started.")


# -- the review queue (/admin/review, web/review.py) and the plots (/admin/plots/*.svg, web/plots.py) -------------
from web import plots as _plots  # noqa: E402  (nested blueprints, registered before the app registers this one)
from web import review as _review  # noqa: E402

bp.register_blueprint(_review.bp)
bp.register_blueprint(_plots.bp)
