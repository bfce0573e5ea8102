"""Plots (matplotlib SVG): the functions, the version metadata they read, the admin images, ``eval --report``."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from support import AUTH, FIXTURES, tiny_version

from dupq.evaluation import plots
from dupq.models.encoder import SiameseEncoder


def _svg_text(svg: str) -> str:
    return " ".join(re.findall(r">([^<>]+)<", svg))


def test_pr_curve_marks_the_served_threshold() -> None:
    svg = plots.pr_curve([0.9, 0.8, 0.7, 0.3, 0.2, 0.6], [1, 1, 0, 1, 0, 0], threshold=0.65)
    assert "<svg" in svg and "served threshold 0.650: P 0.67, R 0.67" in _svg_text(svg)
    empty = plots.pr_curve([], [], threshold=None)
    assert "needs scored pairs of both labels" in _svg_text(empty)


def test_histograms_and_version_bars() -> None:
    svg = plots.score_histograms([0.9, 0.8, 0.3, 0.2], [1, 1, 0, 0], threshold=0.5)
    text = _svg_text(svg)
    assert "duplicates (2)" in text and "non-duplicates (2)" in text and "threshold 0.500" in text
    rows = plots.version_rows([{"version": "v1", "current": True, "metrics": {"dev": {"pairs": {"ap": 0.8},
                                                                                       "retrieval": {}}}},
                               {"version": "base", "metrics": {}}])
    assert rows == [("v1 (current)", {"dev AP": 0.8, "best F1": None, "nDCG@10": None})]
    assert "0.800" in _svg_text(plots.version_comparison(rows))


def test_a_trained_version_keeps_its_loss_history_and_a_dev_score_sample(svc) -> None:
    name = tiny_version.install(svc)
    meta = SiameseEncoder.read_config(svc.registry.path(name))
    steps = [e["step"] for e in meta["loss_history"]]
    assert steps == sorted(steps) and steps[-1] == meta["steps"] and all(e["loss"] >= 0 for e in meta["loss_history"])
    dev = meta["dev_scores"]
    assert len(dev["scores"]) == len(dev["labels"]) == dev["of"] == meta["data"]["dev_pairs"]
    assert set(dev["labels"]) == {0, 1}
    assert name in _svg_text(plots.training_curves([(name, meta)]))


def test_admin_plot_images_need_sign_in_and_render(client) -> None:
    assert client.get("/admin/plots/pr.svg").status_code == 401
    tiny_version.install(client.application.extensions["dupq"])
    client.application.extensions["dupq"].import_pairs(FIXTURES / "train" / "dev.tsv")
    for name in ("training", "pr", "scores", "versions"):
        r = client.get(f"/admin/plots/{name}.svg", headers=AUTH)
        assert r.status_code == 200 and r.mimetype == "image/svg+xml" and b"<svg" in r.data, name
    assert "10 stored labelled pairs" in _svg_text(client.get("/admin/plots/pr.svg", headers=AUTH).get_data(True))
    assert client.get("/admin/plots/nope.svg", headers=AUTH).status_code == 404
    client.post("/admin/login", data={"token": "test-admin-token"})
    html = client.get("/admin/").get_data(as_text=True)
    assert html.count('src="/admin/plots/') == 4


def test_eval_report_writes_the_plots(runner, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    r = runner.invoke(__import__("dupq.cli", fromlist=["main"]).main,
                      ["eval", str(FIXTURES / "train" / "dev.tsv"), "--report", str(out)])
    assert r.exit_code == 0, r.output
    html = out.read_text()
    imgs = re.findall(r'<img src="data:image/svg\+xml;base64,([^"]+)" alt="([^"]+)"', html)
    assert [alt.split(" ")[0] for _, alt in imgs] == ["Precision–recall", "Scores", "Models", "Training", "Version"]
    pr = base64.b64decode(imgs[0][0]).decode()
    assert "served threshold 0.751" in _svg_text(pr)
    assert "AP" in html and "<script" not in html
