"""The OpenAPI 3.1 document of the JSON API, built from the same limits the code enforces."""

from __future__ import annotations

from typing import Any

from dupq import __version__
from dupq.config import DEFAULT_K, MAX_BATCH, MAX_ID_CHARS, MAX_K, MAX_PAGE, MAX_QUESTION_CHARS


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
            },
        },
        "SearchResult": {
            "type": "object",
            "required": ["id", "text", "score", "duplicate"],
            "properties": {
                "id": {"type": "string"},
                "text": {"type": "string"},
                "score": {"type": "number", "description": "cosine similarity, or Euclidean distance"},
                "duplicate": {"type": "boolean", "description": "score crosses the model's threshold"},
            },
        },
        "SearchResponse": {
            "type": "object",
            "required": ["model", "energy", "threshold", "took_ms", "results"],
            "properties": {
                "model": {"type": "string", "description": "model version that produced the answer"},
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
                "responses": {"200": _json(_ref("SearchResponse"), "Ranked results"), "400": _ERR},
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
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dupq",
            "version": __version__,
            "description": "Duplicate-question retrieval with a Siamese sentence encoder.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
