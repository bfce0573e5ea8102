"""Model versions: registration, promotion (index built before the switch), rollback through history."""

from __future__ import annotations

import pytest

from dupq.errors import NotFoundError
from dupq.models.encoder import PACKAGED, SiameseEncoder
from dupq.service import DupQ
from dupq.storage.registry import BASE_VERSION


def add_version(svc: DupQ, name: str, energy: str = "euclidean", threshold: float = 0.7) -> None:
    enc = SiameseEncoder.from_pretrained(energy=energy, threshold=threshold)
    enc.metadata = {"parent": svc.version, "metrics": {"ap": 0.5}}
    enc.save(svc.registry.path(name), weights=PACKAGED)
    svc.registry.register(name, parent=svc.version)


def test_base_is_registered_and_current(svc: DupQ) -> None:
    assert svc.registry.current() == BASE_VERSION
    [v] = svc.registry.list()
    assert v["version"] == "base" and v["current"] and v["energy"] == "cosine"


def test_promote_builds_index_then_switches_and_rollback_walks_back(svc: DupQ, settings) -> None:
    add_version(svc, "v1")
    add_version(svc, "v2", energy="cosine", threshold=0.9)
    assert svc.version == "base"  # registering does not promote
    svc.promote("v1")
    assert svc.version == "v1" and svc.registry.current() == "v1"
    assert (settings.index_dir / "v1" / "manifest.json").exists()
    res = svc.search("How can I reverse a Python list?", k=2)
    assert res["model"] == "v1" and res["energy"] == "euclidean"
    assert res["results"][0]["score"] <= res["results"][1]["score"]  # distances: best = smallest
    svc.promote("v2")
    assert svc.rollback() == "v1" and svc.version == "v1"
    assert svc.rollback() == "base" and svc.version == "base"
    with pytest.raises(NotFoundError):
        svc.rollback()
    with pytest.raises(NotFoundError):
        svc.promote("nope")


def test_current_version_survives_restart_and_missing_index_is_rebuilt(svc: DupQ, settings) -> None:
    import shutil

    add_version(svc, "v1")
    svc.promote("v1")
    svc.close()
    shutil.rmtree(settings.index_dir / "v1")
    with DupQ(settings) as again:
        assert again.version == "v1" and again.serving.index.ids() == again.store.ids()


def test_registry_passes_backend_and_shared_cache_to_every_load(tmp_path) -> None:
    from dupq.storage.registry import ModelRegistry
    from dupq.storage.sqlite.store import QuestionStore

    store = QuestionStore(tmp_path / "s.sqlite3")
    reg = ModelRegistry(store, tmp_path / "models", backend="torch", shared_export_cache=tmp_path / "ov")
    enc = reg.load("base")
    assert enc.backend == "torch" and enc.shared_export_cache == tmp_path / "ov"
    store.close()
