"""The app's one DupQ service (flaskr's ``db`` module pattern: ``init_app`` + ``get_service``)."""

from __future__ import annotations

import atexit

from flask import Flask, current_app

from dupq.config import Settings
from dupq.service import DupQ


def init_app(app: Flask) -> None:
    """Open the service when the app is created, so the model is loaded before the first request."""
    settings = Settings.from_dict(
        {
            **Settings.from_env(home=app.config["DUPQ_HOME"]).to_dict(),
            "seed_bank": app.config["DUPQ_SEED_BANK"],
            "admin_token": app.config["DUPQ_ADMIN_TOKEN"],
            "gate_eval_file": app.config["DUPQ_GATE_EVAL_FILE"],
            "gate_tolerance": app.config["DUPQ_GATE_TOLERANCE"],
        }
    )
    svc = DupQ(settings)
    app.extensions["dupq"] = svc
    atexit.register(svc.close)


def get_service() -> DupQ:
    return current_app.extensions["dupq"]
