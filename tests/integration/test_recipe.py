"""The issue-10 recipe: routing labelled vs positive-only pairs, the cross-encoder saved in a version, re-ranked
search (service, API, CLI), ``eval --rerank``, ``train --base PATH``.

Real models, tiny data (tests/fixtures/train), a few optimiser steps: behaviour, not quality. One trained home
is shared by the module (training is the expensive part).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import FIXTURES

from dupq.config import Settings, SettingsError
from dupq.data import Pair, read_pairs, read_pairs_by_source
from dupq.errors import ConflictError, ValidationError
from dupq.models.cross import CROSS_DIR, CrossScorer, has_cross
from dupq.training import TrainConfig, prepare_data, split_by_labels

PAIRS_FILE = FIXTURES / "train" / "pairs.tsv"
DEV_FILE = FIXTURES / "train" / "dev.tsv"
PAIRS = read_pairs(PAIRS_FILE).pairs
DEV = read_pairs(DEV_FILE).pairs
SMALL_BANK = FIXTURES / "small_bank.jsonl"
#: Duplicates with no labelled negative (like QQP's paraphrase sources): they go to the ranking loss.
POSITIVE_ONLY = [Pair(p.question1 + " please", p.question2 + " now", 1) for p in PAIRS if p.label][:12]
TINY = {"max_steps": 2, "batch_size": 8, "eval_steps": 2}


# --- routing -------------------------------------------------------------------------------------------------


def test_read_pairs_by_source_and_split_by_labels(tmp_path: Path) -> None:
    f = tmp_path / "mixed.tsv"
    f.write_text(
        "source\tquestion1\tquestion2\tis_duplicate\n"
        "lab\tHow do I cook rice?\tBest way to cook rice?\t1\n"
        "lab\tHow do I cook rice?\tHow do I fix my car?\t0\n"
        "para\tWhat is Python?\tWhat's Python?\t1\n"
        "para\tWhat is Java?\tWhat's Java?\t1\n"
    )
    groups = read_pairs_by_source(f)
    assert {k: len(v) for k, v in groups.items()} == {"lab": 2, "para": 2}
    labelled, positive_only = split_by_labels(groups)
    assert {p.question1 for p in positive_only} == {"What is Python?", "What is Java?"}
    assert {p.label for p in labelled} == {0, 1}  # the labelled duplicate stays with its negatives
    no_source = read_pairs_by_source(PAIRS_FILE)
    assert list(no_source) == ["pairs.tsv"] and len(no_source["pairs.tsv"]) == len(PAIRS)


def test_prepare_data_routes_labelled_and_positive_only_pairs() -> None:
    data = prepare_data(PAIRS, DEV, TrainConfig(), positive_only=POSITIVE_ONLY)
    keys = {(p.question1, p.question2) for p in POSITIVE_ONLY}
    assert {(p.question1, p.question2) for p in data.ranking} == keys
    assert not keys & {(p.question1, p.question2) for p in data.train}
    assert data.labelled == data.train and {p.label for p in data.train} == {0, 1}
    assert data.counts["ranking_pairs"] == len(POSITIVE_ONLY) == data.counts["positive_only_used"]
    capped = prepare_data(PAIRS, DEV, TrainConfig(max_positive_only=5), positive_only=POSITIVE_ONLY)
    assert len(capped.ranking) == 5 and capped.counts["positive_only_pairs"] == len(POSITIVE_ONLY)
    old = prepare_data(PAIRS, DEV, TrainConfig(ranking_loss="none"), positive_only=POSITIVE_ONLY)
    assert not old.ranking and len(old.train) == len(PAIRS) + len(POSITIVE_ONLY)  # the contrastive loss gets them


def test_config_recipe_fields_validated() -> None:
    c = TrainConfig()
    assert (c.loss, c.margin, c.learning_rate, c.ranking_loss, c.max_positive_only, c.negatives_per_positive,
            c.base_weight, c.cross_encoder) == ("online-contrastive", 0.5, 5e-5, "gist", 10_000, 0.0, None, None)
    assert TrainConfig(loss="contrastive").margin == 0.7
    for bad, message in [({"ranking_loss": "triplet"}, "ranking_loss must be one of"),
                         ({"cross_encoder": 1}, "cross_encoder must be true or false"),
                         ({"max_positive_only": -1}, "max_positive_only must be an integer >= 0"),
                         ({"cross_max_steps": 0}, "cross_max_steps must be an integer >= 1"),
                         ({"cross_learning_rate": 0}, "cross_learning_rate must be > 0")]:
        with pytest.raises(ValueError, match=message):
            TrainConfig(**bad)
    assert TrainConfig.from_dict(TrainConfig(ranking_loss="mnrl").to_dict()).ranking_loss == "mnrl"


def test_train_sends_each_dataset_to_its_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sentence_transformers
    from sentence_transformers.sentence_transformer.losses import GISTEmbedLoss, OnlineContrastiveLoss

    from dupq.models.encoder import packaged_model_path
    from dupq.training import train

    seen: dict[str, Any] = {}
    real = sentence_transformers.SentenceTransformerTrainer

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            seen.update(train_dataset=kwargs["train_dataset"], loss=kwargs["loss"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformerTrainer", Spy)
    out = tmp_path / "v"
    train(PAIRS, TrainConfig(cross_encoder=False, **TINY), start=packaged_model_path(), output_dir=out,
          dev_pairs=DEV, positive_only=POSITIVE_ONLY, show_progress_bar=False)
    assert set(seen["train_dataset"]) == set(seen["loss"]) == {"labelled", "positive_only"}
    assert isinstance(seen["loss"]["labelled"], OnlineContrastiveLoss)
    assert isinstance(seen["loss"]["positive_only"], GISTEmbedLoss)
    assert seen["train_dataset"]["positive_only"].column_names == ["anchor", "positive"]
    assert len(seen["train_dataset"]["positive_only"]) == len(POSITIVE_ONLY)
    assert sorted(set(seen["train_dataset"]["labelled"]["label"])) == [0, 1]
    meta = json.loads((out / "dupq.json").read_text())
    assert meta["ranking_loss"] == "gist" and meta["cross"] is None and not has_cross(out)


# --- a trained home with a cross-encoder ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from dupq.service import DupQ

    home = tmp_path_factory.mktemp("recipe") / "home"
    settings = Settings(home=home, seed_bank=str(SMALL_BANK))
    with DupQ(settings) as svc:
        new = svc.train_version(PAIRS, TrainConfig(**TINY, silver_pairs=10, cross_encoder=True), dev_pairs=DEV,
                                positive_only=POSITIVE_ONLY, show_progress_bar=False)
        svc.promote(new.version)
    return {"home": home, "version": new.version, "result": new.result}


def test_cross_encoder_saved_inside_the_version_and_loads(trained: dict[str, Any]) -> None:
    folder = trained["home"] / "models" / trained["version"]
    assert has_cross(folder)
    meta = json.loads((folder / "dupq.json").read_text())
    assert set(meta["cross"]) >= {"threshold", "metrics", "seconds"}
    assert 0 <= meta["cross"]["metrics"]["dev"]["pairs"]["ap"] <= 1
    assert trained["result"].cross["threshold"] == meta["cross"]["threshold"]
    # The re-ranking fusion (twin score + cross-encoder logit), fit on dev: in dupq.json and in cross.json.
    fusion = meta["cross"]["fusion"]
    assert 0 < fusion["threshold"] < 1 and fusion["metrics"]["n"] == meta["data"]["dev_pairs"]
    assert set(fusion["metrics"]) >= {"fused", "twin", "cross"}
    assert json.loads((folder / CROSS_DIR / "cross.json").read_text())["fusion"] == fusion
    assert set(meta["phase_seconds"]) >= {"cross_encoder", "silver", "twin", "total"}
    # Augmented SBERT: the cross-encoder labelled near-neighbour pairs for the contrastive loss.
    assert 0 < meta["data"]["silver_pairs"] <= 10
    assert meta["data"]["silver_duplicates"] <= meta["data"]["silver_pairs"]
    pairs = [(p.question1, p.question2) for p in DEV]
    ref = CrossScorer.load(folder / CROSS_DIR, backend="torch")
    fast = CrossScorer.load(folder / CROSS_DIR, backend="openvino")
    assert ref.threshold == pytest.approx(meta["cross"]["threshold"])
    np.testing.assert_allclose(fast.score(pairs), ref.score(pairs), atol=0.01)  # bf16 OpenVINO vs fp32 torch
    assert (folder / CROSS_DIR / "openvino" / "model.xml").is_file()  # the export is cached in the version


def test_reranked_search_orders_by_the_cross_encoder(trained: dict[str, Any]) -> None:
    from dupq.service import DupQ

    with DupQ(Settings(home=trained["home"], seed_bank=str(SMALL_BANK), rerank_top_n=8)) as svc:
        assert svc.serving.cross is not None  # loaded (and warmed up) with the serving version
        q = "How do I reverse a list in Python?"
        plain = svc.search(q, k=3)
        assert plain["scorer"] == "twin" and all("twin_score" not in r for r in plain["results"])
        res = svc.search(q, k=3, rerank=True)
        cross = svc.serving.cross
        assert cross.fusion is not None and res["scorer"] == "cross-encoder+twin"
        assert res["threshold"] == cross.fusion.threshold
        candidates = svc.search(q, k=8)["results"]  # the twin's top rerank_top_n
        logits = cross.logits([(q, r["text"]) for r in candidates])
        scores = cross.fusion.score([r["score"] for r in candidates], logits)
        assert [r["twin_score"] for r in res["results"]] == [
            candidates[i]["score"] for i in np.argsort(-scores, kind="stable")[:3]]
        expected = [candidates[i]["id"] for i in np.argsort(-scores, kind="stable")[:3]]
        assert [r["id"] for r in res["results"]] == expected
        for r in res["results"]:
            assert r["duplicate"] == (r["score"] >= res["threshold"]) and "twin_score" in r
        with pytest.raises(ValidationError, match="rerank must be true or false"):
            svc.search(q, k=3, rerank="yes")
    with DupQ(Settings(home=trained["home"], seed_bank=str(SMALL_BANK), rerank=True)) as svc:
        assert svc.search(q, k=2)["scorer"] == "cross-encoder+twin"  # the setting is the default
        assert svc.search(q, k=2, rerank=False)["scorer"] == "twin"


def test_reranked_search_answers_each_cluster_once(trained: dict[str, Any]) -> None:
    """Re-ranking scores every hit of the candidate clusters; a cluster answers once, as its canonical question,
    with its best re-ranking score, its matched duplicates attached with their own (issue 25)."""
    from dupq.service import DupQ

    with DupQ(Settings(home=trained["home"], seed_bank=str(SMALL_BANK), rerank_top_n=8)) as svc:
        q = "How do I reverse a list in Python?"
        cross = svc.serving.cross
        hits = svc.search(q, k=8)["results"]  # the whole small bank, not collapsed yet
        scores = dict(zip([h["id"] for h in hits], cross.rerank([(q, h["text"]) for h in hits],
                                                                [h["score"] for h in hits]), strict=True))
        twin = {h["id"]: h["score"] for h in hits}
        svc.close_as_duplicate("py-rev-1", "lx-disk-1")  # the exact match, closed onto an unrelated question
        try:
            res = svc.search(q, k=8, rerank=True)["results"]
        finally:
            svc.reopen("py-rev-1")
        ids = [r["id"] for r in res]
        assert "py-rev-1" not in ids and len(ids) == len(set(ids)) == 7
        disk = next(r for r in res if r["id"] == "lx-disk-1")
        assert [d["id"] for d in disk["duplicates"]] == ["py-rev-1"]
        assert disk["duplicates"][0]["score"] == pytest.approx(scores["py-rev-1"], abs=1e-5)
        best = max(("py-rev-1", "lx-disk-1"), key=lambda i: scores[i])
        assert disk["score"] == pytest.approx(scores[best], abs=1e-5)
        assert disk["twin_score"] == pytest.approx(twin[best], abs=1e-5)
        assert [r["score"] for r in res] == sorted((r["score"] for r in res), reverse=True)


def test_rerank_through_the_api(trained: dict[str, Any]) -> None:
    from web import create_app

    app = create_app({"TESTING": True, "home": str(trained["home"]), "seed_bank": str(SMALL_BANK)})
    try:
        client = app.test_client()
        r = client.post("/api/v1/search", json={"question": "How do I reverse a list in Python?", "k": 3,
                                                 "rerank": True})
        assert r.status_code == 200, r.get_json()
        body = r.get_json()
        assert body["scorer"] == "cross-encoder+twin" and len(body["results"]) == 3
        assert all("twin_score" in x for x in body["results"])
        bad = client.post("/api/v1/search", json={"question": "x?", "rerank": 1})
        assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_type"
        spec = client.get("/api/v1/openapi.json").get_json()
        assert "rerank" in spec["components"]["schemas"]["SearchRequest"]["properties"]
    finally:
        app.extensions["dupq"].close()


def test_version_without_cross_encoder_answers_rerank_with_409(client) -> None:
    r = client.post("/api/v1/search", json={"question": "How do I reverse a list in Python?", "rerank": True})
    assert r.status_code == 409
    assert r.get_json()["error"]["code"] == "no_cross_encoder"
    assert client.post("/api/v1/search", json={"question": "How do I reverse a list?"}).get_json()["scorer"] == "twin"


def test_service_rerank_on_base_raises_conflict(svc) -> None:
    with pytest.raises(ConflictError, match="no cross-encoder"):
        svc.search("How do I reverse a list in Python?", rerank=True)


def test_eval_rerank_json_shape(trained: dict[str, Any]) -> None:
    from click.testing import CliRunner

    from dupq.cli import main

    runner = CliRunner(env={"DUPQ_HOME": str(trained["home"]), "DUPQ_SEED_BANK": str(SMALL_BANK)})
    r = runner.invoke(main, ["eval", str(DEV_FILE), "--rerank", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    res = out["results"][trained["version"]]
    assert res["scorer"] == "cross-encoder+twin" and 0 <= res["pairs"]["ap"] <= 1
    meta = json.loads((trained["home"] / "models" / trained["version"] / "dupq.json").read_text())
    assert res["pairs"]["threshold"] == pytest.approx(meta["cross"]["fusion"]["threshold"])
    # The same fused dev AP as training measured (training scored with torch; eval here with OpenVINO bf16).
    assert res["pairs"]["ap"] == pytest.approx(meta["cross"]["fusion"]["metrics"]["fused"]["ap"], abs=0.1)


def test_a_version_without_fusion_reranks_by_the_cross_encoder_alone(trained: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    from dupq.service import DupQ

    home = tmp_path / "home"
    shutil.copytree(trained["home"], home)
    cross_json = home / "models" / trained["version"] / CROSS_DIR / "cross.json"
    meta = json.loads(cross_json.read_text())
    del meta["fusion"]  # a version trained before the fusion existed
    cross_json.write_text(json.dumps(meta))
    with DupQ(Settings(home=home, seed_bank=str(SMALL_BANK))) as svc:
        res = svc.search("How do I reverse a list in Python?", k=3, rerank=True)
        assert res["scorer"] == "cross-encoder" and res["threshold"] == svc.serving.cross.threshold


def test_eval_rerank_needs_a_cross_encoder(runner) -> None:
    from dupq.cli import main

    r = runner.invoke(main, ["eval", str(DEV_FILE), "--rerank", "--json"])
    assert r.exit_code != 0 and "no cross-encoder" in r.output


def test_train_from_a_sentence_transformer_folder(runner, tmp_path: Path, home: Path) -> None:
    from dupq.cli import main
    from dupq.models.encoder import load_sentence_transformer, packaged_model_path

    folder = tmp_path / "my-st"
    load_sentence_transformer(packaged_model_path()).save(str(folder))
    both = runner.invoke(main, ["train", str(PAIRS_FILE), "--base", str(folder), "--from", "base"])
    assert both.exit_code != 0 and "not both" in both.output
    r = runner.invoke(main, ["train", str(PAIRS_FILE), "--dev", str(DEV_FILE), "--base", str(folder),
                             "--max-steps", "2", "--batch-size", "8", "--no-cross-encoder", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert f"from {folder}" in r.output and "cross-encoder: not trained" in r.output
    version = next(d for d in (home / "models").iterdir() if d.name != "base")
    meta = json.loads((version / "dupq.json").read_text())
    assert meta["base_model"] == str(folder) and meta["started_from"] == str(folder) and meta["parent"] is None


def test_rerank_settings() -> None:
    s = Settings.load(environ={"DUPQ_RERANK": "1", "DUPQ_RERANK_TOP_N": "30"})
    assert (s.rerank, s.rerank_top_n) == (True, 30)
    with pytest.raises(SettingsError, match="rerank_top_n"):
        Settings(rerank_top_n=0)
