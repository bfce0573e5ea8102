"""The search page: type a question, see the closest stored ones, add yours to the bank."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for

from dupq.config import DEFAULT_K, MAX_K, MAX_QUESTION_CHARS
from dupq.errors import DupQError, ValidationError
from web.service import get_service

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    svc = get_service()
    q = request.args.get("q", "").strip()
    k = request.args.get("k", str(DEFAULT_K))
    result, error = None, None
    if q:
        try:
            result = svc.search(q, int(k) if k.isdigit() else k)
        except DupQError as e:
            error = e.message
    return render_template(
        "index.html",
        q=q,
        k=k,
        result=result,
        error=error,
        max_k=MAX_K,
        max_chars=MAX_QUESTION_CHARS,
        health=svc.health(),
    )


@bp.post("/add")
def add():
    q = request.form.get("question", "")
    try:
        added = get_service().add_questions([{"text": q, "meta": {"source": "web"}}])
        flash(f"Added your question to the bank (id {added[0].id}).", "ok")
    except DupQError as e:
        flash(e.message, "error")
    return redirect(url_for("pages.index", q=q.strip()))


@bp.post("/feedback")
def feedback():
    """The "same question" / "different question" buttons next to a result: a labelled pair (source feedback)."""
    q = request.form.get("question", "")
    label = request.form.get("label", "")
    try:
        if label not in ("0", "1"):
            raise ValidationError("label must be 0 or 1")
        get_service().feedback(q, request.form.get("id", ""), int(label))
        flash("Thanks: your feedback will teach the next model.", "ok")
    except DupQError as e:
        flash(e.message, "error")
    return redirect(url_for("pages.index", q=q.strip()))
