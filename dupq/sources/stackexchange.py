"""A Stack Exchange data-dump site folder: ``Posts.xml``, ``PostLinks.xml`` and (optional) ``PostHistory.xml``.

The dump is one ``<row .../>`` per line under a root element, all data in attributes. Questions are ``Posts.xml``
rows with ``PostTypeId="1"``; the title is the question text, and the HTML body (as plain text), tags, URL, dates
and score go to ``meta``. ``PostLinks.xml`` rows with ``LinkTypeId="3"`` are duplicate links (``PostId`` was closed
as a duplicate of ``RelatedPostId``). Ids are ``"<site>:<PostId>"``, stable across dumps, so re-importing a newer
dump adds only what is new.

The files are read with a bare expat parser (:mod:`xml.parsers.expat`) rather than ``ElementTree.iterparse``: a
start-tag handler sees each row's attributes and no element tree is ever built, so memory stays flat however big
``Posts.xml`` is, and the handler knows the row's line (``CurrentLineNumber``), which iterparse does not expose.
An XML error (a truncated file, a broken row) does not end the read: the row is counted with its line and the
parse resumes at the next line, which in a dump is the next row.

Example:
    >>> export = StackExchangeExport("askubuntu.com")                          # doctest: +SKIP
    >>> [q.id for q in export.questions()][:2]                                 # doctest: +SKIP
    ['askubuntu.com:1', 'askubuntu.com:3']
    >>> export.links()[0]                                                      # doctest: +SKIP
    DuplicateLink(question_id='askubuntu.com:7', canonical_id='askubuntu.com:3')
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from html import unescape
from pathlib import Path
from typing import Any
from xml.parsers import expat

from dupq.data import DataError, QuestionRecord
from dupq.errors import ValidationError
from dupq.sources.base import DuplicateLink, Export
from dupq.text import normalize_question

__all__ = ["StackExchangeExport", "XmlRows", "html_to_text", "parse_tags"]

POSTS = "Posts.xml"
POST_LINKS = "PostLinks.xml"
POST_HISTORY = "PostHistory.xml"

#: PostLinks.LinkTypeId of "closed as a duplicate of" (1 is a plain link).
_DUPLICATE_LINK = "3"
#: PostHistory.PostHistoryTypeId of a close and of a reopen; a close's Comment is its reason, 1 (before 2013) and
#: 101 meaning duplicate, and its Text is JSON naming the originals (``OriginalQuestionIds``).
_CLOSED, _REOPENED = "10", "11"
_DUPLICATE_REASONS = frozenset({"1", "101"})

#: Bytes per read: large enough that the per-call overhead vanishes, small enough that a block's rows are few.
_CHUNK = 1 << 20

# Block-level tags become a space (two paragraphs must not run together), every other tag disappears ("<b>x</b>y"
# stays "xy"). Regular expressions instead of html.parser: the dump's bodies are well-formed HTML written by the
# site itself, and a parser in pure Python would be several times slower than the XML parse around it.
_BLOCK_TAG = re.compile(
    r"</?(?:p|div|br|hr|li|ul|ol|pre|blockquote|h[1-6]|table|thead|tbody|tr|td|th|dl|dt|dd|img)\b[^>]*>", re.I
)
_ANY_TAG = re.compile(r"<!--.*?-->|<[A-Za-z/!?][^>]*>", re.S)
_ANGLE_TAGS = re.compile(r"<([^<>]+)>")
_DIGITS = re.compile(r"[0-9]+")


def html_to_text(html: str) -> str:
    """A post body as plain text: tags removed, entities decoded, whitespace collapsed to single spaces.

    Args:
        html: The body as the dump stores it (HTML, already XML-unescaped by the parser).

    Example:
        >>> html_to_text("<p>Can&#39;t&nbsp;connect &amp; <b>no</b> Wi&#8209;Fi</p><pre><code>sudo lshw</code></pre>")
        "Can't connect & no Wi‑Fi sudo lshw"
    """
    if "<" in html:
        html = _ANY_TAG.sub("", _BLOCK_TAG.sub(" ", html))
    if "&" in html:
        html = unescape(html)
    return " ".join(html.split())


def parse_tags(tags: str | None) -> list[str]:
    """A ``Tags`` attribute as a list, from either syntax the dumps have used.

    Example:
        >>> parse_tags("<wifi><networking>"), parse_tags("|wifi|networking|"), parse_tags(None)
        (['wifi', 'networking'], ['wifi', 'networking'], [])
    """
    if not tags:
        return []
    if tags.startswith("<"):
        return _ANGLE_TAGS.findall(tags)
    if "|" in tags:
        return [t for t in tags.split("|") if t]
    return tags.split()


class XmlRows:
    """Stream the ``<row>`` elements of one dump file as ``(line, attributes)``, in bounded memory.

    An XML error is reported through ``on_error(line, reason)`` and the parse resumes at the start of the next
    line under a fresh parser (the dump writes one row per line); only a file that is not XML from its first
    element raises.

    Args:
        path: The XML file.
        on_error: Called with the line and the reason of each XML error.

    Example:
        >>> errors = []
        >>> import tempfile, os
        >>> with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as f:
        ...     _ = f.write('<posts>\\n<row Id="1" />\\n<row Id="2" Id="2" />\\n<row Id="3" />\\n</posts>\\n')
        >>> [(line, row["Id"]) for line, row in XmlRows(f.name, lambda *e: errors.append(e))]
        [(2, '1'), (4, '3')]
        >>> errors
        [(3, 'XML error: duplicate attribute')]
        >>> os.unlink(f.name)
    """

    def __init__(self, path: str | Path, on_error: Callable[[int, str], None]) -> None:
        self.path = Path(path)
        self.on_error = on_error
        self.bytes_read = 0
        self._rows: list[tuple[int, dict[str, str]]] = []
        self._root: str | None = None
        self._parser: Any = None
        self._line_offset = 0

    def _new_parser(self) -> Any:
        parser = expat.ParserCreate("utf-8")
        parser.StartElementHandler = self._start
        return parser

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        if name == "row":
            self._rows.append((self._line_offset + self._parser.CurrentLineNumber, attrs))
        elif self._root is None:
            self._root = name

    def __iter__(self) -> Iterator[tuple[int, dict[str, str]]]:
        rows = self._rows
        with open(self.path, "rb") as f:
            self._parser = self._new_parser()
            base = 0  # file offset of the first byte the current parser was given after its prelude
            prelude = b""
            while True:
                chunk = f.read(_CHUNK)
                self.bytes_read = f.tell()
                final = not chunk
                try:
                    self._parser.Parse(chunk, final)
                except expat.ExpatError as exc:
                    yield from rows  # the rows before the error were complete
                    rows.clear()
                    line = self._line_offset + exc.lineno
                    reason = f"XML error: {expat.ErrorString(exc.code)}"
                    if self._root is None:
                        raise DataError(self.path, line, f"not a Stack Exchange dump file: {reason}") from None
                    self.on_error(line, reason)
                    at = self._parser.ErrorByteIndex
                    if final or at < 0:
                        return
                    # Resume at the next line: a fresh parser, given the root's start tag so the rest nests.
                    f.seek(base + at - len(prelude))
                    f.readline()
                    base = f.tell()
                    self._line_offset = line
                    prelude = f"<{self._root}>".encode()
                    self._parser = self._new_parser()
                    self._parser.Parse(prelude, False)
                    continue
                yield from rows
                rows.clear()
                if final:
                    return


class _BadRow(Exception):
    """A row that is well-formed XML but not a readable question or link (missing or bad attribute)."""


def _post_id(row: dict[str, str], name: str) -> int:
    value = row.get(name)
    if value is None:
        raise _BadRow(f"missing {name}")
    if not _DIGITS.fullmatch(value) or int(value) == 0:
        raise _BadRow(f"bad {name} {value!r}: expected a positive integer")
    return int(value)


def _date(row: dict[str, str], name: str) -> str | None:
    value = row.get(name)
    if value is None:
        return None
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise _BadRow(f"bad {name} {value!r}: expected an ISO 8601 date") from None
    return value


class StackExchangeExport(Export):
    """A Stack Exchange data-dump site folder, read in one pass (:class:`dupq.sources.base.Export`).

    The links are read first (``PostLinks.xml``, then ``PostHistory.xml`` when present) and only the ids they name
    are remembered, so the walk of ``Posts.xml`` keeps no per-question state. ``PostHistory.xml``, when present,
    adds duplicate closes that ``PostLinks.xml`` lacks and drops the links of questions whose latest close or
    reopen event is a reopen (the site's moderators undid the close); it is large, so remove it from the folder
    to skip it.

    Args:
        path: The site folder (or its ``Posts.xml``).
        site: The site name the ids and URLs use; default: the folder's name (``askubuntu.com``).
        progress: Show a progress bar by bytes read.

    Each question's ``meta``: ``site``, ``tags`` (list), ``url`` (``https://<site>/questions/<Id>``), ``created``
    (``CreationDate`` as written), ``body`` (plain text, :func:`html_to_text`), ``score`` (int or None) and
    ``closed`` (``ClosedDate`` or None).

    Example:
        >>> export = StackExchangeExport("dumps/askubuntu.com")                     # doctest: +SKIP
        >>> sum(1 for _ in export.questions()), export.report.links                # doctest: +SKIP
        (412083, 8934)
    """

    format = "stackexchange"

    def __init__(self, path: str | Path, site: str | None = None, *, progress: bool = False) -> None:
        path = Path(path)
        folder = path.parent if path.is_file() else path
        if not (folder / POSTS).is_file():
            raise DataError(folder, None, f"not a Stack Exchange site folder: no {POSTS}")
        super().__init__(folder, site or folder.resolve().name, progress=progress)
        self._files = [folder / name for name in (POST_LINKS, POST_HISTORY, POSTS) if (folder / name).is_file()]
        self._done_bytes = 0  # bytes of the files already read through
        self._current: XmlRows | None = None
        self._pairs: dict[tuple[int, int], None] = {}  # (duplicate, original), in order, without repeats
        self._found: set[int] = set()

    @property
    def size(self) -> int:
        return sum(f.stat().st_size for f in self._files)

    @property
    def bytes_read(self) -> int:
        return self._done_bytes + (self._current.bytes_read if self._current is not None else 0)

    def _rows(self, name: str) -> Iterator[tuple[int, dict[str, str]]]:
        path = self.path / name
        if not path.is_file():
            return
        self._current = XmlRows(path, lambda line, reason: self.report.add_malformed(name, line, reason))
        yield from self._current
        self._done_bytes += self._current.bytes_read
        self._current = None

    def _read_links(self) -> None:
        pairs = self._pairs
        report = self.report
        for line, row in self._rows(POST_LINKS):
            if row.get("LinkTypeId") != _DUPLICATE_LINK:
                continue
            try:
                pair = (_post_id(row, "PostId"), _post_id(row, "RelatedPostId"))
                if pair[0] == pair[1]:
                    raise _BadRow("a post linked as a duplicate of itself")
            except _BadRow as exc:
                report.add_malformed(POST_LINKS, line, str(exc))
                continue
            pairs[pair] = None

    def _read_history(self) -> None:
        # The latest close/reopen event of each post that has one: its duplicate targets, or None when it was
        # reopened or closed for another reason. Rows are in Id order, which is the order of the events.
        latest: dict[int, tuple[int, ...] | None] = {}
        report = self.report
        for line, row in self._rows(POST_HISTORY):
            kind = row.get("PostHistoryTypeId")
            if kind != _CLOSED and kind != _REOPENED:
                continue
            try:
                post = _post_id(row, "PostId")
                targets: tuple[int, ...] | None = None
                if kind == _CLOSED and row.get("Comment") in _DUPLICATE_REASONS:
                    try:
                        ids = json.loads(row.get("Text") or "{}").get("OriginalQuestionIds") or []
                        targets = tuple(int(i) for i in ids if int(i) > 0 and int(i) != post)
                    except (ValueError, TypeError, AttributeError):
                        raise _BadRow("bad Text of a duplicate close: expected JSON with OriginalQuestionIds") from None
            except _BadRow as exc:
                report.add_malformed(POST_HISTORY, line, str(exc))
                continue
            latest[post] = targets
        if not latest:
            return
        kept: dict[tuple[int, int], None] = {}
        for pair in self._pairs:
            if pair[0] in latest and latest[pair[0]] is None:  # reopened (or re-closed for another reason) since
                report.links_reopened += 1
            else:
                kept[pair] = None
        for post, targets in latest.items():
            for target in targets or ():
                kept.setdefault((post, target), None)
        self._pairs = kept

    def _questions(self) -> Iterator[QuestionRecord]:
        self._read_links()
        self._read_history()
        wanted = {post for pair in self._pairs for post in pair}
        found = self._found
        report = self.report
        site = self.site
        url = f"https://{site}/questions/"
        for line, row in self._rows(POSTS):
            kind = row.get("PostTypeId")
            if kind != "1":
                if kind is None:
                    report.add_malformed(POSTS, line, "missing PostTypeId")
                else:
                    report.other_posts += 1
                continue
            try:
                post = _post_id(row, "Id")
                title = row.get("Title")
                if title is None:
                    raise _BadRow("missing Title")
                try:
                    text = normalize_question(title, field="Title")
                except ValidationError as exc:
                    raise _BadRow(exc.message) from None
                score = row.get("Score")
                if score is not None:
                    try:
                        score = int(score)
                    except ValueError:
                        raise _BadRow(f"bad Score {score!r}: expected an integer") from None
                meta = {
                    "site": site,
                    "tags": parse_tags(row.get("Tags")),
                    "url": f"{url}{post}",
                    "created": _date(row, "CreationDate"),
                    "body": html_to_text(row.get("Body") or ""),
                    "score": score,
                    "closed": _date(row, "ClosedDate"),
                }
            except _BadRow as exc:
                report.add_malformed(POSTS, line, str(exc))
                continue
            if post in wanted:
                found.add(post)
            yield QuestionRecord(text, f"{site}:{post}", meta)

    def _resolve_links(self) -> list[DuplicateLink]:
        site = self.site
        found = self._found
        links = []
        for dup, original in self._pairs:
            link = DuplicateLink(f"{site}:{dup}", f"{site}:{original}")
            if dup in found and original in found:
                links.append(link)
            else:
                self.report.add_missing(link)
        return links
