"""The admin page: counts, the running job with a live progress bar, model versions, promote / rollback, the
keys and the latest audit entries.

A person signs in once with a personal API key (web/auth.py: scope ``admin`` for this page, ``moderate`` for the
review queue; the session then holds the key's name and scope, never the key, and ends when the key is revoked);
the page polls ``/admin/status.json`` for the job's progress. Every action is recorded in the audit log.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for

from dupq.access import allows
from dupq.errors import DupQError
from web.auth import actor, audit, caller, local_path, requires, sign_in, sign_out
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


#: Audit entries shown on the admin page (all of them: ``GET /api/v1/audit``).
AUDIT_SHOWN = 50


@bp.get("/")
@requires("admin", page=True)
def index():
    svc = get_service()
    return render_template("admin.html", status=status(), keys=svc.access.list_keys(),
                           audit=svc.access.audit_log(AUDIT_SHOWN), me=caller())


@bp.post("/login")
@requires(None)
def login():
    key = sign_in(request.form.get("token", ""))
    if key is None:
        flash("Unknown or revoked key, or its scope is below moderate.", "error")
        return redirect(url_for("admin.index", next=local_path(request.form.get("next"))))
    target = local_path(request.form.get("next") or request.args.get("next"))
    if target in (None, url_for("admin.index")):  # a moderator's page is the review queue
        target = url_for("admin.index") if allows(key.scope, "admin") else url_for("admin.review.page")
    return redirect(target)


@bp.post("/logout")
@requires(None)
def logout():
    sign_out()
    return redirect(url_for("admin.index"))


@bp.get("/status.json")
@requires("admin")
def status_json():
    return jsonify(status())


def _act(fn: Any, done: str | None, action: str, obj: Any = None) -> Any:
    try:
        result = fn()
        audit(action, obj if obj is not None else result)
        if done:
            flash(done, "ok")
    except DupQError as e:
        flash(e.message, "error")
    return redirect(url_for("admin.index"))


@bp.post("/promote")
@requires("admin")
def promote():
    v = request.form.get("version", "")
    return _act(lambda: get_service().promote(v), f"Promoted {v}.", "model.promote", v)


@bp.post("/rollback")
@requires("admin")
def rollback():
    return _act(lambda: get_service().rollback(), "Rolled back.", "model.rollback")


@bp.post("/duplicate-of")
@requires("moderate")
def close_as_duplicate():
    """Close a question as a duplicate of another (the page's small form; the API: POST .../duplicate-of)."""
    qid, canonical = request.form.get("question", "").strip(), request.form.get("canonical", "").strip()

    def close() -> str:
        out = get_service().close_as_duplicate(qid, canonical, actor=actor())
        flash(f"{qid} is closed as a duplicate of {out['duplicate_of']}." if out["closed"] else
              f"{qid} already was a duplicate of {out['duplicate_of']}.", "ok")
        return f"{qid} -> {out['duplicate_of']}"

    return _act(close, None, "question.close")


@bp.post("/reopen")
@requires("moderate")
def reopen():
    qid = request.form.get("question", "").strip()
    return _act(lambda: get_service().reopen(qid, actor=actor()), f"Reopened {qid}: it is no longer a duplicate.",
                "question.reopen", qid)


@bp.post("/train")
@requires("admin")
def train():
    opts: dict[str, Any] = {}
    if request.form.get("max_steps", "").isdigit():
        opts["max_steps"] = int(request.form["max_steps"])
    return _act(lambda: f"job {get_service().start_training(opts).id}", "Training job started.", "train.start")


# -- the review queue (/admin/review, web/review.py) and the plots (/admin/plots/*.svg, web/plots.py) -------------
from web import plots as _plots  # noqa: E402  (nested blueprints, registered before the app registers this one)
from web import review as _review  # noqa: E402

bp.register_blueprint(_review.bp)
bp.register_blueprint(_plots.bp)
