"""A community's own export, read as it is published: a Stack Exchange data-dump site folder or GitHub issues.

:func:`read_export` returns an :class:`Export`: stream its questions (:class:`dupq.data.QuestionRecord`, ids stable
across re-imports) into the store in batches, then take its duplicate links (:class:`DuplicateLink`) and its
:class:`ImportReport` (what was skipped, with file and line). The readers depend only on the foundation modules
(:mod:`dupq.data`, :mod:`dupq.text`, :mod:`dupq.errors`), so the store and the CLI build on them, not the reverse.

Example:
    >>> export = read_export("dumps/askubuntu.com", progress=True)          # doctest: +SKIP
    >>> for batch in itertools.batched(export.questions(), 1000):          # doctest: +SKIP
    ...     store.add(batch)
    >>> links, report = export.links(), export.report                      # doctest: +SKIP
    >>> report.questions, report.links, report.links_missing, report.malformed   # doctest: +SKIP
    (412083, 8934, 412, 0)
"""

from __future__ import annotations

from pathlib import Path

from dupq.data import DataError
from dupq.errors import ValidationError
from dupq.sources.base import MAX_SAMPLES, DuplicateLink, Export, ImportReport, Malformed
from dupq.sources.github import GitHubExport, JsonItems
from dupq.sources.stackexchange import POSTS, StackExchangeExport
from dupq.text import clean_id

__all__ = [
    "FORMATS",
    "MAX_SAMPLES",
    "DuplicateLink",
    "Export",
    "GitHubExport",
    "ImportReport",
    "Malformed",
    "StackExchangeExport",
    "detect",
    "read_export",
]

#: The export formats, as ``dupq import --format`` names them.
FORMATS: dict[str, type[Export]] = {"stackexchange": StackExchangeExport, "github": GitHubExport}
_JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")


def detect(path: str | Path) -> str | None:
    """The format of an export, or None when it is neither (then it is a plain question file for ``dupq import``).

    A folder holding ``Posts.xml`` (or that file itself) is a Stack Exchange dump; a ``.json`` / ``.jsonl`` file
    whose first object has ``number`` and ``title`` is a GitHub issues export. Only the file's start is read.

    Args:
        path: What ``dupq import`` was given.

    Example:
        >>> detect("dumps/askubuntu.com"), detect("widgets-issues.json"), detect("questions.jsonl")  # doctest: +SKIP
        ('stackexchange', 'github', None)
    """
    path = Path(path)
    if path.is_dir():
        return "stackexchange" if (path / POSTS).is_file() else None
    if path.name == POSTS and path.is_file():
        return "stackexchange"
    if path.suffix.lower() not in _JSON_SUFFIXES or not path.is_file():
        return None

    def stop(line: int, reason: str) -> None:
        raise DataError(path, line, reason)  # a bad first line: not worth reading on to find out

    try:
        first = next(iter(JsonItems(path, stop)), None)
    except (DataError, OSError):
        return None
    if first is None:
        return None
    obj = first[1]
    return "github" if isinstance(obj, dict) and "number" in obj and "title" in obj else None


def read_export(path: str | Path, *, fmt: str | None = None, site: str | None = None, progress: bool = False) -> Export:
    """Open a community's export for one streaming read (:class:`Export`): questions first, then links.

    Args:
        path: A Stack Exchange site folder (or its ``Posts.xml``), or a GitHub issues ``.json`` / ``.jsonl``.
        fmt: ``"stackexchange"`` or ``"github"``; default: :func:`detect`.
        site: The site (``askubuntu.com``) or repository (``owner/name``) the ids, URLs and ``meta["site"]`` use;
            default: the folder's name, or each GitHub issue's repository from its URL.
        progress: Show a tqdm progress bar, by bytes read, while the questions stream.

    Raises:
        DataError: The path is missing, is no export of a known format, or ``site`` would make ids the API
            refuses (whitespace, too long).

    Example:
        >>> export = read_export("dumps/askubuntu.com")                     # doctest: +SKIP
        >>> [q.id for q in export.questions()][:2]                          # doctest: +SKIP
        ['askubuntu.com:1', 'askubuntu.com:2']
        >>> export.links()[0]                                               # doctest: +SKIP
        DuplicateLink(question_id='askubuntu.com:5', canonical_id='askubuntu.com:1')
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "no such file or folder")
    if fmt is None:
        fmt = detect(path)
        if fmt is None:
            raise DataError(
                path,
                None,
                "not a known export: expected a Stack Exchange site folder (with Posts.xml) or a GitHub "
                "issues .json/.jsonl (objects with number and title)",
            )
    if fmt not in FORMATS:
        raise DataError(path, None, f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    export = FORMATS[fmt](path, site, progress=progress)
    if export.site is not None:  # given, or the folder's name
        try:
            clean_id(f"{export.site}:1")
        except ValidationError:
            raise DataError(
                path, None, f"site {export.site!r} would make invalid question ids (whitespace, too long): pass --site"
            ) from None
    return export
