"""Tests for dupq.sources: a Stack Exchange dump folder and GitHub issues, read as published (issue 25, Required 1).

The fixtures under tests/fixtures/sources are in each real format: ``askubuntu.com/`` is a site folder (Posts.xml
with questions, answers, a tag wiki, both tag syntaxes, HTML entities, non-ASCII text and broken rows;
PostLinks.xml with duplicate and plain links, a repeat, links to a missing post and to an answer), and
``github_issues.json`` / ``.jsonl`` are issue lists as the REST API returns them (a pull request, duplicates by
``state_reason`` and by label, unnamed and cross-repository duplicates, non-ASCII text, bad objects).
"""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import pytest
from support import FIXTURES

from dupq.data import DataError, QuestionRecord
from dupq.sources import (
    DuplicateLink,
    GitHubExport,
    StackExchangeExport,
    detect,
    read_export,
)
from dupq.sources.github import JsonItems, duplicate_target
from dupq.sources.stackexchange import XmlRows, html_to_text, parse_tags

SOURCES = FIXTURES / "sources"
SE = SOURCES / "askubuntu.com"
GH_JSON = SOURCES / "github_issues.json"
GH_JSONL = SOURCES / "github_issues.jsonl"
REPO = "octo-org/widgets"


def read_all(path: Path, **kwargs) -> tuple[list[QuestionRecord], list[DuplicateLink], dict]:
    export = read_export(path, **kwargs)
    questions = list(export.questions())
    return questions, export.links(), export.report.to_dict()


# --- detection and opening -----------------------------------------------------------------------------------


def test_detect_knows_each_format_and_nothing_else(tmp_path):
    assert detect(SE) == "stackexchange"
    assert detect(SE / "Posts.xml") == "stackexchange"
    assert detect(GH_JSON) == "github"
    assert detect(GH_JSONL) == "github"
    assert detect(FIXTURES / "questions.jsonl") is None  # a plain question file
    assert detect(FIXTURES / "questions.tsv") is None
    assert detect(tmp_path) is None  # a folder without Posts.xml
    (tmp_path / "empty.json").write_text("", encoding="utf-8")
    (tmp_path / "junk.json").write_text("not json at all", encoding="utf-8")
    (tmp_path / "bad.jsonl").write_text('{"number": 1, "title": \n{"number": 2, "title": "x"}\n', encoding="utf-8")
    assert detect(tmp_path / "empty.json") is None
    assert detect(tmp_path / "junk.json") is None
    assert detect(tmp_path / "bad.jsonl") is None  # only the first object is looked at


def test_read_export_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        read_export(tmp_path / "missing")
    with pytest.raises(DataError, match="not a known export"):
        read_export(FIXTURES / "questions.jsonl")
    with pytest.raises(DataError, match="unknown export format 'csv'"):
        read_export(SE, fmt="csv")
    with pytest.raises(DataError, match="no Posts.xml"):
        read_export(tmp_path, fmt="stackexchange")
    with pytest.raises(DataError, match="invalid question ids"):
        read_export(SE, site="ask ubuntu")
    folder = tmp_path / "my dump"  # a folder name with a space cannot be the site
    shutil.copytree(SE, folder)
    with pytest.raises(DataError, match="pass --site"):
        read_export(folder)


def test_an_export_is_read_once_and_links_come_after_the_questions():
    export = read_export(SE)
    with pytest.raises(RuntimeError, match="exhaust|read export.questions"):
        export.links()
    questions = export.questions()
    next(questions)
    with pytest.raises(RuntimeError, match="exhaust|read export.questions"):
        export.links()
    with pytest.raises(RuntimeError, match="read once"):
        export.questions()
    rest = list(questions)
    assert len(rest) == 15 and len(export.links()) == 3


# --- Stack Exchange ------------------------------------------------------------------------------------------

SE_IDS = [1, 2, 5, 6, 7, 12, 13, 14, 17, 18, 19, 20, 23, 24, 26, 30]


def test_stackexchange_questions_ids_and_text():
    questions, _, _ = read_all(SE)
    assert [q.id for q in questions] == [f"askubuntu.com:{i}" for i in SE_IDS]
    text = {q.id: q.text for q in questions}
    assert text["askubuntu.com:2"] == "Why can't I install packages with apt-get?"
    assert text["askubuntu.com:6"] == "Wie ändere ich die Tastaturbelegung auf Deutsch?"
    assert text["askubuntu.com:17"] == "How to mount a USB drive?"  # whitespace and &#xA; collapsed
    assert text["askubuntu.com:23"] == "Comment réinstaller GRUB après l’installation de Windows ?"
    assert text["askubuntu.com:24"] == "Как обновить ядро Linux?"


def test_stackexchange_meta_exactly():
    questions, _, _ = read_all(SE)
    meta = {q.id: q.meta for q in questions}
    assert meta["askubuntu.com:1"] == {
        "site": "askubuntu.com",
        "tags": ["wifi", "networking"],
        "url": "https://askubuntu.com/questions/1",
        "created": "2010-07-28T19:04:21.300",
        "body": "I'm on a server without a desktop & need to join a WPA2 network. nmcli dev wifi list "
        "Is nmcli the right tool?",
        "score": 22,
        "closed": None,
    }
    assert meta["askubuntu.com:2"]["tags"] == ["apt", "package-management"]  # the |a|b| syntax
    assert (
        meta["askubuntu.com:2"]["body"]
        == 'Running sudo apt-get install vlc gives "E: Unable to locate package"… What\'s wrong?'
    )
    assert meta["askubuntu.com:5"]["closed"] == "2012-03-01T09:30:00.000"
    assert meta["askubuntu.com:5"]["body"] == "How can I connect to wifi without NetworkManager’s GUI?"
    assert meta["askubuntu.com:6"]["body"] == "Ich möchte Umlaute (äöü, ß) tippen — und 日本語 auch."
    assert (
        meta["askubuntu.com:7"]["body"]
        == "After the update I get a black screen — only Ctrl+Alt+F2 works. Ubuntu 22.04 GRUB 2"
    )
    assert meta["askubuntu.com:12"]["body"] == "Both give root… which should I use?"  # a comment holding ">" removed
    assert meta["askubuntu.com:13"]["score"] == -2
    assert meta["askubuntu.com:17"]["body"] == "It is not automounted."  # inline tags join, block tags separate
    assert meta["askubuntu.com:20"]["body"] == "Something listens on 8080 > how do I find it?"
    assert meta["askubuntu.com:23"]["body"] == "Windows a écrasé le chargeur de démarrage."


def test_stackexchange_links_and_counts():
    _, links, report = read_all(SE)
    assert links == [
        DuplicateLink("askubuntu.com:5", "askubuntu.com:1"),  # listed twice in PostLinks.xml: once here
        DuplicateLink("askubuntu.com:13", "askubuntu.com:12"),
        DuplicateLink("askubuntu.com:20", "askubuntu.com:19"),
    ]
    assert report["questions"] == 16
    assert report["other_posts"] == 10  # 9 answers and a tag wiki
    assert report["links"] == 3
    assert report["links_missing"] == 2
    assert report["missing_samples"] == [
        ["askubuntu.com:14", "askubuntu.com:999"],  # not in the dump
        ["askubuntu.com:18", "askubuntu.com:15"],  # an answer, not a question
    ]
    assert report["malformed"] == 9
    assert report["malformed_samples"] == [
        "PostLinks.xml:9: bad PostId 'abc': expected a positive integer",
        "PostLinks.xml:11: a post linked as a duplicate of itself",
        "Posts.xml:11: missing Title",
        "Posts.xml:12: bad Score 'abc': expected an integer",
        "Posts.xml:13: XML error: not well-formed (invalid token)",
        "Posts.xml:27: Title must not be empty",
        "Posts.xml:31: bad Id 'x29': expected a positive integer",
        "Posts.xml:33: bad CreationDate 'yesterday': expected an ISO 8601 date",
        "Posts.xml:35: missing PostTypeId",
    ]


def test_stackexchange_site_option_and_posts_file_path():
    questions, links, report = read_all(SE / "Posts.xml", site="ubuntu.example")
    assert questions[0].id == "ubuntu.example:1"
    assert questions[0].meta["site"] == "ubuntu.example"
    assert questions[0].meta["url"] == "https://ubuntu.example/questions/1"
    assert links[0] == DuplicateLink("ubuntu.example:5", "ubuntu.example:1")
    assert report["site"] == "ubuntu.example"


def test_stackexchange_reimport_is_identical():
    first, links1, report1 = read_all(SE)
    second, links2, report2 = read_all(SE)
    assert first == second and links1 == links2 and report1 == report2


def test_stackexchange_without_postlinks(tmp_path):
    folder = tmp_path / "askubuntu.com"
    folder.mkdir()
    shutil.copy(SE / "Posts.xml", folder)
    questions, links, report = read_all(folder)
    assert len(questions) == 16 and links == [] and report["links_missing"] == 0 and report["malformed"] == 7


def test_stackexchange_post_history_adds_closes_and_drops_reopened(tmp_path):
    folder = tmp_path / "askubuntu.com"
    shutil.copytree(SE, folder)
    rows = [
        # 20 was closed as a duplicate of 19 (PostLinks has it) and reopened later: its link goes.
        '<row Id="1" PostHistoryTypeId="10" PostId="20" CreationDate="2016-03-03T00:00:00.000" Comment="101" '
        'Text="{&quot;OriginalQuestionIds&quot;:[19],&quot;Voters&quot;:[]}" />',
        '<row Id="2" PostHistoryTypeId="11" PostId="20" CreationDate="2016-04-01T00:00:00.000" />',
        # 26 closed as a duplicate of 1 only in the history (the old reason code 1): its link is added.
        '<row Id="3" PostHistoryTypeId="10" PostId="26" CreationDate="2017-05-01T00:00:00.000" Comment="1" '
        'Text="{&quot;OriginalQuestionIds&quot;:[1]}" />',
        # 30 closed for another reason (off-topic): no link.
        '<row Id="4" PostHistoryTypeId="10" PostId="30" CreationDate="2018-02-01T00:00:00.000" Comment="102" />',
        # An edit of a body: not a close event.
        '<row Id="5" PostHistoryTypeId="5" PostId="1" CreationDate="2018-03-01T00:00:00.000" Text="new body" />',
        # A duplicate close whose Text is not JSON: counted.
        '<row Id="6" PostHistoryTypeId="10" PostId="24" CreationDate="2018-04-01T00:00:00.000" Comment="101" '
        'Text="oops" />',
    ]
    (folder / "PostHistory.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<posthistory>\n  ' + "\n  ".join(rows) + "\n</posthistory>\n",
        encoding="utf-8",
    )
    _, links, report = read_all(folder)
    assert links == [
        DuplicateLink("askubuntu.com:5", "askubuntu.com:1"),
        DuplicateLink("askubuntu.com:13", "askubuntu.com:12"),
        DuplicateLink("askubuntu.com:26", "askubuntu.com:1"),
    ]
    assert report["links_reopened"] == 1
    assert report["links_missing"] == 2
    assert (
        "PostHistory.xml:8: bad Text of a duplicate close: expected JSON with OriginalQuestionIds"
        in (report["malformed_samples"])
    )


def test_a_truncated_posts_file_keeps_every_complete_row(tmp_path):
    folder = tmp_path / "askubuntu.com"
    folder.mkdir()
    data = (SE / "Posts.xml").read_bytes()
    cut = data.index(b'<row Id="20"') + 40  # inside the row of question 20
    (folder / "Posts.xml").write_bytes(data[:cut])
    questions, _, report = read_all(folder)
    assert [q.id for q in questions][-1] == "askubuntu.com:19"
    assert report["malformed_samples"][-1] == "Posts.xml:22: XML error: unclosed token"


def test_a_file_that_is_not_xml_raises_with_its_line(tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "Posts.xml").write_text("Id,Title\n1,hello\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"Posts.xml:1: not a Stack Exchange dump file: XML error"):
        list(read_export(folder).questions())
    (folder / "Posts.xml").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="not a Stack Exchange dump file"):
        list(read_export(folder).questions())


def test_xml_rows_resume_after_each_broken_line(tmp_path):
    path = tmp_path / "Posts.xml"
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<posts>\n'
        '  <row Id="1" />\n'
        '  <row Id="2" Id="2" />\n'  # duplicate attribute
        '  <row Id="3" Title="a < b" />\n'  # "<" in an attribute
        '  <row Id="4" Title="caf\u00e9 &amp; cr\u00e8me" />\n'
        "  <row Id=5 />\n"  # unquoted attribute
        '  <row Id="6" />\n'
        "</posts>\n",
        encoding="utf-8",
    )
    errors: list[tuple[int, str]] = []
    rows = XmlRows(path, lambda line, reason: errors.append((line, reason)))
    assert [(line, row["Id"]) for line, row in rows] == [(3, "1"), (6, "4"), (8, "6")]
    assert [line for line, _ in errors] == [4, 5, 7]
    assert errors[0][1] == "XML error: duplicate attribute"
    assert rows.bytes_read == path.stat().st_size


@pytest.mark.parametrize("chunk", [1, 37, 4096])
def test_stackexchange_reads_the_same_in_any_block_size(monkeypatch, chunk):
    import dupq.sources.stackexchange as se

    expected = read_all(SE)
    monkeypatch.setattr(se, "_CHUNK", chunk)  # rows and errors straddle blocks; resuming seeks inside a block
    assert read_all(SE) == expected


def test_a_bom_and_windows_line_ends(tmp_path):
    folder = tmp_path / "site.example"
    folder.mkdir()
    rows = [
        '<?xml version="1.0" encoding="utf-8"?>',
        "<posts>",
        '  <row Id="1" PostTypeId="1" Title="First" />',
        '  <row Id="2" PostTypeId="1" Title="Broken" Title="twice" />',
        '  <row Id="3" PostTypeId="1" Title="Third \u00fc" />',
        "</posts>",
    ]
    (folder / "Posts.xml").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode("utf-8") + b"\r\n")
    questions, links, report = read_all(folder)
    assert [(q.id, q.text) for q in questions] == [("site.example:1", "First"), ("site.example:3", "Third ü")]
    assert questions[0].meta == {
        "site": "site.example",
        "tags": [],
        "url": "https://site.example/questions/1",
        "created": None,
        "body": "",
        "score": None,
        "closed": None,
    }
    assert links == [] and report["malformed_samples"] == ["Posts.xml:4: XML error: duplicate attribute"]


def test_html_to_text_and_tags():
    assert html_to_text("") == ""
    assert html_to_text("plain &amp; simple") == "plain & simple"
    assert html_to_text("<p>a</p><p>b</p>") == "a b"
    assert html_to_text("<p>x &lt;y&gt; z</p>") == "x <y> z"  # escaped brackets are text
    assert html_to_text('<a href="https://x.org/?a=1&amp;b=2">link</a>, <img src="i.png" alt="pic">done') == (
        "link, done"
    )
    assert html_to_text("2 < 3 and 5 > 4") == "2 < 3 and 5 > 4"  # a bare "<" is no tag
    assert parse_tags("<c++><c#>") == ["c++", "c#"]
    assert parse_tags("|c++|c#|") == ["c++", "c#"]
    assert parse_tags("") == []


def test_progress_bar_runs_to_the_end(capsys):
    export = read_export(SE, progress=True)
    assert export.size == (SE / "Posts.xml").stat().st_size + (SE / "PostLinks.xml").stat().st_size
    assert len(list(export.questions())) == 16
    assert export.bytes_read == export.size
    assert "reading askubuntu.com" in capsys.readouterr().err


# --- GitHub --------------------------------------------------------------------------------------------------

GH_NUMBERS = [1, 3, 4, 5, 6, 8, 9, 10, 11, 13]


@pytest.mark.parametrize("path", [GH_JSON, GH_JSONL], ids=["array", "lines"])
def test_github_questions_links_and_counts(path):
    questions, links, report = read_all(path)
    assert [q.id for q in questions] == [f"{REPO}#{n}" for n in GH_NUMBERS]
    text = {q.id: q.text for q in questions}
    assert text[f"{REPO}#9"] == "日本語のファイル名で保存できない"
    assert questions[0] == QuestionRecord(
        "Crash when opening a file with ü in its name",
        f"{REPO}#1",
        {
            "site": REPO,
            "tags": ["bug"],
            "url": f"https://github.com/{REPO}/issues/1",
            "created": "2024-01-01T10:00:00Z",
            "body": "Öffnen von „Datei“ stürzt ab 🚀\n\nSteps: open `ü.txt`.",
            "state": "open",
        },
    )
    meta = {q.id: q.meta for q in questions}
    assert meta[f"{REPO}#4"]["tags"] == ["enhancement"]  # labels given as strings
    assert meta[f"{REPO}#5"]["tags"] == ["Duplicate", "enhancement"]
    assert meta[f"{REPO}#9"]["body"] == ""  # null body
    assert meta[f"{REPO}#3"]["state"] == "closed"
    assert links == [
        DuplicateLink(f"{REPO}#3", f"{REPO}#1"),  # state_reason "duplicate", "Duplicate of #1"
        DuplicateLink(f"{REPO}#5", f"{REPO}#4"),  # label "Duplicate", "duplicate of owner/repo#4"
        DuplicateLink(f"{REPO}#13", f"{REPO}#8"),  # label, the URL
    ]
    assert report["pull_requests"] == 1
    assert report["links_missing"] == 2
    assert report["missing_samples"] == [[f"{REPO}#6", f"{REPO}#99"], [f"{REPO}#10", f"{REPO}#2"]]  # 2 is a PR
    assert report["duplicates_unnamed"] == 2  # #8 names nothing, #11 names another repository
    assert report["site"] is None


def test_github_malformed_objects_have_their_lines():
    _, _, report = read_all(GH_JSON)
    assert report["malformed_samples"] == [
        "github_issues.json:156: missing title",
        "github_issues.json:264: bad number '12': expected a positive integer",
    ]
    _, _, report = read_all(GH_JSONL)
    assert report["malformed_samples"] == [
        "github_issues.jsonl:5: invalid JSON: Unterminated string starting at",
        "github_issues.jsonl:9: missing title",
        "github_issues.jsonl:14: bad number '12': expected a positive integer",
    ]


def test_github_site_option_and_file_name_fallback(tmp_path):
    questions, links, _ = read_all(GH_JSON, site="mirror/widgets")
    assert questions[0].id == "mirror/widgets#1" and questions[0].meta["site"] == "mirror/widgets"
    assert questions[0].meta["url"] == f"https://github.com/{REPO}/issues/1"  # the URL stays the real one
    assert links[0] == DuplicateLink("mirror/widgets#3", "mirror/widgets#1")
    path = tmp_path / "widgets.jsonl"
    path.write_text(
        '{"number": 1, "title": "No URL here"}\n'
        '{"number": 2, "title": "Again no URL", "state_reason": "duplicate", "body": "Duplicate of #1"}\n',
        encoding="utf-8",
    )
    questions, links, _ = read_all(path)
    assert [q.id for q in questions] == ["widgets#1", "widgets#2"]
    assert questions[0].meta["url"] is None
    assert links == [DuplicateLink("widgets#2", "widgets#1")]


def test_github_paginated_arrays_and_bad_json(tmp_path):
    pages = tmp_path / "pages.json"
    page1 = [{"number": 1, "title": "One", "html_url": f"https://github.com/{REPO}/issues/1"}]
    page2 = [{"number": 2, "title": "Two", "html_url": f"https://github.com/{REPO}/issues/2"}]
    pages.write_text(json.dumps(page1) + "\n" + json.dumps(page2, indent=1) + "\n", encoding="utf-8")
    questions, _, _ = read_all(pages)
    assert [q.id for q in questions] == [f"{REPO}#1", f"{REPO}#2"]
    broken = tmp_path / "broken.json"
    broken.write_text('[\n{"number": 1, "title": "One"},\n{"number": 2, "title": }\n]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken.json:3: invalid JSON: Expecting value"):
        list(read_export(broken, fmt="github").questions())
    cut = tmp_path / "cut.json"
    cut.write_text('[\n{"number": 1, "title": "One"},\n{"number": 2, "ti', encoding="utf-8")
    with pytest.raises(DataError, match=r"cut.json:3: invalid JSON"):
        list(read_export(cut, fmt="github").questions())
    with pytest.raises(DataError, match="not a GitHub issues export"):
        list(read_export(FIXTURES / "questions.tsv", fmt="github").questions())


def test_json_items_across_block_boundaries(tmp_path, monkeypatch):
    import dupq.sources.github as gh

    monkeypatch.setattr(gh, "_CHUNK", 7)  # every item straddles blocks
    items = [{"number": i, "title": f"Title {i} ü", "body": "x" * (i * 5)} for i in range(1, 30)]
    path = tmp_path / "issues.json"
    path.write_text(json.dumps(items, ensure_ascii=False, indent=2), encoding="utf-8")
    got = list(JsonItems(path, lambda *e: pytest.fail(f"unexpected error {e}")))
    assert [obj for _, obj in got] == items
    text = path.read_text(encoding="utf-8").splitlines()
    assert all(text[line - 1].strip() == "{" for line, _ in got)  # each item's line is where it starts
    jsonl = tmp_path / "issues.jsonl"
    jsonl.write_text("\n".join(json.dumps(i) for i in items) + "\n", encoding="utf-8")
    assert [line for line, _ in JsonItems(jsonl, print)] == list(range(1, 30))


def test_duplicate_target_forms():
    assert duplicate_target("Duplicate of #12", REPO) == 12
    assert duplicate_target("DUPLICATE OF #12", REPO) == 12
    assert duplicate_target("Duplicate of: #12", REPO) == 12
    assert duplicate_target(f"duplicate of {REPO}#7", REPO) == 7
    assert duplicate_target(f"Duplicate of https://github.com/{REPO}/issues/8", REPO) == 8
    assert duplicate_target("Duplicate of other/repo#5", REPO) is None
    assert duplicate_target("See #12", REPO) is None
    assert duplicate_target(None, REPO) is None


def test_explicit_format_classes():
    assert isinstance(read_export(SE), StackExchangeExport)
    assert isinstance(read_export(GH_JSON), GitHubExport)
    assert isinstance(read_export(GH_JSONL, fmt="github"), GitHubExport)


# --- streaming ------------------------------------------------------------------------------------------------

_BODY = (
    "&lt;p&gt;I have a problem with my &lt;code&gt;wlan0&lt;/code&gt; interface after upgrading to 22.04 &amp;amp; "
    "rebooting. The driver loads but &lt;strong&gt;no networks&lt;/strong&gt; show up.&lt;/p&gt;&#xA;&#xA;"
    "&lt;pre&gt;&lt;code&gt;$ sudo lshw -C network&#xA;  *-network&#xA;       description: Wireless interface&#xA;"
    "&lt;/code&gt;&lt;/pre&gt;&#xA;&#xA;&lt;p&gt;What should I check next?&lt;/p&gt;&#xA;"
)


def write_big_posts(folder: Path, size: int) -> int:
    """A Posts.xml of at least ``size`` bytes (a question and an answer in turn); returns the questions written."""
    folder.mkdir()
    questions = 0
    with open(folder / "Posts.xml", "w", encoding="utf-8") as f:
        f.write('<?xml version="1.0" encoding="utf-8"?>\n<posts>\n')
        post = 0
        block = []
        while f.tell() < size:
            for _ in range(1000):
                post += 1
                if post % 2:
                    questions += 1
                    block.append(
                        f'  <row Id="{post}" PostTypeId="1" CreationDate="2020-01-01T00:00:00.000" Score="{post % 50}" '
                        f'Body="{_BODY * 3}" Title="Wi-Fi stopped working after upgrade number {post}" '
                        f'Tags="&lt;wifi&gt;&lt;networking&gt;&lt;22.04&gt;" AnswerCount="1" />\n'
                    )
                else:
                    block.append(f'  <row Id="{post}" PostTypeId="2" ParentId="{post - 1}" Body="{_BODY * 2}" />\n')
            f.write("".join(block))
            block.clear()
        f.write("</posts>\n")
    (folder / "PostLinks.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<postlinks>\n'
        '  <row Id="1" PostId="3" RelatedPostId="1" LinkTypeId="3" />\n</postlinks>\n',
        encoding="utf-8",
    )
    return questions


def test_parsing_is_streaming_in_bounded_memory(tmp_path):
    size = 50 * 1024 * 1024
    folder = tmp_path / "big.example"
    expected = write_big_posts(folder, size)
    export = read_export(folder)
    tracemalloc.start()
    try:
        count = 0
        for _ in export.questions():
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == expected and export.links() == [DuplicateLink("big.example:3", "big.example:1")]
    assert export.report.malformed == 0
    # One block of rows (1 MiB of XML) at a time: the peak is a few MiB, never near the file's 50.
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while parsing {size / 2**20:.0f} MiB"
