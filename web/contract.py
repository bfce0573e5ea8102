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

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic import ValidationError as PydanticValidationError
from pydantic.json_schema import models_json_schema
from pydantic_core import PydanticCustomError

from dupq import __version__
from dupq.config import DEFAULT_K, MAX_BATCH, MAX_ID_CHARS, MAX_K, MAX_PAGE, MAX_QUESTION_CHARS
from dupq.errors import ValidationError
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
class SearchRequest(Request):
    question: QuestionText
    k: JsonInt(ge=1, le=MAX_K) = DEFAULT_K
    rerank: bool | None = Field(
        None,
        description="re-score the twin's top rerank_top_n with the version's cross-encoder (null/absent: the rerank "
        "setting); 409 no_cross_encoder when the served version has none",
    )


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


class ListQuery(BaseModel):
    """Query of ``GET /api/v1/questions`` (query values are strings: lax integers)."""

    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    limit: int = Field(50, ge=1, le=MAX_PAGE)


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


class SearchResult(Response):
    id: str
    text: str
    score: float = Field(description="cosine similarity, or Euclidean distance; re-ranked: the re-ranking "
                         "duplicate score in [0, 1] (see scorer)")
    duplicate: bool = Field(description="the score crosses the deciding scorer's threshold")
    twin_score: float | None = Field(None, description="re-ranked results only: the twin's score")


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
    if name == "id" and not typed:
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
    auth: bool | Callable[[], bool] = False
    limited: bool = False

    def needs_token(self) -> bool:
        return self.auth() if callable(self.auth) else bool(self.auth)


def operation(op: Operation) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a view's contract: checks the admin token when ``op.auth`` says so, then validates the JSON body
    (passed as ``body=``) and the query (``query=``); the document reads ``op`` back from the view."""
    from flask import request

    from web.auth import check_token

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def view(**kwargs: Any) -> Any:
            if op.needs_token():
                check_token()
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
        if op.needs_token():
            doc["security"] = [{"bearer": []}]
            doc["responses"]["401"] = _json(error, "Missing or wrong bearer token")
            doc["responses"]["403"] = _json(error, "Admin endpoints disabled (no token configured)")
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
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "DUPQ_ADMIN_TOKEN"}},
        },
    }
