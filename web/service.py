"""The app's one DupQ service and its settings (flaskr's ``db`` module pattern: ``init_app`` + ``get_service``)."""

from __future__ import annotations

import atexit

from flask import Flask, current_app

from dupq.config import Settings
from dupq.review import RecentSearches
from dupq.service import DupQ


def init_app(app: Flask, settings: Settings) -> None:
    """Open the service when the app is created, so the model is loaded and warm before the first request."""
    svc = DupQ(settings)
    svc.warm_up()  # every common question length compiled before the port opens
    app.extensions["dupq"] = svc
    app.extensions["dupq.settings"] = settings
    atexit.register(svc.close)


def get_service() -> DupQ:
    return current_app.extensions["dupq"]


def get_settings() -> Settings:
    return current_app.extensions["dupq.settings"]


def recent_searches() -> RecentSearches:
    """The app's memory of recent searches (page and API), which the review queue draws candidates from."""
    return current_app.extensions.setdefault("dupq_recent", RecentSearches())


def remember_search(question: str, result: dict) -> None:
    """Record one answered search (question as typed, the answer of :meth:`DupQ.search`) for the review queue,
    and count it by scorer (``GET /metrics``)."""
    recent_searches().record(" ".join(question.split()), result["model"], result["results"])
    metrics = current_app.extensions.get("dupq_metrics")  # web.metrics.Metrics, None when metrics are off
    if metrics is not None:
        metrics.searched(result["scorer"])
