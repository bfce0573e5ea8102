"""Shared fixtures (flaskr style: ``app``, ``client``, ``runner``) over a real model and a temp home.

The packaged model is loaded once per process (``dupq.model`` caches it by path); each test gets its own
``$DUPQ_HOME`` seeded with a small bank so tests stay independent and fast.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIXTURES = Path(__file__).parent / "fixtures"
SMALL_BANK = FIXTURES / "small_bank.jsonl"
ADMIN_TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class CsrfClient(FlaskClient):
    """A test client whose posts to the pages carry the page's CSRF token, as the browser's forms and fetches do
    (web/csrf.py): the token is read from the search page's ``<meta name="csrf-token">`` of this client's session.
    tests/test_csrf.py uses a plain ``FlaskClient`` to check that a post without it is refused."""

    def open(self, *args, **kwargs):
        path = args[0] if args else kwargs.get("path", "/")
        if kwargs.get("method") == "POST" and isinstance(path, str) and not path.startswith("/api/"):
            headers = dict(kwargs.get("headers") or {})
            if "X-CSRFToken" not in headers:
                page = super().open("/", method="GET").get_data(as_text=True)
                headers["X-CSRFToken"] = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
                kwargs["headers"] = headers
        return super().open(*args, **kwargs)


Flask.test_client_class = CsrfClient


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def settings(home: Path):
    from dupq.config import Settings

    return Settings(home=home, seed_bank=str(SMALL_BANK))


@pytest.fixture
def svc(settings):
    from dupq.service import DupQ

    s = DupQ(settings)
    yield s
    s.close()


@pytest.fixture
def app(home: Path):
    from web import create_app

    app = create_app(
        {
            "TESTING": True,
            "home": str(home),
            "seed_bank": str(SMALL_BANK),
            "admin_token": ADMIN_TOKEN,
            "secret_key": "test",
        }
    )
    yield app
    app.extensions["dupq"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(home: Path):
    from click.testing import CliRunner

    return CliRunner(env={"DUPQ_HOME": str(home), "DUPQ_SEED_BANK": str(SMALL_BANK)})
