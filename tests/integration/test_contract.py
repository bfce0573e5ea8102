"""The API contract (web/contract.py): one declaration, from which both validation and the document come."""

from __future__ import annotations

import sys

import pytest
from support import ADMIN_TOKEN, AUTH

from dupq.storage.jobs import STATES
from dupq.training.config import LOSSES, RANKING_LOSSES, options
from web import contract


def test_whitespace_class_is_exactly_what_str_split_collapses() -> None:
    import re

    blank = re.compile(f"^[{contract.WHITESPACE_CLASS}]+$")
    spaces = {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    assert {chr(c) for c in range(sys.maxunicode + 1) if c not in range(0xD800, 0xE000) and blank.match(chr(c))} \
        == spaces


def test_job_states_are_the_storage_layers() -> None:
    assert tuple(contract.Job.model_json_schema()["properties"]["state"]["enum"]) == STATES


def test_document_lists_every_training_option(client) -> None:
    # TrainRequest is made from TrainConfig's declaration (tests/unit/test_train_options.py): the served document
    # has each option with its type, bounds, default and help.
    props = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]["TrainRequest"]["properties"]
    assert set(props) == {"from"} | {o.name for o in options()}
    for o in options():
        prop = props[o.name]
        assert prop["default"] == o.default and prop["description"].startswith(o.help.rstrip(".)")), o.name
        assert "type" in prop or "anyOf" in prop, o.name
    assert tuple(props["loss"]["enum"]) == LOSSES and tuple(props["ranking_loss"]["enum"]) == RANKING_LOSSES
    assert props["warmup_ratio"]["minimum"] == 0 and props["warmup_ratio"]["exclusiveMaximum"] == 1
    assert {"minimum": 1, "type": "integer"} in props["max_steps"]["anyOf"]


def test_document_states_what_the_server_enforces(client) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    for name in ("SearchRequest", "AddQuestionsRequest", "NewQuestion", "Pair", "AddPairsRequest", "TrainRequest"):
        assert schemas[name]["additionalProperties"] is False, name
    search = schemas["SearchRequest"]["properties"]
    assert search["k"] == {"default": 10, "maximum": 100, "minimum": 1, "title": "K", "type": "integer"}
    assert search["question"]["maxLength"] == 1000 and search["question"]["pattern"] == contract.NOT_BLANK
    ops = {(p, m): op for p, item in spec["paths"].items() for m, op in item.items()}
    assert ops[("/api/v1/pairs", "post")]["security"] == [{"bearer": ["write"]}]  # the lowest scope allowed
    assert ops[("/api/v1/models/{version}/promote", "post")]["security"] == [{"bearer": ["admin"]}]
    assert ops[("/api/v1/audit", "get")]["security"] == [{"bearer": ["admin"]}]
    assert "security" not in ops[("/api/v1/questions", "post")]  # questions_need_token is off here
    assert "413" in ops[("/api/v1/search", "post")]["responses"]


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"question": "How do I boil an egg?", "k": 2.0}, 200, None),  # JSON Schema's integer
        ({"question": "How do I boil an egg?", "k": True}, 400, "invalid_type"),
        ({"question": "How do I boil an egg?", "rerank": 1}, 400, "invalid_type"),
        ({"question": "How do I boil an egg?", "colour": "red"}, 400, "unknown_field"),
        ({"question": "\x1c\u3000"}, 400, "empty_question"),
    ],
)
def test_search_bodies(client, body, status, code) -> None:
    r = client.post("/api/v1/search", json=body)
    assert r.status_code == status, r.get_json()
    if code:
        assert r.get_json()["error"]["code"] == code


def test_question_ids_and_deep_json(client) -> None:
    r = client.post("/api/v1/questions", json={"questions": [{"text": "Ünïcode id?", "id": "ünï"}]})
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid_id"
    r = client.post("/api/v1/questions", json={"questions": [{"text": "Null id and meta?", "id": None, "meta": None}]})
    assert r.status_code == 201
    deep = '{"questions": [{"text": "deep?", "meta": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}]}"
    r = client.post("/api/v1/questions", data=deep, content_type="application/json")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid_json"


def test_train_options_are_checked_before_a_job_starts(client) -> None:
    for body in ({"max_steps": 0}, {"base_weight": 1.0}, {"loss": "hinge"}, {"nope": 1}, {"from": ""}):
        r = client.post("/api/v1/train", json=body, headers=AUTH)
        assert r.status_code == 400, body
        assert r.get_json()["error"]["code"] in ("invalid_option", "unknown_field", "missing_field")
    assert client.get("/api/v1/jobs").get_json() == {"jobs": []}


def test_a_signed_in_session_does_not_authorise_api_writes(client) -> None:
    """The API is exempt from CSRF tokens, so only the bearer token may authorise its writes."""
    client.post("/admin/login", data={"token": ADMIN_TOKEN})  # the session: the key's id, name and scope
    assert client.get("/admin/status.json").status_code == 200  # the pages take the session
    r = client.post("/api/v1/models/base/promote")
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthorized"
    assert client.post("/api/v1/models/base/promote", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code \
        == 200
