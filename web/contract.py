"""The JSON API's contract, declared once: pydantic v2 models of every request and response body.

Both the validation of a request and the OpenAPI 3.1 document (``GET /api/v1/openapi.json``) come from these
models and from the :func:`operation` declaration on each view in ``web/api.py``; nothing else describes the
API. The models state everything the server enforces (string lengths, the non-blank rule, integer bounds,
unknown fields refused: ``additionalProperties: false``), so a request that the document accepts is never
refused with a 400 (``tests/system/test_fuzz.py`` holds that with schemathesis), and a request it refuses is answered
with a 400 in the documented error shape. Pydantic's errors are mapped to the stable error codes of docs/api.md
(:func:`error_code`); the first one is reported.

Types are strict (``"5"`` is not an integer, ``1`` is not a boolean), as JSON Schema reads them: ``5.0`` is an
integer and accepted as 5, ``true`` is not an integer.

Example:
    >>> parse(SearchRequest, {"question": "How do I boil an egg?", "k": 3.0}).k
    3
    >>> try:
    ...     parse(SearchRequest, {"question": "   "})
    ... except Exception as e:
    ...     print(e.code, "-", e.message)
    empty_question - question must not be empty
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, create_model
from pydantic import ValidationError as PydanticValidationError
from pydantic.json_schema import models_json_schema
from pydantic_core import PydanticCustomError

from dupq import __version__
from dupq.config import DEFAULT_K, MAX_BATCH, MAX_ID_CHARS, MAX_K, MAX_PAGE, MAX_QUESTION_CHARS
from dupq.errors import ValidationError
from dupq.filters import FIELD_PATTERN, MAX_FILTER_VALUE_CHARS, MAX_FILTER_VALUES
from dupq.storage.audit import MAX_AUDIT_PAGE
from dupq.storage.jobs import STATES
from dupq.training.config import Option
from dupq.training.config import options as train_options

#: Every character ``str.split()`` treats as whitespace (``str.isspace``), as a regex class; a question must have
#: a character outside it. Spelled out so that every regex engine (JSON Schema's, pydantic's Rust one, Python's)
#: reads the same set; ``tests/integration/test_contract.py`` checks it against ``str.isspace``.
WHITESPACE_CLASS = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = f"[^{WHITESPACE_CLASS}]"
#: An explicit question id in the API: visible ASCII, no whitespace (a subset of what ``dupq import`` accepts).
ID_PATTERN = r"^[!-~]+$"
#: Largest list offset (SQLite's OFFSET is a signed 64-bit integer).
MAX_OFFSET = 2**62


def _json_int(value: Any) -> Any:
    """JSON Schema's integer: ``5.0`` is one (taken as 5), ``true`` is not."""
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def JsonInt(**bounds: int) -> Any:  # noqa: N802 (a type factory)
    """An integer with bounds (``ge``, ``le``, ...), as JSON Schema reads integers."""
    return Annotated[int, Field(**bounds), BeforeValidator(_json_int)]


QuestionText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_QUESTION_CHARS,
        pattern=NOT_BLANK,
        description=f"1-{MAX_QUESTION_CHARS} characters of Unicode text, not only whitespace (whitespace runs are "
        "collapsed to one space before it is stored or searched)",
    ),
]
QuestionId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ID_CHARS,
        pattern=ID_PATTERN,
        description=f"1-{MAX_ID_CHARS} visible ASCII characters, no whitespace",
    ),
]


class Request(BaseModel):
    """A request body: strict types, unknown fields refused (``additionalProperties: false``)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Response(BaseModel):
    """A response body (documentation only: the views build plain dicts, the fuzz test checks them)."""


# -- requests ------------------------------------------------------------------------------------------------
#: A value in a search filter (dupq/filters.py): a string, number or boolean.
FilterValue = Union[  # noqa: UP007
    Annotated[str, Field(max_length=MAX_FILTER_VALUE_CHARS, pattern=r"^[^\x00]*$")], int, float, bool
]


class AnyOf(Request):
    any: list[FilterValue] = Field(min_length=1, max_length=MAX_FILTER_VALUES,
                                   description="the question has at least one of these values")


class NoneOf(Request):
    none: list[FilterValue] = Field(min_length=1, max_length=MAX_FILTER_VALUES,
                                    description="the question has none of these values (or lacks the field)")


class SearchFilter(RootModel[dict[Annotated[str, Field(pattern=FIELD_PATTERN)], Union[FilterValue, AnyOf, NoneOf]]]):  # noqa: UP007
    """``{FIELD: VALUE | {"any": [...]} | {"none": [...]}}`` on the declared ``filter_fields`` (the document lists
    them: :func:`openapi_document`); a value matches a field equal to it or a list field holding it; fields and."""

    model_config = ConfigDict(strict=True)


class SearchRequest(Request):
    question: QuestionText
    k: JsonInt(ge=1, le=MAX_K) = DEFAULT_K
    rerank: bool | None = Field(
        None,
        description="re-score the twin's top rerank_top_n with the version's cross-encoder (null/absent: the rerank "
        "setting); 409 no_cross_encoder when the served version has none",
    )
    filter: SearchFilter | None = Field(
        None, description="only questions whose meta matches (a pre-filter: the best k among them, before any "
        "re-ranking); 400 unknown_filter_field for a field not in the filter_fields setting",
    )

    def filter_dict(self) -> dict[str, Any] | None:
        """The filter as plain JSON values, as :meth:`dupq.service.DupQ.search` takes it."""
        return None if self.filter is None else self.model_dump(include={"filter"})["filter"]


class NewQuestion(Request):
    text: QuestionText
    id: QuestionId | None = Field(None, description="explicit id (absent or null: one is generated); 409 if it exists")
    meta: dict[str, Any] | None = Field(None, description="any JSON object, stored with the question")


class AddQuestionsRequest(Request):
    questions: list[NewQuestion] = Field(min_length=1, max_length=MAX_BATCH, description="all or nothing")


class Pair(Request):
    question1: QuestionText
    question2: QuestionText
    label: Annotated[Literal[0, 1], BeforeValidator(_json_int)] = Field(description="1 = the same question")


class AddPairsRequest(Request):
    pairs: list[Pair] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description="all or nothing; a pair of a question with itself (after whitespace collapse) is not stored and "
        "is counted in self_pairs",
    )
    source: Literal["api", "feedback", "import"] = "api"


class CloseRequest(Request):
    canonical: QuestionId = Field(description="the question this one duplicates; if that one is closed itself, the "
                                  "end of its chain (its canonical question) is used")


class ListQuery(BaseModel):
    """Query of ``GET /api/v1/questions`` (query values are strings: lax integers)."""

    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    limit: int = Field(50, ge=1, le=MAX_PAGE)


class AuditQuery(BaseModel):
    """Query of ``GET /api/v1/audit`` (query values are strings: lax integers)."""

    limit: int = Field(50, ge=1, le=MAX_AUDIT_PAGE, description="entries per page")
    before: int | None = Field(None, ge=1, le=MAX_OFFSET,
                               description="only entries older than this one (the previous page's next_before)")


def _train_option(option: Option) -> tuple[Any, Any]:
    """A :class:`dupq.training.config.TrainConfig` field as a request field: its type with the choices and bounds
    its declaration states (those ``TrainConfig`` checks), its default and its help."""
    kinds: list[Any] = []
    for kind in option.types:
        if kind is int:
            kinds.append(JsonInt(**option.bounds))
        elif kind is float:
            kinds.append(Annotated[float, Field(**option.bounds, allow_inf_nan=False)])
        elif kind is str and option.choices:
            kinds.append(Literal[option.choices])
        elif kind is str and option.pattern:
            kinds.append(Annotated[str, Field(pattern=option.pattern)])
        else:  # bool, str, None: as they are
            kinds.append(kind)
    description = option.described(f"null: {option.none}") if option.nullable and option.none else option.help
    return Union[tuple(kinds)], Field(option.default, description=description)  # noqa: UP007 (built at run time)


class _TrainFrom(Request):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)

    from_: str = Field("current", alias="from", min_length=1,
                       description="current (the served version), base (the packaged model) or a version name")


#: Options of a retrain: ``from`` and one field per :class:`dupq.training.config.TrainConfig` field, made from its
#: declaration, so a new training option is in the API and its document without an edit here.
TrainRequest = create_model(
    "TrainRequest",
    __base__=_TrainFrom,
    __module__=__name__,
    __doc__="Options of a retrain: the version to start from and the training options (absent: the default).",
    **{option.name: _train_option(option) for option in train_options()},
)


# -- responses -----------------------------------------------------------------------------------------------
class ErrorDetail(Response):
    code: str
    message: str


class Error(Response):
    error: ErrorDetail


class DuplicateResult(Response):
    id: str
    text: str
    score: float = Field(description="this closed duplicate's own score (as the result's score)")


class SearchResult(Response):
    id: str
    text: str
    score: float = Field(description="cosine similarity, or Euclidean distance; re-ranked: the re-ranking "
                         "duplicate score in [0, 1] (see scorer). A canonical question with closed duplicates: the "
                         "best score of its cluster's hits (its own or a closed duplicate's)")
    duplicate: bool = Field(description="the score crosses the deciding scorer's threshold")
    twin_score: float | None = Field(None, description="re-ranked results only: the twin's score (of the hit that "
                                     "gave the score)")
    duplicates: list[DuplicateResult] | None = Field(
        None, description="present when closed duplicates of this (canonical) question matched: each cluster of "
        "duplicates is answered once, as its canonical question, with those attached, best first")
    url: str | None = Field(None, description="the question's own address on its community's site (its meta.url), "
                            "present when stored; the widget links there, else to /q/<id>")


class SearchResponse(Response):
    model: str = Field(description="model version that produced the answer")
    energy: Literal["cosine", "euclidean"]
    scorer: Literal["twin", "cross-encoder+twin", "cross-encoder"] = Field(
        description="which model ranked the results and decided duplicate: the twin, the re-ranking fusion of the "
        "cross-encoder's logit with the twin's score, or the cross-encoder alone (a version without a fusion)")
    threshold: float | None
    took_ms: float
    results: list[SearchResult] = Field(description="best first")


class AddedIds(Response):
    ids: list[str] = Field(description="ids of the added questions, in request order")


class Question(Response):
    id: str
    text: str
    meta: dict[str, Any]
    created_at: str


class QuestionDetail(Question):
    duplicate_of: str | None = Field(description="the canonical question this one is closed onto (null: open)")


class DuplicateLink(Response):
    id: str
    duplicate_of: str = Field(description="the canonical question (the end of the chain)")
    pair_id: int | None = Field(description="the labelled pair closing stored (removed on reopen); null: none")
    closed: bool = Field(description="false: it already was closed onto this canonical question (nothing changed)")


class ClosedLink(Response):
    id: str
    duplicate_of: str = Field(description="the canonical question (the end of the chain)")
    closed_onto: str = Field(description="the question it was closed onto (differs when that one was closed later)")
    pair_id: int | None = Field(description="the labelled pair closing stored; null: none")
    actor: str = Field(description="who closed it: api, admin, review, cli, import")
    created_at: str


class Reopened(Response):
    id: str
    duplicate_of: None
    reopened_from: str = Field(description="the canonical question it was closed onto")
    pair_removed: int | None = Field(description="the labelled pair removed with the link; null: there was none")


class QuestionPage(Response):
    questions: list[Question]
    total: int
    offset: int
    limit: int


class Deleted(Response):
    deleted: str


class PairsAdded(Response):
    added: int
    self_pairs: int = Field(description="pairs of a question with itself, not stored")


class JobStarted(Response):
    job: str
    state: Literal[STATES]  # type: ignore[valid-type]


class Job(Response):
    id: str
    state: Literal[STATES]  # type: ignore[valid-type]
    options: dict[str, Any]
    progress: dict[str, Any] = Field(description="step, total, loss, epoch, phase")
    metrics: dict[str, Any] = Field(description="gate reports of the candidate and the current model")
    error: str | None
    version: str | None
    created_at: str
    updated_at: str


class JobList(Response):
    jobs: list[Job] = Field(description="recent jobs, newest first")


class ModelVersion(Response):
    version: str
    parent: str | None
    created_at: str
    current: bool
    energy: str | None
    threshold: float | None
    metrics: dict[str, Any]
    data: dict[str, Any]
    int8: dict[str, Any] | None = Field(
        default=None, description="the version's int8 check (decision, reason, fp32 and int8 dev metrics); null: "
                                  "never checked (docs/operations.md, int8 inference)")


class Models(Response):
    current: str
    versions: list[ModelVersion]


class Current(Response):
    current: str


class Health(Response):
    """Liveness: the process is up. The counts are null while the database is unavailable."""

    status: str
    model: str
    questions: int | None
    indexed: int | None


class Ready(Response):
    """Readiness: the process can answer searches now."""

    status: str
    model: str


class AuditEntry(Response):
    id: int = Field(description="the entry's number (increasing); pass it as before= for the entries older than it")
    at: str = Field(description="when, UTC ISO 8601")
    key: str = Field(description="the acting key's name (admin-token: DUPQ_ADMIN_TOKEN; cli:<user>: the CLI)")
    action: str = Field(description="e.g. model.promote, question.delete, review.label, key.revoke")
    object: str = Field(description="what it acted on: a question id, a version, a key name, a pair")


class AuditPage(Response):
    entries: list[AuditEntry] = Field(description="newest first")
    next_before: int | None = Field(description="before= of the next (older) page; null: this is the last")


class Document(Response):
    """An OpenAPI 3.1 document."""

    openapi: str


# -- validation: pydantic errors -> the documented error codes -------------------------------------------------
_TEXT_FIELDS = {"question", "text", "question1", "question2"}


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "request body"


def _filter_error(kind: str, loc: tuple[Any, ...]) -> tuple[str, str]:
    """The one code of a malformed search filter, and what a filter or its field's condition must be."""
    if kind == "string_pattern_mismatch" and loc[-1] == "[key]":
        return "invalid_filter", f"filter field names must match {FIELD_PATTERN}"
    if len(loc) > 1 and isinstance(loc[1], str):
        return "invalid_filter", (f"filter.{loc[1]} must be a string, number or boolean (at most "
                                  f"{MAX_FILTER_VALUE_CHARS} characters), or {{\"any\": [...]}} / {{\"none\": [...]}} "
                                  f"with 1-{MAX_FILTER_VALUES} of them")
    return "invalid_filter", 'filter must be an object {field: value | {"any": [...]} | {"none": [...]}}'


def error_code(err: Mapping[str, Any], default: str | None = None) -> tuple[str, str]:
    """The stable ``(code, message)`` of one pydantic error (``default``: the code of every error but a missing
    or unknown field, e.g. ``invalid_option`` for training options)."""
    kind, loc = err["type"], tuple(err["loc"])
    name = next((p for p in reversed(loc) if isinstance(p, str)), "")
    path = _loc(loc)
    if kind == "missing":
        return "missing_field", f"missing field: {path}"
    if kind == "extra_forbidden":
        return "unknown_field", f"unknown field: {path}"
    if kind == "string_unicode":
        return "invalid_text", f"{path} is not valid Unicode text (lone surrogate)"
    if loc[0] == "filter":
        return _filter_error(kind, loc)
    message = f"{path}: {err['msg']}"
    if default:
        return default, message
    typed = kind.endswith("_type") or kind in ("int_parsing", "int_from_float", "float_parsing", "bool_parsing")
    if name in _TEXT_FIELDS and not typed:
        if kind == "string_too_long":
            return "question_too_long", f"{path} is {len(err['input'])} characters; the limit is {MAX_QUESTION_CHARS}"
        return "empty_question", f"{path} must not be empty"
    if name == "label":
        return "invalid_label", f"{path} must be 0 or 1"
    if name in ("id", "canonical") and not typed:
        return "invalid_id", f"{path} must be 1-{MAX_ID_CHARS} visible ASCII characters without whitespace"
    if name == "source":
        return "invalid_option", f"{path} must be api, feedback or import"
    if typed:
        return "invalid_type", message
    if name in ("questions", "pairs"):
        if kind == "too_long":
            return "batch_too_large", f"at most {MAX_BATCH} {name} per request"
        return "invalid_type", f"{name} must be a non-empty array"
    if name == "k":
        return "k_out_of_range", f"k must be between 1 and {MAX_K}"
    if kind.startswith(("greater_than", "less_than")):
        return "out_of_range", message
    return "invalid_request", message


def json_body() -> Any:
    """The request's JSON object, or a 400 ``invalid_json`` that says what is wrong with it."""
    from flask import request

    if not request.is_json:
        raise ValidationError("request body must be JSON (content-type: application/json)", code="invalid_json")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the JSON parser goes
        body = None
    if body is None:
        raise ValidationError("request body is not valid JSON", code="invalid_json")
    if not isinstance(body, dict):
        raise ValidationError("request body must be a JSON object", code="invalid_json")
    return body


def parse(model: type[BaseModel], data: Any, *, default_code: str | None = None) -> Any:
    """``data`` validated as ``model``, or :class:`dupq.errors.ValidationError` with the first error's code."""
    try:
        return model.model_validate(data)
    except PydanticValidationError as e:
        code, message = error_code(e.errors(include_url=False)[0], default_code)
        raise ValidationError(message, code=code) from None


# -- operations: what each view takes and answers; the OpenAPI document is built from them ---------------------
@dataclass
class Operation:
    operation_id: str
    summary: str
    responses: dict[int, tuple[type[BaseModel], str]]
    body: type[BaseModel] | None = None
    body_required: bool = True
    body_code: str | None = None
    query: type[BaseModel] | None = None
    path: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The API key scope the operation needs (web/auth.py): ``"search"``, ``"write"``, ``"moderate"``,
    #: ``"admin"``, None (open), or a callable deciding per request (a setting).
    scope: str | None | Callable[[], str | None] = None
    #: Older spelling: ``auth=True`` (or a callable returning True) is ``scope="admin"``; ``scope`` wins.
    auth: bool | Callable[[], bool] = False
    limited: bool = False

    def declared_scope(self) -> str | None | Callable[[], str | None]:
        """What :func:`web.auth.requires` is given: ``scope``, or ``"admin"`` where only ``auth`` is set."""
        if self.scope is not None or not self.auth:
            return self.scope
        auth = self.auth
        return (lambda: "admin" if auth() else None) if callable(auth) else "admin"

    def needed_scope(self) -> str | None:
        scope = self.declared_scope()
        return scope() if callable(scope) else scope

    def needs_token(self) -> bool:
        return self.needed_scope() is not None


def operation(op: Operation) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a view's contract: checks the API key's scope (``op.scope``, :func:`web.auth.requires`), then
    validates the JSON body (passed as ``body=``) and the query (``query=``); the document reads ``op`` back from
    the view."""
    from flask import request

    from web.auth import requires

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @requires(op.declared_scope())
        @functools.wraps(fn)
        def view(**kwargs: Any) -> Any:
            if op.body is not None:
                data = json_body() if op.body_required or request.content_length else {}
                kwargs["body"] = parse(op.body, data, default_code=op.body_code)
            if op.query is not None:
                kwargs["query"] = parse(op.query, request.args.to_dict())
            return fn(**kwargs)

        view.dupq_operation = op  # type: ignore[attr-defined]
        return view

    return deco


_RULE_ARG = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def _json(ref: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def openapi_document(app: Any) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the operations registered on ``app`` (its ``/api/`` and ``/healthz`` views)."""
    ops: list[tuple[str, str, Operation]] = []
    for rule in app.url_map.iter_rules():
        op = getattr(app.view_functions.get(rule.endpoint), "dupq_operation", None)
        if op is None:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            ops.append((_RULE_ARG.sub(r"{\1}", rule.rule), method.lower(), op))
    requests = {o.body for _, _, o in ops if o.body} | {o.query for _, _, o in ops if o.query}
    responses = {m for _, _, o in ops for m, _ in o.responses.values()} | {Error}
    keys = [(m, "validation") for m in sorted(requests, key=lambda m: m.__name__)]
    keys += [(m, "serialization") for m in sorted(responses, key=lambda m: m.__name__)]
    refs, defs = models_json_schema(keys, ref_template="#/components/schemas/{model}")
    schemas = dict(defs.get("$defs", {}))
    if "SearchFilter" in schemas:  # the fields this server declares filterable, and no other
        condition = schemas["SearchFilter"]["patternProperties"][FIELD_PATTERN]
        fields = app.extensions["dupq.settings"].filter_fields
        schemas["SearchFilter"] = {
            "type": "object", "properties": {f: condition for f in fields}, "additionalProperties": False,
            "description": "{FIELD: VALUE | {\"any\": [...]} | {\"none\": [...]}} on the filter_fields setting's "
            "fields: VALUE matches a field equal to it or a list field holding it; several fields must all match",
        }

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return refs[(model, mode)]

    paths: dict[str, dict[str, Any]] = {}
    error = ref(Error, "serialization")
    for path, method, op in ops:
        doc: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "responses": {}}
        params = [
            {"name": n, "in": "path", "required": True, "schema": s} for n, s in op.path.items()
        ]
        if op.query is not None:
            q = op.query.model_json_schema()
            params += [
                {"name": n, "in": "query", "required": False, "schema": {k: v for k, v in s.items() if k != "title"}}
                for n, s in q["properties"].items()
            ]
        if params:
            doc["parameters"] = params
        if op.body is not None:
            doc["requestBody"] = {
                "required": op.body_required,
                "content": {"application/json": {"schema": ref(op.body, "validation")}},
            }
        for status, (model, description) in sorted(op.responses.items()):
            doc["responses"][str(status)] = _json(ref(model, "serialization"), description)
        if op.body is not None or op.query is not None:
            doc["responses"].setdefault("400", _json(error, "Invalid request (the error code says why)"))
        if op.body is not None:
            doc["responses"]["413"] = _json(error, "Request body over the limit (8 MiB)")
        if op.limited:
            doc["responses"]["429"] = _json(error, "Over the client's rate limit (Retry-After says when to retry)")
        scope = op.needed_scope()
        if scope is not None:
            # OpenAPI 3.1: a non-OAuth scheme's requirement may list the roles it needs; here the lowest scope.
            doc["security"] = [{"bearer": [scope]}]
            doc["description"] = f"Needs an API key of scope {scope} or higher."
            doc["responses"]["401"] = _json(error, "No key, or an unknown or revoked one")
            doc["responses"]["403"] = _json(error, f"The key's scope is below {scope}, its origin allow-list excludes "
                                            "the request's Origin, or no key exists at all (admin_disabled)")
        else:
            doc["responses"]["401"] = _json(error, "An unknown or revoked key was presented (open without one)")
            doc["responses"]["403"] = _json(error, "The presented key's origin allow-list excludes the request's "
                                            "Origin")
        paths.setdefault(path, {})[method] = doc
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dupq",
            "version": __version__,
            "description": "Duplicate-question retrieval with a Siamese sentence encoder. Every error is "
            '{"error": {"code", "message"}}.',
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "An API key (dupq keys create; DUPQ_ADMIN_TOKEN is an admin key). Scopes are ordered, "
                "search < write < moderate < admin: a key allows what its scope and every lower one allow.",
            }},
        },
    }
