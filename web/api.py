"""JSON API v1 (the public contract in docs/architecture.md): thin views over :class:`dupq.service.DupQ`.

Each view declares its contract once (:func:`web.contract.operation`: the body and query models, the answers,
the API key scope it needs, web/auth.py); that declaration validates the request and is the OpenAPI document.
Every moderation and admin action is recorded in the audit log with the acting key's name (:func:`web.auth.audit`).
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from dupq.errors import ValidationError
from dupq.text import normalize_question
from web import contract as c
from web.auth import actor, audit
from web.contract import Operation, operation
from web.limits import search_limit, write_limit
from web.service import get_service, get_settings, remember_search

bp = Blueprint("api", __name__)

_QID = {"qid": {"type": "string", "minLength": 1, "description": "a question id"}}
_JOB = {"job_id": {"type": "string", "minLength": 1}}
_VERSION = {"version": {"type": "string", "minLength": 1, "description": "a model version name"}}


@bp.get("/healthz")
@operation(Operation("health", "Liveness and counts", {200: (c.Health, "OK")}))
def healthz():
    return jsonify(get_service().health())


@bp.get("/readyz")
@operation(Operation("ready", "Readiness: whether this process can answer searches now (its database answers)",
                     {200: (c.Ready, "Ready"), 503: (c.Error, "Not ready: the database is unavailable")}))
def readyz():
    return jsonify(get_service().ready())


@bp.get("/api/v1/openapi.json")
@operation(Operation("openapi", "This document", {200: (c.Document, "OpenAPI 3.1 document")}))
def openapi():
    doc = current_app.extensions.get("dupq_openapi")
    if doc is None:  # built once per app: the operations and the settings they read are fixed
        doc = current_app.extensions["dupq_openapi"] = c.openapi_document(current_app)
    return jsonify(doc)


@bp.post("/api/v1/search")
@search_limit
@operation(
    Operation(
        "search",
        "Find stored questions that ask the same thing",
        {200: (c.SearchResponse, "Ranked results, best first"),
         409: (c.Error, "rerank asked but the served version has no cross-encoder")},
        body=c.SearchRequest,
        limited=True,
    )
)
def search(body: c.SearchRequest):
    result = get_service().search(body.question, body.k, rerank=body.rerank, filter=body.filter_dict())
    remember_search(body.question, result)  # here, not in an after-request hook that parses both JSONs again
    return jsonify(result)


@bp.post("/api/v1/questions")
@write_limit
@operation(
    Operation(
        "addQuestions",
        "Add questions (all or nothing)",
        {201: (c.AddedIds, "Added"), 409: (c.Error, "An explicit id already exists")},
        body=c.AddQuestionsRequest,
        scope=lambda: "write" if get_settings().questions_need_token else None,
        limited=True,
    )
)
def add_questions(body: c.AddQuestionsRequest):
    added = get_service().add_questions(q.model_dump() for q in body.questions)
    audit("questions.add", ", ".join(q.id for q in added))
    return jsonify({"ids": [q.id for q in added]}), 201


@bp.get("/api/v1/questions")
@operation(
    Operation("listQuestions", "List stored questions (insertion order, paged)",
              {200: (c.QuestionPage, "A page of questions")}, query=c.ListQuery)
)
def list_questions(query: c.ListQuery):
    items, total = get_service().list(query.offset, query.limit)
    return jsonify(
        {"questions": [q.to_dict() for q in items], "total": total, "offset": query.offset, "limit": query.limit}
    )


@bp.get("/api/v1/questions/<path:qid>")
@operation(
    Operation("getQuestion", "Get one question (with duplicate_of, its canonical question if it is closed)",
              {200: (c.QuestionDetail, "The question"), 404: (c.Error, "No such id")}, path=_QID)
)
def get_question(qid: str):
    return jsonify(get_service().question(qid))


@bp.delete("/api/v1/questions/<path:qid>")
@write_limit
@operation(
    Operation("deleteQuestion", "Delete one question",
              {200: (c.Deleted, "Deleted"), 404: (c.Error, "No such id")}, path=_QID, scope="moderate",
              limited=True)
)
def delete_question(qid: str):
    get_service().delete(qid)
    audit("question.delete", qid)
    return jsonify({"deleted": qid})


@bp.get("/api/v1/questions/<path:qid>/duplicate-of")
@operation(
    Operation(
        "getDuplicateOf",
        "The link of a question closed as a duplicate (exists while it is closed)",
        {200: (c.ClosedLink, "The link"),
         404: (c.Error, "No such question, or not_duplicate: it is not closed")},
        path=_QID,
    )
)
def get_duplicate_of(qid: str):
    return jsonify(get_service().duplicate_link(qid))


@bp.post("/api/v1/questions/<path:qid>/duplicate-of")
@write_limit
@operation(
    Operation(
        "closeAsDuplicate",
        "Close a question as a duplicate of another: searches answer with the canonical question, this one "
        "attached; a labelled pair is stored for training",
        {200: (c.DuplicateLink, "Closed (or already closed onto that canonical question)"),
         404: (c.Error, "No such question (either id)"),
         409: (c.Error, "duplicate_cycle: the canonical is this question or one of its duplicates; "
                        "already_duplicate: closed onto another question (reopen it first)")},
        path=_QID,
        body=c.CloseRequest,
        scope="moderate",
        limited=True,
    )
)
def close_as_duplicate(qid: str, body: c.CloseRequest):
    out = get_service().close_as_duplicate(qid, body.canonical, actor=actor())
    if out["closed"]:
        audit("question.close", f"{qid} -> {out['duplicate_of']}")
    return jsonify(out)


@bp.delete("/api/v1/questions/<path:qid>/duplicate-of")
@write_limit
@operation(
    Operation(
        "reopenQuestion",
        "Reopen a question closed as a duplicate (its link and the pair closing stored are removed)",
        {200: (c.Reopened, "Reopened"), 404: (c.Error, "No such question"),
         409: (c.Error, "not_duplicate: the question is not closed")},
        path=_QID,
        scope="moderate",
        limited=True,
    )
)
def reopen_question(qid: str):
    out = get_service().reopen(qid, actor=actor())
    audit("question.reopen", qid)
    return jsonify(out)


@bp.post("/api/v1/pairs")
@write_limit
@operation(
    Operation(
        "addPairs",
        "Store labelled pairs (all or nothing; conflicting labels: the latest wins in training)",
        {201: (c.PairsAdded, "Stored")},
        body=c.AddPairsRequest,
        scope="write",
        limited=True,
    )
)
def add_pairs(body: c.AddPairsRequest):
    pairs = [p.model_dump() for p in body.pairs]
    kept = [p for p in pairs if normalize_question(p["question1"]) != normalize_question(p["question2"])]
    added = get_service().add_pairs(kept, source=body.source) if kept else 0
    audit("pairs.add", f"{added} pairs (source {body.source})")
    return jsonify({"added": added, "self_pairs": len(pairs) - len(kept)}), 201


@bp.post("/api/v1/train")
@write_limit
@operation(
    Operation(
        "train",
        "Start a retrain on the stored pairs in a worker process (one job at a time)",
        {202: (c.JobStarted, "Queued"), 404: (c.Error, "Unknown version to start from"),
         409: (c.Error, "Another job is active")},
        body=c.TrainRequest,
        body_required=False,
        body_code="invalid_option",
        scope="admin",
        limited=True,
    )
)
def train(body: c.TrainRequest):
    options = body.model_dump(by_alias=True, exclude_unset=True)
    try:
        job = get_service().start_training(options)
    except ValidationError as e:  # TrainConfig's own check (the contract declares the same bounds)
        raise ValidationError(e.message, code="invalid_option") from None
    audit("train.start", f"job {job.id}")
    return jsonify({"job": job.id, "state": job.state}), 202


@bp.get("/api/v1/jobs")
@operation(Operation("listJobs", "Recent jobs, newest first", {200: (c.JobList, "Jobs")}))
def list_jobs():
    return jsonify({"jobs": [j.to_dict() for j in get_service().list_jobs()]})


@bp.get("/api/v1/jobs/<job_id>")
@operation(
    Operation("getJob", "A job's state, progress, metrics and error",
              {200: (c.Job, "The job"), 404: (c.Error, "No such job")}, path=_JOB)
)
def get_job(job_id: str):
    return jsonify(get_service().job(job_id).to_dict())


@bp.delete("/api/v1/jobs/<job_id>")
@write_limit
@operation(
    Operation("cancelJob", "Cancel a job",
              {202: (c.Job, "Cancellation requested"), 404: (c.Error, "No such job"),
               409: (c.Error, "The job already ended")}, path=_JOB, scope="admin", limited=True)
)
def cancel_job(job_id: str):
    job = get_service().cancel_job(job_id)
    audit("job.cancel", f"job {job_id}")
    return jsonify(job.to_dict()), 202


@bp.get("/api/v1/models")
@operation(Operation("listModels", "Model versions with metrics, parent and data counts",
                     {200: (c.Models, "Versions")}))
def models():
    return jsonify(get_service().models())


@bp.post("/api/v1/models/<version>/promote")
@write_limit
@operation(
    Operation(
        "promoteModel",
        "Serve this version (its index is built first; rollback = promote an older one)",
        {200: (c.Current, "Now current"), 404: (c.Error, "No such version")},
        path=_VERSION,
        scope="admin",
        limited=True,
    )
)
def promote(version: str):
    svc = get_service()
    svc.promote(version)
    audit("model.promote", version)
    return jsonify({"current": svc.version})


@bp.get("/api/v1/audit")
@operation(
    Operation("auditLog", "The audit log of moderation and admin actions, newest first (paged)",
              {200: (c.AuditPage, "A page of entries")}, query=c.AuditQuery, scope="admin")
)
def audit_log(query: c.AuditQuery):
    entries = get_service().access.audit_log(query.limit, query.before)
    more = len(entries) == query.limit and entries[-1].id > 1
    return jsonify({"entries": [e.to_dict() for e in entries], "next_before": entries[-1].id if more else None})
