"""GitHub issues as the REST API returns them: a JSON array (or ``gh api --paginate``'s arrays one after another)
or JSON lines of issue objects.

An issue is a question: its title is the text, its labels, URL, date, body and state go to ``meta``, and its id is
``"<owner>/<repo>#<number>"``. Pull requests (objects with a ``pull_request`` key: the issues API lists them too)
are skipped and counted. An issue closed with ``state_reason: "duplicate"`` or labelled ``duplicate`` is a
duplicate of the issue its body names (``Duplicate of #12``, ``duplicate of owner/repo#12`` or the issue's URL,
in the same repository), which makes a duplicate link; the closing comment is not part of an issue object, so a
duplicate that names its original only there is counted as unnamed.

Example:
    >>> export = GitHubExport("issues.json", "octo/widgets")              # doctest: +SKIP
    >>> [q.id for q in export.questions()][:2], export.links()[:1]      # doctest: +SKIP
    (['octo/widgets#1', 'octo/widgets#2'], [DuplicateLink(question_id='octo/widgets#2', canonical_id='octo/widgets#1')])
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dupq.data import DataError, QuestionRecord
from dupq.errors import ValidationError
from dupq.sources.base import DuplicateLink, Export
from dupq.text import normalize_question

__all__ = ["GitHubExport", "JsonItems", "duplicate_target"]

_CHUNK = 1 << 20
_WS = " \t\r\n"
_REPO_URL = re.compile(r"github\.com/([^/\s]+/[^/\s#?]+)/(?:issues|pull)/\d+", re.I)
_API_REPO_URL = re.compile(r"/repos/([^/\s]+/[^/\s#?]+)/?$", re.I)
_DUPLICATE_OF = re.compile(
    r"duplicate\s+of:?\s+(?:#(\d+)|(?:https?://github\.com/)?([\w.-]+/[\w.-]+)(?:#|/issues/)(\d+))", re.I
)


def duplicate_target(body: str | None, repo: str) -> int | None:
    """The issue number a duplicate's body names as its original in ``repo``, or None.

    Args:
        body: The issue's body (Markdown).
        repo: ``owner/name``; a reference into another repository is not a link within this export.

    Example:
        >>> duplicate_target("Closing: Duplicate of #12.", "octo/widgets")
        12
        >>> duplicate_target("duplicate of OCTO/widgets#7", "octo/widgets"), duplicate_target("dup of #3", "o/r")
        (7, None)
        >>> duplicate_target("Duplicate of other/repo#5, then duplicate of https://github.com/octo/widgets/issues/9",
        ...                  "octo/widgets")
        9
    """
    if not body:
        return None
    for match in _DUPLICATE_OF.finditer(body):
        if match.group(1):
            return int(match.group(1))
        if match.group(2).lower() == repo.lower():
            return int(match.group(3))
    return None


class JsonItems:
    """Stream the items of a JSON export as ``(line, value)``: a JSON array, arrays one after another (what
    ``gh api --paginate`` writes), or JSON lines.

    JSON lines are read line by line, so a bad line is reported through ``on_error(line, reason)`` and skipped. An
    array is decoded item by item from a sliding buffer (never the whole file at once); an error inside it cannot
    be skipped (where the next item starts is unknown), so it raises.

    Args:
        path: The file.
        on_error: Called with the line and the reason of each unreadable JSON line.

    Raises:
        DataError: Invalid JSON inside an array, or a file that is neither an array nor JSON lines.

    Example:
        >>> import tempfile, os
        >>> with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        ...     _ = f.write('[{"number": 1},\\n {"number": 2}]\\n[{"number": 3}]')
        >>> [(line, obj["number"]) for line, obj in JsonItems(f.name, print)]
        [(1, 1), (2, 2), (3, 3)]
        >>> os.unlink(f.name)
    """

    def __init__(self, path: str | Path, on_error: Callable[[int, str], None]) -> None:
        self.path = Path(path)
        self.on_error = on_error
        self._raw: Any = None

    @property
    def bytes_read(self) -> int:
        """Bytes read so far (the text layer reads ahead in blocks)."""
        if self._raw is None:
            return 0
        return self.path.stat().st_size if self._raw.closed else self._raw.tell()

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        path = self.path
        try:
            with open(path, "rb") as self._raw, io.TextIOWrapper(self._raw, encoding="utf-8-sig") as f:
                head = f.read(_CHUNK)
                first = head.lstrip(_WS)[:1]
                if first == "[":
                    yield from _array_items(path, f, head)
                elif first == "{" or not first:
                    for line, raw in enumerate(_lines(head, f), start=1):
                        if not raw.strip():
                            continue
                        try:
                            yield line, json.loads(raw)
                        except json.JSONDecodeError as exc:
                            self.on_error(line, f"invalid JSON: {exc.msg}")
                else:
                    raise DataError(path, 1, "not a GitHub issues export: expected a JSON array or JSON lines")
        except UnicodeDecodeError as exc:
            raise DataError(path, None, f"not UTF-8 text: {exc.reason}") from None


def _lines(head: str, f: Any) -> Iterator[str]:
    """The lines of a text file whose first block ``head`` was already read."""
    rest = ""
    while head:
        lines = (rest + head).split("\n")
        rest = lines.pop()
        yield from lines
        head = f.read(_CHUNK)
    if rest:
        yield rest


def _array_items(path: Path, f: Any, buf: str) -> Iterator[tuple[int, Any]]:
    decode = json.JSONDecoder().raw_decode
    pos = 0
    line = 1  # the line of buf[pos]
    eof = False
    in_array = after_item = False

    def advance(to: int) -> None:
        nonlocal pos, line
        line += buf.count("\n", pos, to)
        pos = to

    while True:
        while pos < len(buf) and buf[pos] in _WS:
            advance(pos + 1)
        if pos == len(buf):
            if eof:
                if in_array:
                    raise DataError(path, line, "invalid JSON: the array is not closed (file cut off?)")
                return
            chunk = f.read(_CHUNK)
            eof = not chunk
            buf = buf[pos:] + chunk
            pos = 0
            continue
        c = buf[pos]
        if not in_array:
            if c != "[":
                raise DataError(path, line, f"invalid JSON: expected '[' between arrays, got {c!r}")
            advance(pos + 1)
            in_array, after_item = True, False
        elif c == "]":
            advance(pos + 1)
            in_array = False
        elif after_item:
            if c != ",":
                raise DataError(path, line, f"invalid JSON: expected ',' or ']' after an item, got {c!r}")
            advance(pos + 1)
            after_item = False
        else:
            try:
                value, end = decode(buf, pos)
            except json.JSONDecodeError as exc:
                end = -1
                error = exc
            if end == -1 or (end == len(buf) and not eof):
                # Read on until the item decodes or the file ends: only then is an error certainly a real one
                # (so a broken item holds the rest of the file in memory before it is reported).
                if eof:
                    where = line + buf.count("\n", pos, error.pos)
                    raise DataError(path, where, f"invalid JSON: {error.msg}") from None
                chunk = f.read(_CHUNK)
                eof = not chunk
                buf = buf[pos:] + chunk
                pos = 0
                continue
            yield line, value
            advance(end)
            after_item = True


def _repo_of(issue: dict[str, Any]) -> str | None:
    """``owner/name`` from an issue's ``html_url`` (or ``repository_url``), or None."""
    url = issue.get("html_url")
    if isinstance(url, str):
        match = _REPO_URL.search(url)
        if match:
            return match.group(1)
    url = issue.get("repository_url")
    if isinstance(url, str):
        match = _API_REPO_URL.search(url)
        if match:
            return match.group(1)
    return None


class _BadIssue(Exception):
    """An object that is valid JSON but not a readable issue."""


class GitHubExport(Export):
    """GitHub issues as the REST API returns them, read in one pass (:class:`dupq.sources.base.Export`).

    Args:
        path: A ``.json`` file (an array, or ``gh api --paginate``'s arrays) or ``.jsonl`` (one issue a line).
        site: The repository (``owner/name``) the ids use; default: each issue's own, from its ``html_url``
            (else ``repository_url``), and the file's name without suffix when an issue has neither.
        progress: Show a progress bar by bytes read.

    Each question's ``meta``: ``site`` (the repository), ``tags`` (label names), ``url`` (``html_url``),
    ``created`` (``created_at``), ``body`` (Markdown as given, ``""`` when null) and ``state``.

    Example:
        >>> export = GitHubExport("widgets-issues.jsonl")                # doctest: +SKIP
        >>> sum(1 for _ in export.questions()), export.report.pull_requests  # doctest: +SKIP
        (1893, 2210)
    """

    format = "github"

    def __init__(self, path: str | Path, site: str | None = None, *, progress: bool = False) -> None:
        path = Path(path)
        if not path.is_file():
            raise DataError(path, None, "not a GitHub issues export: no such file")
        super().__init__(path, site, progress=progress)
        self._items: JsonItems | None = None
        self._seen: set[str] = set()
        self._pending: list[DuplicateLink] = []

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @property
    def bytes_read(self) -> int:
        return 0 if self._items is None else min(self._items.bytes_read, self.size)

    def _questions(self) -> Iterator[QuestionRecord]:
        report = self.report
        fallback = self.path.name.split(".")[0]
        self._items = JsonItems(self.path, lambda line, reason: report.add_malformed(self.path.name, line, reason))
        for line, issue in self._items:
            try:
                record, link = self._issue(issue, fallback)
            except _BadIssue as exc:
                report.add_malformed(self.path.name, line, str(exc))
                continue
            if record is None:
                report.pull_requests += 1
                continue
            self._seen.add(record.id)
            if link is not None:
                self._pending.append(link)
            yield record

    def _issue(self, issue: Any, fallback: str) -> tuple[QuestionRecord | None, DuplicateLink | None]:
        if not isinstance(issue, dict):
            raise _BadIssue(f"expected an issue object, got {type(issue).__name__}")
        if "pull_request" in issue:
            return None, None
        number = issue.get("number")
        if number is None:
            raise _BadIssue("missing number")
        if type(number) is not int or number <= 0:
            raise _BadIssue(f"bad number {number!r}: expected a positive integer")
        title = issue.get("title")
        if title is None:
            raise _BadIssue("missing title")
        try:
            text = normalize_question(title, field="title")
        except ValidationError as exc:
            raise _BadIssue(exc.message) from None
        body = issue.get("body")
        if body is not None and not isinstance(body, str):
            raise _BadIssue(f"body must be a string or null, got {type(body).__name__}")
        labels = issue.get("labels") or []
        if not isinstance(labels, list):
            raise _BadIssue(f"labels must be a list, got {type(labels).__name__}")
        tags = []
        for label in labels:
            name = label.get("name") if isinstance(label, dict) else label
            if not isinstance(name, str):
                raise _BadIssue("a label must be a string or an object with a name")
            tags.append(name)
        repo = self.site or _repo_of(issue) or fallback
        url = issue.get("html_url")
        if not isinstance(url, str):
            url = f"https://github.com/{repo}/issues/{number}" if "/" in repo else None
        qid = f"{repo}#{number}"
        meta = {
            "site": repo,
            "tags": tags,
            "url": url,
            "created": issue.get("created_at"),
            "body": body or "",
            "state": issue.get("state"),
        }
        link = None
        if issue.get("state_reason") == "duplicate" or any(t.lower() == "duplicate" for t in tags):
            target = duplicate_target(body, repo)
            if target is None or target == number:
                self.report.duplicates_unnamed += 1
            else:
                link = DuplicateLink(qid, f"{repo}#{target}")
        return QuestionRecord(text, qid, meta), link

    def _resolve_links(self) -> list[DuplicateLink]:
        links = []
        for link in dict.fromkeys(self._pending):
            if link.canonical_id in self._seen:
                links.append(link)
            else:
                self.report.add_missing(link)
        return links
