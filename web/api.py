"""JSON API v1 (the public contract in docs/architecture.md): thin request parsing over :class:`dupq.service.DupQ`."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from dupq.config import DEFAULT_K, MAX_BATCH, MAX_PAGE
from dupq.errors import ValidationError
from web.auth import check_admin, require_admin
from web.limits import search_limit, write_limit
from web.openapi import openapi_spec
from web.service import get_service, get_settings

bp = Blueprint("api", __name__)


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is wrong with it."""
    if not request.is_json:
        raise ValidationError("request body must be JSON (content-type: application/json)", code="invalid_json")
    body = request.get_json(silent=True)
    if body is None:
        raise ValidationError("request body is not valid JSON", code="invalid_json")
    if not isinstance(body, dict):
        raise ValidationError("request body must be a JSON object", code="invalid_json")
    return body


def batch_field(body: dict[str, Any], name: str) -> list[Any]:
    """``body[name]`` as a non-empty array of at most ``MAX_BATCH`` items, or a 400 saying why not."""
    items = body.get(name)
    if not isinstance(items, list) or not items:
        raise ValidationError(f"{name} must be a non-empty array", code="invalid_type")
    if len(items) > MAX_BATCH:
        raise ValidationError(f"at most {MAX_BATCH} {name} per request", code="batch_too_large")
    return items


def int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"{name} must be an integer", code="invalid_type") from None
    if not lo <= value <= hi:
        raise ValidationError(f"{name} must be between {lo} and {hi}", code="out_of_range")
    return value


@bp.get("/healthz")
def healthz():
    return jsonify(get_service().health())


@bp.get("/api/v1/openapi.json")
def openapi():
    return jsonify(openapi_spec())


@bp.post("/api/v1/search")
@search_limit
def search():
    body = json_body()
    if "question" not in body:
        raise ValidationError("missing field: question", code="missing_field")
    return jsonify(get_service().search(body["question"], body.get("k", DEFAULT_K), rerank=body.get("rerank")))


@bp.post("/api/v1/questions")
@write_limit
def add_questions():
    if get_settings().questions_need_token:
        check_admin()
    added = get_service().add_questions(batch_field(json_body(), "questions"))
    return jsonify({"ids": [q.id for q in added]}), 201


@bp.get("/api/v1/questions")
def list_questions():
    offset = int_arg("offset", 0, 0, 2**62)
    limit = int_arg("limit", 50, 1, MAX_PAGE)
    items, total = get_service().list(offset, limit)
    return jsonify({"questions": [q.to_dict() for q in items], "total": total, "offset": offset, "limit": limit})


@bp.get("/api/v1/questions/<path:qid>")
def get_question(qid: str):
    return jsonify(get_service().get(qid).to_dict())


@bp.delete("/api/v1/questions/<path:qid>")
@write_limit
@require_admin
def delete_question(qid: str):
    get_service().delete(qid)
    return jsonify({"deleted": qid})


@bp.post("/api/v1/pairs")
@write_limit
@require_admin
def add_pairs():
    body = json_body()
    pairs = batch_field(body, "pairs")
    source = body.get("source", "api")
    if source not in ("api", "feedback", "import"):
        raise ValidationError("source must be api, feedback or import", code="invalid_option")
    return jsonify({"added": get_service().add_pairs(pairs, source=source)}), 201


@bp.post("/api/v1/train")
@write_limit
@require_admin
def train():
    body = json_body() if request.content_length else {}
    job = get_service().start_training(body)
    return jsonify({"job": job.id, "state": job.state}), 202


@bp.get("/api/v1/jobs")
def list_jobs():
    return jsonify({"jobs": [j.to_dict() for j in get_service().list_jobs()]})


@bp.get("/api/v1/jobs/<job_id>")
def get_job(job_id: str):
    return jsonify(get_service().job(job_id).to_dict())


@bp.delete("/api/v1/jobs/<job_id>")
@write_limit
@require_admin
def cancel_job(job_id: str):
    return jsonify(get_service().cancel_job(job_id).to_dict()), 202


@bp.get("/api/v1/models")
def models():
    return jsonify(get_service().models())


@bp.post("/api/v1/models/<version>/promote")
@write_limit
@require_admin
def promote(version: str):
    svc = get_service()
    svc.promote(version)
    return jsonify({"current": svc.version})
