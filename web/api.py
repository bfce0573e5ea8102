"""JSON API v1 (the public contract in docs/architecture.md): thin views over :class:`dupq.service.DupQ`.

Each view declares its contract once (:func:`web.contract.operation`: the body and query models, the answers,
whether it needs the token); that declaration validates the request and is the OpenAPI document.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from dupq.errors import ValidationError
from dupq.text import normalize_question
from web import contract as c
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
    result = get_service().search(body.question, body.k, rerank=body.rerank)
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
        auth=lambda: get_settings().questions_need_token,
        limited=True,
    )
)
def add_questions(body: c.AddQuestionsRequest):
    added = get_service().add_questions(q.model_dump() for q in body.questions)
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
    Operation("getQuestion", "Get one question", {200: (c.Question, "The question"), 404: (c.Error, "No such id")},
              path=_QID)
)
def get_question(qid: str):
    return jsonify(get_service().get(qid).to_dict())


@bp.delete("/api/v1/questions/<path:qid>")
@write_limit
@operation(
    Operation("deleteQuestion", "Delete one question",
              {200: (c.Deleted, "Deleted"), 404: (c.Error, "No such id")}, path=_QID, auth=True, limited=True)
)
def delete_question(qid: str):
    get_service().delete(qid)
    return jsonify({"deleted": qid})


@bp.post("/api/v1/pairs")
@write_limit
@operation(
    Operation(
        "addPairs",
        "Store labelled pairs (all or nothing; conflicting labels: the latest wins in training)",
        {201: (c.PairsAdded, "Stored")},
        body=c.AddPairsRequest,
        auth=True,
        limited=True,
    )
)
def add_pairs(body: c.AddPairsRequest):
    pairs = [p.model_dump() for p in body.pairs]
    kept = [p for p in pairs if normalize_question(p["question1"]) != normalize_question(p["question2"])]
    added = get_service().add_pairs(kept, source=body.source) if kept else 0
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
        auth=True,
        limited=True,
    )
)
def train(body: c.TrainRequest):
    options = body.model_dump(by_alias=True, exclude_unset=True)
    try:
        job = get_service().start_training(options)
    except ValidationError as e:  # TrainConfig's own check (the contract declares the same bounds)
        raise ValidationError(e.message, code="invalid_option") from None
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
               409: (c.Error, "The job already ended")}, path=_JOB, auth=True, limited=True)
)
def cancel_job(job_id: str):
    return jsonify(get_service().cancel_job(job_id).to_dict()), 202


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
        auth=True,
        limited=True,
    )
)
def promote(version: str):
    svc = get_service()
    svc.promote(version)
    return jsonify({"current": svc.version})
