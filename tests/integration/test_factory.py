"""The app factory and the one settings path: defaults < instance file < environment < explicit arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import ADMIN_TOKEN, ROOT, SMALL_BANK

from dupq.config import ANN_MIN_SIZE, DEFAULT_HOME, Settings, SettingsError
from web import create_app


def test_defaults_without_any_source() -> None:
    s = Settings.load(environ={})
    assert s.home == Path(DEFAULT_HOME) and s.ann_min_size == ANN_MIN_SIZE and s.admin_token is None
    assert s.export_cache == Path.home() / ".cache" / "dupq" / "openvino"


def test_precedence_file_env_explicit(tmp_path: Path) -> None:
    f = tmp_path / "dupq.toml"
    f.write_text('home = "/from/file"\nann_min_size = 111\ngate_tolerance = 0.1\nbackend = "torch"\n')
    env = {"DUPQ_CONFIG": str(f), "DUPQ_ANN_MIN_SIZE": "222", "DUPQ_HOME": "/from/env", "XDG_CACHE_HOME": "/xdg"}
    s = Settings.load(environ=env, home="/explicit")
    assert s.home == Path("/explicit")  # explicit beats the environment
    assert s.ann_min_size == 222  # the environment beats the file
    assert s.gate_tolerance == 0.1 and s.backend == "torch"  # the file beats the defaults
    assert s.export_cache == Path("/xdg/dupq/openvino")
    # None means "not given" (an option left out): the lower source stays.
    assert Settings.load(environ=env, home=None).home == Path("/from/env")


def test_explicit_config_file_beats_the_variable(tmp_path: Path) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text("ann_min_size = 1\n")
    b.write_text("ann_min_size = 2\n")
    assert Settings.load(environ={"DUPQ_CONFIG": str(a)}, config_file=b).ann_min_size == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"environ": {"DUPQ_ADMN_TOKEN": "x"}}, "unknown environment variable DUPQ_ADMN_TOKEN"),
        ({"environ": {}, "colour": "blue"}, "unknown setting(s) in settings: colour"),
        ({"environ": {"DUPQ_ANN_MIN_SIZE": "lots"}}, "DUPQ_ANN_MIN_SIZE must be a number"),
        ({"environ": {"DUPQ_BACKEND": "tensorrt"}}, "backend must be one of"),
        ({"environ": {"DUPQ_CONFIG": "/no/such/file.toml"}}, "not found"),
    ],
)
def test_bad_settings_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.load(**kwargs)


def test_unknown_key_in_instance_file(tmp_path: Path) -> None:
    f = tmp_path / "dupq.toml"
    f.write_text("hom = 'typo'\n")
    with pytest.raises(SettingsError, match="unknown setting.*hom"):
        Settings.load(environ={}, config_file=f)


def test_empty_variable_turns_an_optional_setting_off() -> None:
    s = Settings.load(environ={"DUPQ_SEED_BANK": "", "DUPQ_EXPORT_CACHE": "", "DUPQ_HOME": ""})
    assert s.seed_bank is None and s.export_cache is None and s.home == Path(DEFAULT_HOME)
    assert Settings.load(environ={}, rate_limit_search="").rate_limit_search is None  # "" = off, explicitly too
    assert Settings.load(environ={"DUPQ_TEST_ANYTHING": "1"}) == Settings.load(environ={})  # the tests' own


def test_worker_settings_hold_no_secret() -> None:
    s = Settings(admin_token="secret", secret_key="key")
    d = s.for_worker()
    assert d["admin_token"] is None and d["secret_key"] is None
    assert Settings.from_dict(d).home == s.home


def test_factory_stores_the_settings_and_takes_explicit_values(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DUPQ_ADMIN_TOKEN", "from-env")
    monkeypatch.setenv("DUPQ_GATE_TOLERANCE", "0.3")
    app = create_app({"TESTING": True, "home": str(tmp_path / "h"), "seed_bank": str(SMALL_BANK),
                      "admin_token": ADMIN_TOKEN})
    try:
        s = app.extensions["dupq.settings"]
        assert s.admin_token == ADMIN_TOKEN and s.gate_tolerance == 0.3 and app.testing
        assert app.extensions["dupq"].settings is s  # passed down, not rebuilt
        c = app.test_client()
        assert c.delete("/api/v1/questions/x", headers={"Authorization": "Bearer from-env"}).status_code == 401
    finally:
        app.extensions["dupq"].close()


def test_factory_with_built_settings(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "h", seed_bank=str(SMALL_BANK))
    app = create_app({"TESTING": True}, settings=settings)
    try:
        assert app.extensions["dupq.settings"] is settings
        assert app.test_client().get("/healthz").json["questions"] == 8
    finally:
        app.extensions["dupq"].close()
    with pytest.raises(TypeError):
        create_app({"home": "x"}, settings=settings)


def test_admin_session_holds_a_claim_not_the_token(client) -> None:
    r = client.post("/admin/login", data={"token": ADMIN_TOKEN})
    assert r.status_code == 302
    with client.session_transaction() as sess:
        assert dict(sess) == {"key_id": "admin-token", "key": "admin-token", "scope": "admin"}
        assert ADMIN_TOKEN not in repr(dict(sess))
    assert client.get("/admin/status.json").status_code == 200
    client.post("/admin/logout")
    assert client.get("/admin/status.json").status_code == 401


def test_only_entry_points_touch_the_environment() -> None:
    """Below the CLI, the app factory and the worker's main, settings come in as arguments."""
    root = ROOT
    # dupq/training/distributed.py is the data-parallel ranks' main (`python -m dupq.training.distributed`):
    # torchrun speaks to it through the environment (LOCAL_RANK, OMP_NUM_THREADS).
    entry_points = {root / "dupq" / "cli.py", root / "dupq" / "worker.py",
                    root / "dupq" / "training" / "distributed.py", root / "web" / "__init__.py"}
    offenders = []
    for f in [*(root / "dupq").rglob("*.py"), *(root / "web").rglob("*.py")]:
        if f in entry_points:
            continue
        for n, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if ("os.environ" in code or "getenv(" in code) and "``" not in code:
                offenders.append(f"{f.relative_to(root)}:{n}")
    assert offenders == []
