"""The search page: type a question, see the closest stored ones, say which is yours or add yours to the bank.

Without JavaScript every action is a form (GET search, POST feedback / add) that redirects back. With it,
``static/search.js`` searches as the person types through ``POST /api/v1/search`` and posts the same forms
with ``Accept: application/json``: those routes then answer JSON instead of redirecting, so nothing reloads.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from dupq.config import DEFAULT_K, MAX_K, MAX_QUESTION_CHARS
from dupq.errors import DupQError, NotFoundError, ValidationError
from web.auth import audit, requires
from web.errors import error_response
from web.service import get_service, get_settings, remember_search

bp = Blueprint("pages", __name__)

#: Live search starts at this many characters (fewer say too little to search on).
MIN_CHARS = 4
#: Pause after the last keystroke before the live search is sent, in milliseconds.
DEBOUNCE_MS = 45
#: Pair ids this browser may undo (kept in its signed session; the newest ones).
UNDO_KEEP = 50


def wants_json() -> bool:
    """A fetch from the page (``Accept: application/json``) rather than a plain form post."""
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


def page_filter(scope: dict[str, str]) -> dict[str, Any] | None:
    """The page's filter: each declared field's box (``f.FIELD`` in the URL) holds comma-separated values, any of
    which may match (``{"tags": {"any": [...]}}``); empty boxes filter nothing. ``static/search.js`` builds the same."""
    out = {f: {"any": vals} for f, raw in scope.items() if (vals := [v.strip() for v in raw.split(",") if v.strip()])}
    return out or None


def _likely(result: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [r for r in (result or {}).get("results", []) if r["duplicate"]]


@bp.get("/")
@requires(None)
def index():
    svc = get_service()
    q = request.args.get("q", "").strip()
    k = request.args.get("k", str(DEFAULT_K))
    result, error = None, None
    fields = get_settings().filter_fields
    scope = {f: request.args.get(f"f.{f}", "").strip() for f in fields}
    if q:
        try:
            result = svc.search(q, int(k) if k.isdigit() else k, filter=page_filter(scope))
            remember_search(q, result)
        except DupQError as e:
            error = e.message
    return render_template(
        "index.html",
        q=q,
        k=k,
        result=result,
        likely=_likely(result),
        error=error,
        scope=scope,
        max_k=MAX_K,
        max_chars=MAX_QUESTION_CHARS,
        min_chars=MIN_CHARS,
        debounce_ms=DEBOUNCE_MS,
        undo_offer=session.pop("undo_offer", None),
        health=svc.health(),
    )


@bp.get("/q/<path:qid>")
@requires(None)
def question(qid: str):
    """One stored question and the stored questions most like it (where Enter on a live result leads)."""
    svc = get_service()
    try:
        stored = svc.get(qid)
    except NotFoundError:
        return render_template("question.html", missing=qid), 404
    similar = svc.search(stored.text, 6)
    similar["results"] = [r for r in similar["results"] if r["id"] != stored.id][:5]
    for r in similar["results"]:  # this question itself is no "asked before as" of its canonical question
        r["duplicates"] = [d for d in r.get("duplicates", []) if d["id"] != stored.id]
    canonical = svc.question(qid)["duplicate_of"]
    return render_template("question.html", question=stored, result=similar,
                           canonical=svc.get(canonical) if canonical else None)


def _remember_pair(pair_id: int) -> None:
    mine = [p for p in session.get("pairs", []) if p != pair_id][-(UNDO_KEEP - 1) :]
    session["pairs"] = [*mine, pair_id]


def _answer(payload: dict[str, Any], message: str, q: str, status: int = 200) -> Any:
    if wants_json():
        return jsonify({**payload, "message": message}), status
    flash(message, "ok")
    return redirect(url_for("pages.index", q=q.strip()))


def _error(e: DupQError, q: str) -> Any:
    if wants_json():
        return error_response(e.status, e.code, e.message)
    flash(e.message, "error")
    return redirect(url_for("pages.index", q=q.strip()))


def _questions_scope() -> str | None:
    return "write" if get_settings().questions_need_token else None


@bp.post("/add")
@requires(_questions_scope, on_denied=lambda e: _error(e, request.form.get("question", "")))
def add():
    """Add the typed question; with ``dup`` ids (the likely duplicates shown), also a "different" pair for each.

    This is the ask flow's "mine is different — add it": the person saw those results and said no to them.
    With ``questions_need_token`` on, only a key of scope ``write`` or higher may add (bearer or a signed-in
    session), as for ``POST /api/v1/questions``.
    """
    svc = get_service()
    q = request.form.get("question", "")
    try:
        shown = [svc.get(i) for i in dict.fromkeys(request.form.getlist("dup"))]
        added = svc.add_questions([{"text": q, "meta": {"source": "web"}}])[0]
        version = svc.known_version(request.form.get("model"))
        pairs = [svc.add_pair(added.text, s.text, 0, source="feedback", model_version=version) for s in shown]
    except DupQError as e:
        return _error(e, q)
    audit("questions.add", added.id)
    for p in pairs:
        _remember_pair(p["id"])
    msg = f"Added your question to the bank (id {added.id})."
    if pairs:
        msg += f" Marked it different from {len(pairs)} likely duplicate{'s' if len(pairs) != 1 else ''}."
    return _answer({"question": added.to_dict(), "pairs": pairs}, msg, q, 201)


@bp.post("/feedback")
@requires(None)
def feedback():
    """The "same question" / "different question" buttons next to a result: a labelled pair (source feedback)."""
    q = request.form.get("question", "")
    label = request.form.get("label", "")
    try:
        if label not in ("0", "1"):
            raise ValidationError("label must be 0 or 1", code="invalid_label")
        pair = get_service().feedback(q, request.form.get("id", ""), int(label),
                                      model_version=request.form.get("model") or None)
    except DupQError as e:
        return _error(e, q)
    _remember_pair(pair["id"])
    if not wants_json():
        session["undo_offer"] = pair["id"]  # the reloaded page offers an undo form for this click
    return _answer({"pair": pair}, "Thanks: your feedback will teach the next model.", q, 201)


@bp.post("/feedback/<int:pair_id>/undo")
@requires(None)
def undo(pair_id: int):
    """Remove a feedback pair this browser created (and only that one)."""
    q = request.form.get("question", "")
    try:
        if pair_id not in session.get("pairs", []):
            raise NotFoundError(f"no feedback {pair_id} of yours to undo")
        get_service().delete_pair(pair_id, source="feedback")
    except DupQError as e:
        return _error(e, q)
    session["pairs"] = [p for p in session.get("pairs", []) if p != pair_id]
    return _answer({"undone": pair_id}, "Feedback undone.", q)
