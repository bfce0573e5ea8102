"""The dupq command line: import of every file format, search, errors."""

from __future__ import annotations

import json

import pytest

from dupq.cli import main

FORMATS = {
    "questions.txt": "How do I bake sourdough bread?\n\nWhat is a Roth IRA?\nHow do I bake sourdough bread?\n",
    "questions.jsonl": '{"text": "How do I bake sourdough bread?", "id": "bread"}\n'
    '{"question": "What is a Roth IRA?", "topic": "fin"}\n',
    "questions.tsv": "id\ttext\ttopic\nbread\tHow do I bake sourdough bread?\tcooking\n"
    "ira\tWhat is a Roth IRA?\tfinance\n",
    "questions.csv": 'id,text\nbread,"How do I bake sourdough bread?"\nira,"What is a Roth IRA, exactly?"\n',
    "pairs.tsv": "pair_id\tquestion1\tquestion2\tis_duplicate\n"
    "1\tHow do I bake sourdough bread?\tWhat is a Roth IRA?\t0\n"
    "2\tWhat is a Roth IRA?\tHow does a Roth IRA work?\t1\n",
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_import_every_format(runner, tmp_path, name) -> None:
    path = tmp_path / name
    path.write_text(FORMATS[name])
    r = runner.invoke(main, ["import", str(path), "--no-progress"])
    assert r.exit_code == 0, r.output
    expected_added = 3 if name == "pairs.tsv" else 2
    assert f"added {expected_added}," in r.output
    again = runner.invoke(main, ["import", str(path), "--no-progress"])  # everything now known: all skipped
    assert again.exit_code == 0 and "added 0," in again.output
    s = runner.invoke(main, ["search", "sourdough bread baking", "-k", "1", "--json"])
    assert s.exit_code == 0, s.output
    assert json.loads(s.output)["results"][0]["text"] == "How do I bake sourdough bread?"


def test_import_shows_progress_and_counts_skips(runner, tmp_path) -> None:
    path = tmp_path / "q.txt"
    path.write_text("How do I reverse a list in Python?\nA brand new question about kayaks?\n" + "x" * 1200 + "\n")
    r = runner.invoke(main, ["import", str(path)])
    assert r.exit_code == 0, r.output
    assert "read 3, added 1, skipped 1" in r.output and "invalid 1" in r.output
    assert "importing q.txt" in r.output  # the progress bar (stderr is mixed into output)


def test_import_errors_are_messages_not_tracebacks(runner, tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine?"}\n{not json\n')
    r = runner.invoke(main, ["import", str(bad), "--no-progress"])
    assert r.exit_code == 1 and "bad.jsonl:2" in r.output and "Traceback" not in r.output
    odd = tmp_path / "q.docx"
    odd.write_text("x")
    r = runner.invoke(main, ["import", str(odd)])
    assert r.exit_code == 1 and "unknown file type" in r.output
    r = runner.invoke(main, ["import", str(tmp_path / "missing.txt")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_search_plain_and_errors(runner) -> None:
    r = runner.invoke(main, ["search", "How do I reverse a list in Python?", "-k", "2"])
    assert r.exit_code == 0 and "DUPLICATE" in r.output and "py-rev-1" in r.output
    r = runner.invoke(main, ["search", "x", "-k", "500"])
    assert r.exit_code == 1 and "k must be between 1 and 100" in r.output
    r = runner.invoke(main, ["search", "   "])
    assert r.exit_code == 1 and "must not be empty" in r.output


@pytest.mark.parametrize("command", [["models", "list"], ["search", "How do I boil an egg?"], ["backup", "x.tar"]])
def test_unreachable_database_is_a_message_without_the_password(runner, command) -> None:
    # Nothing listens on port 1: every command that opens the database says so in one line, exit status 1.
    r = runner.invoke(main, ["--database", "postgresql://dupq:s3cret@127.0.0.1:1/dupq", *command])
    assert r.exit_code == 1 and "cannot connect to postgresql://dupq:***@127.0.0.1:1/dupq" in r.output, r.output
    assert "s3cret" not in r.output and "Traceback" not in r.output


def test_home_option_and_reindex(runner, tmp_path) -> None:
    other = tmp_path / "other-home"
    r = runner.invoke(main, ["--home", str(other), "reindex"])
    assert r.exit_code == 0 and "indexed 8 questions for model base" in r.output
    assert (other / "dupq.sqlite3").exists()
