"""Importing a community's export into the service (issue 25, Required 1): ``DupQ.import_export`` and ``dupq import``.

The fixtures under tests/fixtures/sources are read by :mod:`dupq.sources` (tests/unit/test_sources.py checks the
readers row by row); here they go through the real service and model, on both backends: questions stored with
their stable ids and meta, duplicate links stored as labelled pairs, re-imports that add and change nothing, and
an export that breaks off leaving nothing half-imported.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from support import FIXTURES

from dupq.cli import main
from dupq.data import DataError
from dupq.service import DupQ

BOTH_BACKENDS = True

SOURCES = FIXTURES / "sources"
SE = SOURCES / "askubuntu.com"
GH_JSON = SOURCES / "github_issues.json"
GH_JSONL = SOURCES / "github_issues.jsonl"
REPO = "octo-org/widgets"
SE_IDS = [1, 2, 5, 6, 7, 12, 13, 14, 17, 18, 19, 20, 23, 24, 26, 30]
GH_NUMBERS = [1, 3, 4, 5, 6, 8, 9, 10, 11, 13]


def snapshot(svc: DupQ) -> tuple:
    """Everything an import may write: the questions (with meta and dates), the pairs and the store revision."""
    questions = svc.store.list(0, 10_000)
    return [q.to_dict() for q in questions], [p.to_dict() for p in svc.store.pairs()], svc.store.revision()


def pairs_of(svc: DupQ, source: str) -> set[tuple[str, str, int]]:
    return {(p.question1, p.question2, p.label) for p in svc.store.pairs() if p.source == source}


def test_stackexchange_folder_ids_texts_meta_pairs(svc: DupQ) -> None:
    before = svc.count()
    report = svc.import_export(SE).to_dict()
    assert report["added"] == 16 and report["existing"] == 0 and report["questions"] == 16
    assert report["malformed"] == 9 and "Posts.xml:11: missing Title" in report["malformed_samples"]
    assert report["links"] == 3 and report["pairs_added"] == 3 and report["links_missing"] == 2
    assert report["missing_samples"][0] == ["askubuntu.com:14", "askubuntu.com:999"]
    assert svc.count() == before + 16
    assert len(svc.serving.index) == svc.count()  # encoded and indexed as they were stored
    stored = svc.store.get_many([f"askubuntu.com:{i}" for i in SE_IDS])
    assert len(stored) == 16
    q1 = stored["askubuntu.com:1"]
    assert q1.text == "How do I connect to Wi-Fi from the terminal?"
    assert q1.meta == {
        "source": "import",
        "site": "askubuntu.com",
        "tags": ["wifi", "networking"],
        "url": "https://askubuntu.com/questions/1",
        "created": "2010-07-28T19:04:21.300",
        "body": "I'm on a server without a desktop & need to join a WPA2 network. nmcli dev wifi list "
        "Is nmcli the right tool?",
        "score": 22,
        "closed": None,
    }
    assert stored["askubuntu.com:2"].meta["tags"] == ["apt", "package-management"]  # the |a|b| syntax
    assert stored["askubuntu.com:24"].text == "Как обновить ядро Linux?"
    text = {qid.split(":")[1]: q.text for qid, q in stored.items()}
    assert pairs_of(svc, "stackexchange") == {
        (text["5"], text["1"], 1),
        (text["13"], text["12"], 1),
        (text["20"], text["19"], 1),
    }
    # Search finds an imported question from a paraphrase.
    hits = svc.search("How can I join a wifi network using the command line?", k=3)["results"]
    assert hits[0]["id"] in {"askubuntu.com:1", "askubuntu.com:5"}


def test_a_second_import_adds_nothing_and_changes_nothing(svc: DupQ) -> None:
    svc.import_export(SE)
    first = snapshot(svc)
    again = svc.import_export(SE).to_dict()
    assert again["added"] == 0 and again["existing"] == 16 and again["same_text"] == 0
    assert again["pairs_added"] == 0 and again["pairs_existing"] == 3
    assert snapshot(svc) == first


def test_a_newer_dump_adds_only_what_is_new(svc: DupQ, tmp_path) -> None:
    svc.import_export(SE)
    first = {q["id"]: q for q in snapshot(svc)[0]}
    newer = tmp_path / "askubuntu.com"
    shutil.copytree(SE, newer)
    posts = (newer / "Posts.xml").read_text(encoding="utf-8")
    edited = 'Title="Wi-Fi from a terminal (edited)"'
    posts = posts.replace('Title="How do I connect to Wi-Fi from the terminal?"', edited)
    row = ('  <row Id="40" PostTypeId="1" CreationDate="2020-01-01T00:00:00.000" Score="1" '
           'Body="&lt;p&gt;Same again.&lt;/p&gt;" Title="Joining a WPA2 network with nmcli only" '
           'Tags="&lt;wifi&gt;" />\n')
    (newer / "Posts.xml").write_text(posts.replace("</posts>", row + "</posts>"), encoding="utf-8")
    links = (newer / "PostLinks.xml").read_text(encoding="utf-8")
    link = '  <row Id="90" CreationDate="2020-01-02T00:00:00.000" PostId="40" RelatedPostId="1" LinkTypeId="3" />\n'
    (newer / "PostLinks.xml").write_text(links.replace("</postlinks>", link + "</postlinks>"), encoding="utf-8")
    report = svc.import_export(newer).to_dict()
    assert report["added"] == 1 and report["existing"] == 16
    assert report["pairs_added"] == 1 and report["pairs_existing"] == 3
    now = {q["id"]: q for q in snapshot(svc)[0]}
    assert {i: now[i] for i in first} == first  # question 1 keeps its stored text: nothing else changed
    assert now["askubuntu.com:40"]["meta"]["tags"] == ["wifi"]
    assert ("Joining a WPA2 network with nmcli only", first["askubuntu.com:1"]["text"], 1) in pairs_of(
        svc, "stackexchange"
    )


@pytest.mark.parametrize("path", [GH_JSON, GH_JSONL], ids=["array", "lines"])
def test_github_issues(svc: DupQ, path) -> None:
    report = svc.import_export(path).to_dict()
    assert report["format"] == "github" and report["added"] == 10 and report["pull_requests"] == 1
    assert report["pairs_added"] == 3 and report["links_missing"] == 2 and report["duplicates_unnamed"] == 2
    stored = svc.store.get_many([f"{REPO}#{n}" for n in GH_NUMBERS])
    assert len(stored) == 10 and f"{REPO}#2" not in svc.store.get_many([f"{REPO}#2"])  # the pull request
    assert stored[f"{REPO}#1"].meta == {
        "source": "import",
        "site": REPO,
        "tags": ["bug"],
        "url": f"https://github.com/{REPO}/issues/1",
        "created": "2024-01-01T10:00:00Z",
        "body": "Öffnen von „Datei“ stürzt ab 🚀\n\nSteps: open `ü.txt`.",
        "state": "open",
    }
    assert (stored[f"{REPO}#3"].text, stored[f"{REPO}#1"].text, 1) in pairs_of(svc, "github")
    # The same issues in the other format: the same ids, so nothing new.
    other = GH_JSONL if path == GH_JSON else GH_JSON
    before = snapshot(svc)
    again = svc.import_export(other).to_dict()
    assert again["added"] == 0 and again["existing"] == 10 and again["pairs_added"] == 0
    assert snapshot(svc) == before


def test_a_json_array_that_breaks_off_imports_nothing(svc: DupQ, tmp_path) -> None:
    issues = [{"number": n, "title": f"Widget {n} fails to spin on startup", "html_url":
               f"https://github.com/{REPO}/issues/{n}"} for n in range(1, 6)]
    cut = tmp_path / "issues.json"
    cut.write_text(json.dumps(issues, indent=1)[:-40], encoding="utf-8")  # the last object breaks off
    before = snapshot(svc)
    with pytest.raises(DataError, match="issues.json:.*invalid JSON"):
        svc.import_export(cut)
    assert snapshot(svc) == before


def test_a_late_error_takes_back_what_the_import_stored(settings, monkeypatch) -> None:
    from dupq.sources.stackexchange import StackExchangeExport

    def broken(self):
        raise DataError(self.path / "PostLinks.xml", 1, "disk went away")

    monkeypatch.setattr(StackExchangeExport, "_resolve_links", broken)  # after every question was read
    with DupQ(dataclasses.replace(settings, import_batch_size=4)) as svc:  # 3 batches stored before the error
        before = snapshot(svc)
        with pytest.raises(DataError, match="disk went away"):
            svc.import_export(SE)
        assert snapshot(svc)[:2] == before[:2]
        assert len(svc.serving.index) == svc.count()
        assert all(not h["id"].startswith("askubuntu.com:") for h in svc.search("connect to wifi", k=5)["results"])


# --- the command line -----------------------------------------------------------------------------------------


def test_cli_imports_a_site_folder_twice(runner, settings) -> None:
    r = runner.invoke(main, ["import", str(SE), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "stackexchange export" in r.output and "added 16," in r.output
    assert "10 answers and other posts skipped" in r.output
    assert "malformed rows skipped: 9" in r.output and "Posts.xml:13: XML error" in r.output
    assert "duplicate links: 3 -> 3 labelled pairs added" in r.output
    assert "askubuntu.com:14 -> askubuntu.com:999" in r.output
    again = runner.invoke(main, ["import", str(SE), "--no-progress"])
    assert again.exit_code == 0, again.output
    assert "added 0, skipped 16 already stored" in again.output and "-> 0 labelled pairs added" in again.output
    s = runner.invoke(main, ["search", "Find which process listens on a port", "-k", "2", "--json"])
    assert s.exit_code == 0, s.output
    assert {h["id"] for h in json.loads(s.output)["results"]} & {"askubuntu.com:19", "askubuntu.com:20"}
    with DupQ(settings) as svc:
        assert len(pairs_of(svc, "stackexchange")) == 3


def test_cli_format_and_site_options(runner, settings, tmp_path) -> None:
    dump = tmp_path / "dump"
    shutil.copytree(SE, dump)
    r = runner.invoke(main, ["import", str(dump), "--site", "ubuntu.example", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "(ubuntu.example)" in r.output and "added 16," in r.output
    issues = tmp_path / "issues.txt"  # a name that does not say JSON: --format says it
    shutil.copy(GH_JSONL, issues)
    r = runner.invoke(main, ["import", str(issues), "--format", "github", "--site", "mirror/widgets", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "github export" in r.output and "added 10," in r.output and "1 pull requests skipped" in r.output
    with DupQ(settings) as svc:
        q = svc.get("ubuntu.example:1")
        assert q.meta["site"] == "ubuntu.example" and q.meta["url"] == "https://ubuntu.example/questions/1"
        assert svc.get("mirror/widgets#1").meta["site"] == "mirror/widgets"


def test_cli_errors_are_one_line(runner, tmp_path) -> None:
    empty = tmp_path / "not-a-dump"
    empty.mkdir()
    r = runner.invoke(main, ["import", str(empty), "--no-progress"])
    assert r.exit_code != 0 and "Posts.xml" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["import", str(GH_JSON), "--format", "stackexchange", "--no-progress"])
    assert r.exit_code != 0 and "no Posts.xml" in r.output
    plain = tmp_path / "q.txt"
    plain.write_text("How do I bake sourdough bread?\n", encoding="utf-8")
    r = runner.invoke(main, ["import", str(plain), "--site", "x.example"])
    assert r.exit_code == 2 and "--site applies to an export" in r.output
    r = runner.invoke(main, ["import", str(plain), "--no-progress"])  # a question file: as before
    assert r.exit_code == 0 and "read 1, added 1," in r.output
