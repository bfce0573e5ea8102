"""``GET /metrics``: what an operator watches, in Prometheus' text format (prometheus_client).

Counted as requests are answered (a registry per app, so several apps in one process, as in the tests, never
share counters):

* ``dupq_http_requests_total{endpoint, method, status}`` and ``dupq_http_request_duration_seconds{...}``
  (histogram): ``endpoint`` is the route's rule (``/api/v1/questions/<path:qid>``), never the raw path, so
  the number of series stays bounded; ``unmatched`` for a path no route has;
* ``dupq_searches_total{scorer}``: answered searches (API and page) by what scored them (``twin``,
  ``cross-encoder+twin``, ``cross-encoder``);
* ``dupq_rate_limited_total{endpoint}``: requests a rate limit refused (429).

Read from the service at each scrape (:meth:`dupq.service.DupQ.stats`):

* ``dupq_serving_version_info{version}``, ``dupq_questions``, ``dupq_pairs{source}``, ``dupq_index_vectors``;
* ``dupq_jobs{state}`` (the latest 1,000 jobs), ``dupq_job_duration_seconds{state}`` (a summary: count and sum
  of the ended jobs' durations, created to last update) and ``dupq_job_active_seconds`` (the age of the active
  job, 0 when none);
* ``dupq_database_up`` (1 or 0; the database's numbers are left out while it is 0) and, on PostgreSQL, the
  connection pool: ``dupq_db_pool_connections{state="open"|"idle"}``, ``dupq_db_pool_max``,
  ``dupq_db_pool_waiting`` and the counters ``dupq_db_pool_requests_total``, ``..._requests_queued_total``,
  ``..._requests_errors_total``, ``..._wait_seconds_total``, ``..._connections_lost_total``,
  ``..._connect_errors_total``.

Who may read it is the ``metrics`` setting: ``off`` (404), ``open``, or ``admin`` (the admin token, as every
other operator endpoint: web/auth.py). One process serves a node (waitress threads), so one registry holds all
of its numbers; a WSGI server running several worker processes of one app would need prometheus_client's
multiprocess mode, which dupq does not set up (docs/operations.md).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, SummaryMetricFamily
from prometheus_client.exposition import choose_encoder

from dupq.config import Settings
from dupq.storage.jobs import ACTIVE, STATES, TERMINAL
from web.auth import requires

#: Latency buckets (seconds): a search takes milliseconds, an add of a full batch or a promotion seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Where the app keeps its :class:`Metrics` (web/service.py's ``remember_search`` counts searches there).
EXTENSION = "dupq_metrics"


class Metrics:
    """The app's registry: request counters and histograms, and the collector that reads the service."""

    def __init__(self, service: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["endpoint", "method", "status"]
        self.requests = Counter("dupq_http_requests", "HTTP requests answered", labels, registry=self.registry)
        self.latency = Histogram("dupq_http_request_duration_seconds", "Time to answer an HTTP request", labels,
                                 buckets=BUCKETS, registry=self.registry)
        self.searches = Counter("dupq_searches", "Searches answered (API and page), by scorer", ["scorer"],
                                registry=self.registry)
        self.rate_limited = Counter("dupq_rate_limited", "Requests refused by a rate limit (429)", ["endpoint"],
                                    registry=self.registry)
        self.registry.register(_ServiceCollector(service))
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # bounded: routes x methods x statuses
        self._scorers: dict[str, Any] = {}  # bounded: the scorers a search can name

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:  # labels() validates and locks: 8 us a request where the cached children take 1.5
            code = str(status)
            children = self._children[key] = (self.requests.labels(endpoint, method, code),
                                              self.latency.labels(endpoint, method, code))
        children[0].inc()
        children[1].observe(seconds)
        if status == 429:
            self.rate_limited.labels(endpoint).inc()

    def searched(self, scorer: str) -> None:
        child = self._scorers.get(scorer)
        if child is None:  # labels() validates and locks on every call: cached as observe's children are
            child = self._scorers[scorer] = self.searches.labels(scorer)
        child.inc()


class _ServiceCollector:
    """Numbers read from the service at each scrape (one :meth:`dupq.service.DupQ.stats` call)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def describe(self) -> list:
        return []  # families vary with the database's state: nothing to check at registration

    def collect(self):
        s = self.service.stats()
        info = InfoMetricFamily("dupq_serving_version", "The model version this process serves")
        info.add_metric([], {"version": s["model"]})
        yield info
        yield GaugeMetricFamily("dupq_database_up", "Whether the database answers (1) or not (0)",
                                value=1 if s["database"] else 0)
        if s["database"]:
            yield GaugeMetricFamily("dupq_questions", "Stored questions", value=s["questions"])
            yield GaugeMetricFamily("dupq_index_vectors", "Vectors in the served version's index", value=s["indexed"])
            pairs = GaugeMetricFamily("dupq_pairs", "Stored labelled pairs, by source", labels=["source"])
            for source, n in sorted(s["pairs"].items()):
                pairs.add_metric([source], n)
            yield pairs
            yield from _jobs(s["jobs"])
        yield from _pool(s["pool"])


def _seconds(job: Any) -> float:
    try:
        return max((datetime.fromisoformat(job.updated_at) - datetime.fromisoformat(job.created_at)).total_seconds(),
                   0.0)
    except (TypeError, ValueError):
        return 0.0


def _jobs(jobs: list[Any]):
    by_state = dict.fromkeys(STATES, 0)
    for j in jobs:
        by_state[j.state] = by_state.get(j.state, 0) + 1
    counts = GaugeMetricFamily("dupq_jobs", "Training jobs by state (the latest 1,000)", labels=["state"])
    for state, n in by_state.items():
        counts.add_metric([state], n)
    yield counts
    durations = SummaryMetricFamily("dupq_job_duration_seconds", "Durations of ended training jobs (created to end)",
                                    labels=["state"])
    for state in TERMINAL:
        ended = [_seconds(j) for j in jobs if j.state == state]
        durations.add_metric([state], count_value=len(ended), sum_value=sum(ended))
    yield durations
    active = [j for j in jobs if j.state in ACTIVE]
    age = 0.0
    if active:
        try:
            age = max(time.time() - datetime.fromisoformat(active[0].created_at).timestamp(), 0.0)
        except (TypeError, ValueError):
            age = 0.0
    yield GaugeMetricFamily("dupq_job_active_seconds", "Age of the active training job (0: none)", value=age)


#: psycopg_pool's counters exposed, with their metric names (``requests_wait_ms`` is turned into seconds).
_POOL_COUNTERS = {
    "requests_num": ("dupq_db_pool_requests", "Connections asked of the pool"),
    "requests_queued": ("dupq_db_pool_requests_queued", "Requests that waited for a connection"),
    "requests_errors": ("dupq_db_pool_requests_errors", "Requests that got no connection (timeout)"),
    "connections_lost": ("dupq_db_pool_connections_lost", "Pooled connections found broken"),
    "connections_errors": ("dupq_db_pool_connect_errors", "Failed connection attempts"),
}


def _pool(stats: dict[str, int]):
    if not stats:
        return
    conns = GaugeMetricFamily("dupq_db_pool_connections", "Pooled database connections", labels=["state"])
    conns.add_metric(["open"], stats.get("pool_size", 0))
    conns.add_metric(["idle"], stats.get("pool_available", 0))
    yield conns
    yield GaugeMetricFamily("dupq_db_pool_max", "Largest number of pooled connections", value=stats.get("pool_max", 0))
    yield GaugeMetricFamily("dupq_db_pool_waiting", "Requests waiting for a connection now",
                            value=stats.get("requests_waiting", 0))
    for key, (name, doc) in _POOL_COUNTERS.items():
        yield CounterMetricFamily(name, doc, value=stats.get(key, 0))
    yield CounterMetricFamily("dupq_db_pool_wait_seconds", "Time requests waited for a connection",
                              value=stats.get("requests_wait_ms", 0) / 1000)


def init_app(app: Flask, settings: Settings) -> None:
    """Count every request (unless ``metrics = "off"``) and serve ``GET /metrics``."""
    if settings.metrics == "off":
        return
    metrics = app.extensions[EXTENSION] = Metrics(app.extensions["dupq"])

    @app.before_request
    def _start() -> None:
        g.metrics_t0 = time.perf_counter()

    @app.after_request
    def _count(resp):
        t0 = g.get("metrics_t0")
        rule = request.url_rule
        metrics.observe(rule.rule if rule is not None else "unmatched", request.method, resp.status_code,
                        0.0 if t0 is None else time.perf_counter() - t0)
        return resp

    @app.get("/metrics")
    @requires(lambda: "admin" if settings.metrics == "admin" else None)  # an admin key, as every operator endpoint
    def prometheus_metrics():
        # Prometheus' text format, or OpenMetrics when the scraper asks for it (its Accept header)
        encode, content_type = choose_encoder(request.headers.get("Accept"))
        return Response(encode(metrics.registry), content_type=content_type)
