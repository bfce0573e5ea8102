"""Settings: the one place for paths, limits and defaults.

Every layer (library, CLI, web) reads its configuration through :class:`Settings`, so a limit such as the
longest accepted question is decided here and nowhere else.

Example:
    >>> s = Settings.load(environ={"DUPQ_HOME": "/tmp/dq"})
    >>> str(s.db_path)
    '/tmp/dq/dupq.sqlite3'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from dupq.filters import check_field_name
from dupq.system import default_shared_cache

#: Where state lives when neither ``--home`` nor ``DUPQ_HOME`` says otherwise.
DEFAULT_HOME = "./dupq-data"

#: Decision threshold of the untuned packaged model (cosine similarity): the max-F1 threshold on
#: ``../shared/data/dev/qqp_pairs_dev.tsv``, produced by ``python scripts/calibrate_threshold.py`` (docs/training.md).
BASE_THRESHOLD = 0.7513

#: Longest question accepted, in characters. The encoder truncates at 256 word pieces anyway; past this
#: length the text is almost certainly not a question but a pasted document.
MAX_QUESTION_CHARS = 1000
#: Longest explicit question id, in characters.
MAX_ID_CHARS = 128
#: Bounds of ``k`` in a search.
MAX_K = 100
DEFAULT_K = 10
#: Most questions accepted by one ``POST /api/v1/questions``.
MAX_BATCH = 1000
#: Largest page of ``GET /api/v1/questions``.
MAX_PAGE = 500
#: Largest request body the web app reads, in bytes: a full batch of questions (MAX_BATCH x MAX_QUESTION_CHARS
#: characters, up to 4 UTF-8 bytes each, plus JSON) fits; a larger body is refused with 413 before it is read.
MAX_BODY_BYTES = 8 * 1024 * 1024

#: Inference backends of ``SiameseEncoder.encode``: OpenVINO (the model exported once per version and run
#: in bf16: 3.5-6x plain fp32 torch on this CPU, depending on load, at the same dev AP; docs/benchmarks.md)
#: or torch (fp32, the reference; training always uses torch); the ``backend`` setting chooses.
BACKENDS = ("openvino", "torch")
DEFAULT_BACKEND = "openvino"
#: OpenVINO inference precision: "bf16" (mean cosine 0.99999 to fp32) or "f32" (exact, ~1.6x slower).
OPENVINO_PRECISION = "bf16"
#: Values of the ``inference_precision`` setting (:func:`dupq.models.quantize.resolve_precision`): ``auto``
#: serves a version in int8 where its dev check passed, else in the best float precision of the CPU (bf16
#: where native, else fp32); the others force one (bf16 on a CPU without it runs fp32, and says so).
INFERENCE_PRECISIONS = ("auto", "int8", "bf16", "fp32")
#: A version serves in int8 only if its int8 model's dev pair AP and nDCG@10 are each at most this far below
#: the fp32 model's (0.3 points), measured on the same pairs by the same harness.
INT8_TOLERANCE = 0.003
#: Fewest dev pairs the check after training runs on: with fewer, one pair ranked differently moves AP by more
#: than the bound, so the check could not tell int8 from noise (the version serves in float and dupq.json says
#: so; ``dupq models quantize VERSION --pairs FILE`` checks it on a larger file). The default dev split is ~300.
INT8_MIN_DEV_PAIRS = 200
#: Most dev pairs the check after training scores (a seeded sample of larger dev sets): fp32 and int8 score the
#: same pairs, so the paired difference it judges is steady long before this, and on the recommended command's
#: 7,901 dev pairs the check took 3.6 min on an AVX2-only CPU, time the training budget reserves for it.
INT8_CHECK_MAX_PAIRS = 4_000

#: Bank size from which a version's index is an HNSW graph (dupq/index/ann.py) instead of exact search.
#: Exact search reads every vector per query (~linear: about 1 ms per 10k on this CPU), the graph about
#: 0.3-1 ms at any size; below this an exact answer is cheap enough and needs no graph build.
#: The ``ann_min_size`` setting overrides it.
ANN_MIN_SIZE = 20_000
#: Share of deleted rows in an ANN index that starts a background rebuild (graph + compacted vectors).
ANN_REBUILD_DEAD_FRACTION = 0.25


#: Most candidates a re-ranked search re-scores with the cross-encoder (``rerank_top_n``'s bound): each costs
#: one cross-encoder pass, about 20 per ms-scale batch on this CPU.
MAX_RERANK = 200

#: Who may read ``GET /metrics`` (the ``metrics`` setting): nobody (404), anyone, or the admin token's holders.
METRICS_MODES = ("off", "open", "admin")
#: Log line formats (the ``log_format`` setting).
LOG_FORMATS = ("text", "json")

#: Prefix of the environment variables that set :class:`Settings` fields (``DUPQ_HOME`` sets ``home``).
ENV_PREFIX = "DUPQ_"
#: Environment variable naming the instance file (TOML with :class:`Settings` keys).
CONFIG_ENV = "DUPQ_CONFIG"
#: Prefix of variables reserved for the test suite and benchmarks (never settings, never rejected).
TEST_ENV_PREFIX = "DUPQ_TEST_"


class SettingsError(ValueError):
    """A setting is unknown or has a value of the wrong kind; the message names it and where it came from."""


@dataclass(frozen=True)
class Settings:
    """Runtime configuration of one dupq process: built once by the entry point, then passed down.

    :meth:`load` builds it from, lowest first: these defaults, an instance file (TOML), the ``DUPQ_*``
    environment variables and explicit arguments (command-line options, the app factory's mapping). Below
    the entry points (CLI, app factory, worker) nothing reads the environment: everything comes from here.

    Attributes:
        home: Folder holding the SQLite store, model versions and indexes (``DUPQ_HOME``).
        seed_bank: Question bank loaded into an empty store: ``"default"`` (the bank shipped with dupq),
            a path to a question file, or ``None`` for none (``DUPQ_SEED_BANK``; empty = none).
        encode_batch_size: Batch size for embedding questions.
        import_batch_size: Questions per transaction when importing a file (2,048: 12% faster than 512 for a
            10,000-question import on the quiet 2-core machine, fewer half-empty encode rounds; docs/benchmarks.md).
        admin_token: An admin API key named ``admin-token`` (``DUPQ_ADMIN_TOKEN``), beside the keys of
            ``dupq keys create``. With neither, the endpoints that need a key are disabled rather than open.
        secret_key: Signs the web page's session cookie; None: a random key per process (sessions end
            with a restart).
        gate_tolerance: A retrained candidate is promoted only if its AP is at most this much below the
            current model's on every gate report.
        gate_fraction: Share of the stored pairs' duplicate clusters held out for the gate.
        gate_eval_file: A fixed labelled pair file the gate also evaluates on (optional).
        backend: Encoder backend for serving and import, ``"openvino"`` or ``"torch"``.
        inference_precision: What the OpenVINO backend computes in (serving, import, reindex, promotion):
            ``auto`` (default: int8 where the version's int8 check passed, else bf16 where the CPU has it, else
            fp32), ``int8``, ``bf16`` or ``fp32`` (``DUPQ_INFERENCE_PRECISION``; docs/operations.md).
        ann_min_size: Bank size from which the index is approximate (HNSW) rather than exact.
        rerank: Re-rank searches with the served version's cross-encoder when a request does not say
            (``"rerank"`` in ``POST /api/v1/search``).
        rerank_top_n: How many twin candidates a re-ranked search re-scores (at least ``k``).
        rate_limit_search: Per-client limit of ``POST /api/v1/search`` (Flask-Limiter notation, e.g.
            ``"50/second"``); None: no limit.
        rate_limit_write: Per-client limit of every API write (questions, pairs, deletes, train, promote).
        rate_limit_key: Limit of the rate-limited API requests (search and writes) made with one API key, all
            its clients together (a widget's key is shared by a whole site's visitors); a key's own limit
            (``dupq keys create --rate-limit``) replaces it. None: none beyond the per-client limits.
        questions_need_token: Whether ``POST /api/v1/questions`` (and the page's "add my question") needs a key
            of scope ``write`` or higher (off for the embedded demo; turn it on for a public deployment).
        session_cookie_secure: Send the page's session cookie over HTTPS only (turn it on behind TLS).
        session_cookie_samesite: The session cookie's ``SameSite``: ``Lax`` (default), ``Strict`` or ``None``.
        export_cache: Folder where the packaged model's OpenVINO export is shared by every home of this
            machine (None: each home exports its own). Default ``$XDG_CACHE_HOME/dupq/openvino``
            (``~/.cache/dupq/openvino``); ``DUPQ_EXPORT_CACHE=`` (empty) turns it off.
        database_url: ``postgresql://...``: questions, pairs, jobs, versions and vectors live in that
            PostgreSQL database (pgvector), shared by any number of stateless nodes; ``home`` then holds only
            caches and logs (``DUPQ_DATABASE_URL``, ``--database``). None: the embedded SQLite home.
        job_lease_s: On PostgreSQL, seconds a worker's claim on a job lasts without renewal; a job whose
            node died is taken over by another node after this long.
        pg_index: On PostgreSQL, the type the HNSW index is built on: ``"halfvec"`` (half precision, the
            default) or ``"vector"`` (float32); scores are always computed in float32.
        switch_wait_s: On PostgreSQL, longest wait of a promotion for the other live nodes to load the new
            version before the pointer flips (then each switches at once); a node slower than that loads it
            after the flip and serves the old version meanwhile.
        cors_origins: Exact origins (``https://forum.example``, scheme + host + optional port, no path) whose
            pages may call ``POST /api/v1/search`` from the browser (the widget, ``/widget.js``); none by
            default. TOML: ``cors_origins = ["https://forum.example"]``; environment: ``DUPQ_CORS_ORIGINS``,
            comma- or space-separated. Never a wildcard, never with credentials (docs/widget.md).
        reindex_chunk_size: On PostgreSQL, questions per chunk of a promotion's shared re-embedding: every
            node's runner claims chunks (a lease of ``job_lease_s``), so N nodes embed about 1/N of the bank
            each; a node that dies mid-chunk costs that chunk only. A promotion with fewer questions to embed
            than one chunk embeds them itself.
        filter_fields: The ``meta`` fields a search may filter on (``"filter"`` in ``POST /api/v1/search``,
            ``dupq search --filter``; dupq/filters.py): the store indexes them (SQLite: the ``question_fields``
            table, rebuilt when this list changes; PostgreSQL: a GIN index per field on ``meta -> field``). TOML:
            a list of strings; ``DUPQ_FILTER_FIELDS``: comma-separated (empty: no field is filterable).
        db_timeout_s: On PostgreSQL, longest wait for a working database connection; past it (the database is
            restarting or down) a request answers 503 with ``Retry-After`` instead of hanging, and the pool keeps
            reconnecting in the background (docs/postgres.md, "When the database restarts").
        metrics: ``GET /metrics`` (Prometheus text format): ``"admin"`` (default: behind the admin token, like every
            other operator endpoint; 403 while no token is set), ``"open"`` (anyone who reaches the port: a
            scraper on a private network) or ``"off"`` (404).
        log_format: ``"text"`` (Python's default, warnings only) or ``"json"``: one JSON object per line on
            stderr, INFO and up, one line per request, each line of a request with its ``request_id`` (the
            response's ``X-Request-Id``).

    Example:
        >>> s = Settings.load(environ={"DUPQ_HOME": "/tmp/dq", "DUPQ_ANN_MIN_SIZE": "500"}, home="/tmp/x")
        >>> str(s.db_path), s.ann_min_size
        ('/tmp/x/dupq.sqlite3', 500)
    """

    home: Path = field(default_factory=lambda: Path(DEFAULT_HOME))
    seed_bank: str | None = "default"
    encode_batch_size: int = 64
    import_batch_size: int = 2048
    admin_token: str | None = None
    secret_key: str | None = None
    gate_tolerance: float = 0.005
    gate_fraction: float = 0.2
    gate_eval_file: str | None = None
    backend: str = DEFAULT_BACKEND
    inference_precision: str = "auto"
    ann_min_size: int = ANN_MIN_SIZE
    rate_limit_search: str | None = "50/second"
    rate_limit_write: str | None = "10/second"
    rate_limit_key: str | None = None
    questions_need_token: bool = False
    export_cache: Path | None = None
    rerank: bool = False
    rerank_top_n: int = 20
    session_cookie_secure: bool = False
    session_cookie_samesite: str = "Lax"
    database_url: str | None = None
    job_lease_s: float = 30.0
    pg_index: str = "halfvec"
    switch_wait_s: float = 60.0
    cors_origins: tuple[str, ...] = ()
    reindex_chunk_size: int = 1000
    filter_fields: tuple[str, ...] = ("tags", "site")
    db_timeout_s: float = 5.0
    metrics: str = "admin"
    log_format: str = "text"

    def __post_init__(self) -> None:
        for name in _EMPTY_IS_NONE:  # "" = off, as in the environment (None in explicit arguments = not given)
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)
        object.__setattr__(self, "home", Path(self.home))
        if self.export_cache is not None:
            object.__setattr__(self, "export_cache", Path(self.export_cache))
        if not isinstance(self.rerank, bool):
            raise SettingsError(f"rerank must be true or false, got {self.rerank!r}")
        top_n = self.rerank_top_n
        if isinstance(top_n, bool) or not isinstance(top_n, int) or not 1 <= top_n <= MAX_RERANK:
            raise SettingsError(f"rerank_top_n must be an integer between 1 and {MAX_RERANK}, got {top_n!r}")
        for name in ("encode_batch_size", "import_batch_size", "ann_min_size", "reindex_chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SettingsError(f"{name} must be a positive integer, got {value!r}")
        if self.session_cookie_samesite not in ("Lax", "Strict", "None"):
            raise SettingsError(
                f"session_cookie_samesite must be Lax, Strict or None, got {self.session_cookie_samesite!r}"
            )
        ff = self.filter_fields
        if isinstance(ff, str) or not isinstance(ff, (list, tuple)):
            raise SettingsError(f"filter_fields must be a list of field names, got {ff!r}")
        try:
            object.__setattr__(self, "filter_fields", tuple(dict.fromkeys(check_field_name(f) for f in ff)))
        except ValueError as e:
            raise SettingsError(str(e)) from None
        if self.backend not in BACKENDS:
            raise SettingsError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.inference_precision not in INFERENCE_PRECISIONS:
            known = ", ".join(INFERENCE_PRECISIONS)
            raise SettingsError(f"inference_precision must be one of {known}, got {self.inference_precision!r}")
        if self.database_url is not None and self.database_url.split("://", 1)[0] not in ("postgresql", "postgres"):
            raise SettingsError(f"database_url must be a postgresql:// URL, got {self.database_url!r}")
        if self.pg_index not in ("halfvec", "vector"):
            raise SettingsError(f"pg_index must be 'halfvec' or 'vector', got {self.pg_index!r}")
        lease = self.job_lease_s
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or lease <= 0:
            raise SettingsError(f"job_lease_s must be a positive number of seconds, got {self.job_lease_s!r}")
        wait = self.db_timeout_s
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 < wait <= 600:
            raise SettingsError(f"db_timeout_s must be a number of seconds in (0, 600], got {self.db_timeout_s!r}")
        if self.metrics not in METRICS_MODES:
            raise SettingsError(f"metrics must be one of {METRICS_MODES}, got {self.metrics!r}")
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(f"log_format must be one of {LOG_FORMATS}, got {self.log_format!r}")
        if not 0 < self.gate_fraction < 1 or self.gate_tolerance < 0:
            raise SettingsError("gate_fraction must be in (0, 1) and gate_tolerance >= 0")
        object.__setattr__(self, "cors_origins", clean_origins(self.cors_origins))

    @property
    def db_path(self) -> Path:
        return self.home / "dupq.sqlite3"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def index_dir(self) -> Path:
        return self.home / "index"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    # -- building -----------------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        *,
        environ: Mapping[str, str] | None = None,
        config_file: str | Path | None = None,
        **explicit: Any,
    ) -> Settings:
        """Settings from defaults < instance file < environment < explicit arguments.

        Args:
            environ: The process environment (the entry point passes ``os.environ``); None: no environment.
            config_file: An instance file (TOML with :class:`Settings` keys); None: ``$DUPQ_CONFIG`` if set.
                A missing file named explicitly is an error.
            **explicit: Field values; None means "not given" (a command-line option left out).

        Raises:
            SettingsError: An unknown key in the file, the arguments or a ``DUPQ_*`` variable, or a bad value.
        """
        env = dict(environ or {})
        values: dict[str, Any] = {}
        path = config_file or env.get(CONFIG_ENV) or None
        if path is not None:
            values.update(_read_instance_file(Path(path)))
        values.update(_from_environment(env))
        values.update({k: v for k, v in explicit.items() if v is not None})
        if "export_cache" not in values:
            values["export_cache"] = default_shared_cache(env)
        return cls.from_dict(values, source="settings")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["home"] = str(self.home)
        d["export_cache"] = None if self.export_cache is None else str(self.export_cache)
        d["cors_origins"] = list(self.cors_origins)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "settings") -> Settings:
        """Build from a mapping of field values; unknown keys are an error (a typo must not be ignored)."""
        _check_known(data, source)
        try:
            return cls(**dict(data))
        except TypeError as e:
            raise SettingsError(f"invalid {source}: {e}") from None

    def for_worker(self) -> dict[str, Any]:
        """What a training worker needs, as JSON-ready values: everything but the secrets."""
        d = self.to_dict()
        d["admin_token"] = d["secret_key"] = None
        return d


#: Settings whose empty environment value means None (off) rather than "not set".
_EMPTY_IS_NONE = {
    "database_url", "seed_bank", "admin_token", "secret_key", "gate_eval_file", "export_cache", "rate_limit_search",
    "rate_limit_write", "rate_limit_key",
}


def clean_origins(value: Any) -> tuple[str, ...]:
    """The ``cors_origins`` setting as a tuple of exact origins (``scheme://host[:port]``, lower-case).

    Takes a list (TOML, explicit arguments) or one string of origins separated by commas or spaces (the
    environment). A wildcard, a path, a query, credentials in the URL or a scheme other than http(s) is an
    error: the browser compares origins exactly, so anything else would never match (or match too much).

    Example:
        >>> clean_origins("https://forum.example, http://localhost:8080")
        ('https://forum.example', 'http://localhost:8080')
        >>> clean_origins(["https://Forum.Example/"])
        ('https://forum.example',)
    """
    from urllib.parse import urlsplit

    items = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(o, str) for o in items):
        raise SettingsError(f"cors_origins must be a list of origins such as 'https://forum.example', got {value!r}")
    out: list[str] = []
    for raw in items:
        origin = raw.strip().rstrip("/").lower()
        try:
            parts = urlsplit(origin)
            port = parts.port  # raises on a bad port
        except ValueError:
            parts, port = None, None
        if (
            parts is None or parts.scheme not in ("http", "https") or not parts.hostname or "*" in origin
            or parts.path or parts.query or parts.fragment or parts.username is not None
        ):
            raise SettingsError(
                f"cors_origins: {raw!r} is not an exact origin (scheme://host[:port], http or https, no path "
                "and no wildcard), e.g. 'https://forum.example'"
            )
        default = {"http": 80, "https": 443}[parts.scheme]
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        norm = f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")
        if norm not in out:
            out.append(norm)
    return tuple(out)


def env_var(name: str) -> str:
    """The environment variable of a setting: ``home`` -> ``DUPQ_HOME``."""
    return ENV_PREFIX + name.upper()


def _from_environment(env: Mapping[str, str]) -> dict[str, Any]:
    by_var = {env_var(f.name): f for f in fields(Settings)}
    values: dict[str, Any] = {}
    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV or var.startswith(TEST_ENV_PREFIX):
            continue
        f = by_var.get(var)
        if f is None:
            raise SettingsError(f"unknown environment variable {var}; known: {', '.join(sorted(by_var))}, {CONFIG_ENV}")
        if raw == "":
            if f.name in _EMPTY_IS_NONE:
                values[f.name] = None
            elif isinstance(f.default, tuple):  # an empty list
                values[f.name] = []
            continue
        values[f.name] = _convert(f.name, raw, var)
    return values


def _convert(name: str, raw: str, where: str) -> Any:
    kind = {f.name: f.default for f in fields(Settings)}.get(name)
    if isinstance(kind, tuple):  # a list setting: comma-separated
        return [item.strip() for item in raw.split(",") if item.strip()]
    try:
        if isinstance(kind, bool):
            return raw.lower() in ("1", "true", "yes", "on")
        if isinstance(kind, int):
            return int(raw)
        if isinstance(kind, float):
            return float(raw)
    except ValueError:
        raise SettingsError(f"{where} must be a number, got {raw!r}") from None
    return raw


def _read_instance_file(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(f"instance file {path} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"instance file {path} is not valid TOML: {e}") from None
    _check_known(data, str(path))
    return data


def _check_known(data: Mapping[str, Any], source: str) -> None:
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SettingsError(f"unknown setting(s) in {source}: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
