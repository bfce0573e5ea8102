"""The OpenAPI 3.1 document of the JSON API, built from the same limits the code enforces."""

from __future__ import annotations

from typing import Any

from dupq import __version__
from dupq.config import DEFAULT_K, MAX_BATCH, MAX_ID_CHARS, MAX_K, MAX_PAGE, MAX_QUESTION_CHARS
from dupq.jobs import STATES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERR = _json(_ref("Error"), "Error")
_QID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": MAX_ID_CHARS}}


def openapi_spec() -> dict[str, Any]:
    """Return the OpenAPI 3.1 document (a plain dict, served at /api/v1/openapi.json)."""
    question_text = {"type": "string", "minLength": 1, "maxLength": MAX_QUESTION_CHARS}
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        "SearchRequest": {
            "type": "object",
            "required": ["question"],
            "properties": {
                "question": question_text,
                "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": DEFAULT_K},
                "rerank": {
                    "type": "boolean",
                    "description": "re-score the twin's top rerank_top_n with the version's cross-encoder "
                    "(default: the rerank setting); 409 no_cross_encoder when the served version has none",
                },
            },
        },
        "SearchResult": {
            "type": "object",
            "required": ["id", "text", "score", "duplicate"],
            "properties": {
                "id": {"type": "string"},
                "text": {"type": "string"},
                "score": {
                    "type": "number",
                    "description": "cosine similarity, or Euclidean distance; re-ranked: the cross-encoder's "
                    "duplicate score in [0, 1]",
                },
                "duplicate": {"type": "boolean", "description": "score crosses the deciding scorer's threshold"},
                "twin_score": {"type": "number", "description": "re-ranked results only: the twin's score"},
            },
        },
        "SearchResponse": {
            "type": "object",
            "required": ["model", "energy", "scorer", "threshold", "took_ms", "results"],
            "properties": {
                "model": {"type": "string", "description": "model version that produced the answer"},
                "scorer": {
                    "type": "string",
                    "enum": ["twin", "cross-encoder"],
                    "description": "which model ranked the results and decided duplicate",
                },
                "energy": {"type": "string", "enum": ["cosine", "euclidean"]},
                "threshold": {"type": ["number", "null"]},
                "took_ms": {"type": "number"},
                "results": {"type": "array", "items": _ref("SearchResult"), "description": "best first"},
            },
        },
        "NewQuestion": {
            "type": "object",
            "required": ["text"],
            "properties": {
                "text": question_text,
                "id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS, "pattern": r"^\S+$"},
                "meta": {"type": "object"},
            },
        },
        "Question": {
            "type": "object",
            "required": ["id", "text", "meta", "created_at"],
            "properties": {
                "id": {"type": "string"},
                "text": {"type": "string"},
                "meta": {"type": "object"},
                "created_at": {"type": "string", "format": "date-time"},
            },
        },
        "Health": {
            "type": "object",
            "properties": {
                "status": {"type": "string"},
                "model": {"type": "string"},
                "questions": {"type": "integer"},
                "indexed": {"type": "integer"},
            },
        },
    }
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "Liveness and counts",
                "operationId": "health",
                "responses": {"200": _json(_ref("Health"), "OK")},
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document")},
            }
        },
        "/api/v1/search": {
            "post": {
                "summary": "Find stored questions that ask the same thing",
                "operationId": "search",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SearchRequest")}}},
                "responses": {
                    "200": _json(_ref("SearchResponse"), "Ranked results"),
                    "400": _ERR,
                    "409": _json(_ref("Error"), "rerank requested but the served version has no cross-encoder"),
                },
            }
        },
        "/api/v1/questions": {
            "post": {
                "summary": f"Add questions (1-{MAX_BATCH} per request, all or nothing)",
                "operationId": "addQuestions",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["questions"],
                                "properties": {
                                    "questions": {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": MAX_BATCH,
                                        "items": _ref("NewQuestion"),
                                    }
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": _json(
                        {"type": "object", "properties": {"ids": {"type": "array", "items": {"type": "string"}}}},
                        "Ids of the added questions, in request order",
                    ),
                    "400": _ERR,
                    "409": _json(_ref("Error"), "An explicit id already exists"),
                },
            },
            "get": {
                "summary": "List stored questions (insertion order, paged)",
                "operationId": "listQuestions",
                "parameters": [
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50},
                    },
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "questions": {"type": "array", "items": _ref("Question")},
                                "total": {"type": "integer"},
                                "offset": {"type": "integer"},
                                "limit": {"type": "integer"},
                            },
                        },
                        "A page of questions",
                    ),
                    "400": _ERR,
                },
            },
        },
        "/api/v1/questions/{id}": {
            "get": {
                "summary": "Get one question",
                "operationId": "getQuestion",
                "parameters": [_QID],
                "responses": {"200": _json(_ref("Question"), "The question"), "404": _ERR},
            },
            "delete": {
                "summary": "Delete one question",
                "operationId": "deleteQuestion",
                "parameters": [_QID],
                "responses": {
                    "200": _json({"type": "object", "properties": {"deleted": {"type": "string"}}}, "Deleted"),
                    "404": _ERR,
                },
            },
        },
    }
    schemas.update(_admin_schemas())
    paths.update(_admin_paths())
    for path, ops in paths.items():
        for method, op in ops.items():
            if (path, method) in _ADMIN_OPS:
                op["security"] = [{"bearer": []}]
                op["responses"].update(
                    {
                        "401": _json(_ref("Error"), "Missing or wrong bearer token"),
                        "403": _json(_ref("Error"), "Admin endpoints disabled (no token configured)"),
                    }
                )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dupq",
            "version": __version__,
            "description": "Duplicate-question retrieval with a Siamese sentence encoder.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "DUPQ_ADMIN_TOKEN"}},
        },
    }


#: Operations that need the admin bearer token (see web/auth.py).
_ADMIN_OPS = {
    ("/api/v1/questions/{id}", "delete"),
    ("/api/v1/pairs", "post"),
    ("/api/v1/train", "post"),
    ("/api/v1/jobs/{id}", "delete"),
    ("/api/v1/models/{version}/promote", "post"),
}
_JOB_STATES = list(STATES)


def _admin_schemas() -> dict[str, Any]:
    return {
        "Pair": {
            "type": "object",
            "required": ["question1", "question2", "label"],
            "properties": {
                "question1": {"type": "string", "minLength": 1, "maxLength": MAX_QUESTION_CHARS},
                "question2": {"type": "string", "minLength": 1, "maxLength": MAX_QUESTION_CHARS},
                "label": {"type": "integer", "enum": [0, 1], "description": "1 = same question"},
            },
        },
        "TrainOptions": {
            "type": "object",
            "properties": {
                "loss": {"type": "string", "enum": ["contrastive", "online-contrastive"]},
                "margin": {"type": "number"},
                "epochs": {"type": "number"},
                "max_steps": {"type": "integer", "minimum": 1},
                "learning_rate": {"type": "number"},
                "batch_size": {"type": "integer", "minimum": 2},
                "negatives_per_positive": {"type": "number", "minimum": 0},
                "ranking_weight": {"type": "number", "minimum": 0},
                "base_weight": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                "from": {
                    "type": "string",
                    "default": "current",
                    "description": "version to start from: current (the served one), base (the packaged model), a name",
                },
            },
        },
        "Job": {
            "type": "object",
            "required": ["id", "state"],
            "properties": {
                "id": {"type": "string"},
                "state": {"type": "string", "enum": _JOB_STATES},
                "options": {"type": "object"},
                "progress": {"type": "object", "description": "step, total, loss, epoch, phase"},
                "metrics": {"type": "object", "description": "gate reports of candidate and current model"},
                "error": {"type": ["string", "null"]},
                "version": {"type": ["string", "null"]},
                "created_at": {"type": "string"},
                "updated_at": {"type": "string"},
            },
        },
        "ModelVersion": {
            "type": "object",
            "properties": {
                "version": {"type": "string"},
                "parent": {"type": ["string", "null"]},
                "created_at": {"type": "string"},
                "current": {"type": "boolean"},
                "energy": {"type": "string"},
                "threshold": {"type": ["number", "null"]},
                "metrics": {"type": "object"},
                "data": {"type": "object"},
            },
        },
    }


def _admin_paths() -> dict[str, Any]:
    job_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/api/v1/pairs": {
            "post": {
                "summary": f"Store labelled pairs (1-{MAX_BATCH}, all or nothing; conflicting labels: latest wins)",
                "operationId": "addPairs",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["pairs"],
                                "properties": {
                                    "pairs": {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": MAX_BATCH,
                                        "items": _ref("Pair"),
                                    },
                                    "source": {"type": "string", "enum": ["api", "feedback", "import"]},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": _json({"type": "object", "properties": {"added": {"type": "integer"}}}, "Stored"),
                    "400": _ERR,
                },
            }
        },
        "/api/v1/train": {
            "post": {
                "summary": "Start a retrain on the stored pairs in a worker process (one job at a time)",
                "operationId": "train",
                "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("TrainOptions")}}},
                "responses": {
                    "202": _json(
                        {"type": "object", "properties": {"job": {"type": "string"}, "state": {"type": "string"}}},
                        "Queued",
                    ),
                    "400": _ERR,
                    "409": _json(_ref("Error"), "Another job is active"),
                },
            }
        },
        "/api/v1/jobs": {
            "get": {
                "summary": "Recent jobs, newest first",
                "operationId": "listJobs",
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"jobs": {"type": "array", "items": _ref("Job")}}}, "Jobs"
                    )
                },
            }
        },
        "/api/v1/jobs/{id}": {
            "get": {
                "summary": "A job's state, progress, metrics and error",
                "operationId": "getJob",
                "parameters": [job_id],
                "responses": {"200": _json(_ref("Job"), "The job"), "404": _ERR},
            },
            "delete": {
                "summary": "Cancel a job",
                "operationId": "cancelJob",
                "parameters": [job_id],
                "responses": {
                    "202": _json(_ref("Job"), "Cancellation requested"),
                    "404": _ERR,
                    "409": _json(_ref("Error"), "The job already ended"),
                },
            },
        },
        "/api/v1/models": {
            "get": {
                "summary": "Model versions with metrics, parent and data counts",
                "operationId": "listModels",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "current": {"type": "string"},
                                "versions": {"type": "array", "items": _ref("ModelVersion")},
                            },
                        },
                        "Versions",
                    )
                },
            }
        },
        "/api/v1/models/{version}/promote": {
            "post": {
                "summary": "Serve this version (its index is built first; rollback = promote an older one)",
                "operationId": "promoteModel",
                "parameters": [{"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": _json({"type": "object", "properties": {"current": {"type": "string"}}}, "Now current"),
                    "404": _ERR,
                },
            }
        },
    }
