"""What every export reader shares: the duplicate link, the import report, and :class:`Export`, a one-pass stream.

An export is read in one pass so that a multi-GB dump never has to fit in memory: :meth:`Export.questions` streams
the questions (the caller stores them in batches), and :meth:`Export.links` returns the duplicate links once the
questions are exhausted, because only then is it known which linked posts the export holds. Links are few (a few
percent of the questions), so they are a list. Rows that cannot be read are counted in :class:`ImportReport` with
their file and line, never raised, so one bad row of a million does not stop an import.

Example:
    >>> report = ImportReport("github", "octo/repo")
    >>> report.add_malformed("issues.json", 3, "missing title")
    >>> report.malformed, str(report.malformed_samples[0])
    (1, 'issues.json:3: missing title')
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from tqdm import tqdm

from dupq.data import QuestionRecord

__all__ = ["DuplicateLink", "Export", "ImportReport", "Malformed", "MAX_SAMPLES"]

#: How many malformed rows and missing links a report keeps as examples (the counts are always complete).
MAX_SAMPLES = 20


class DuplicateLink(NamedTuple):
    """``question_id`` was closed as a duplicate of ``canonical_id`` (both ids as the export's questions carry them).

    A question may be closed against several originals (Stack Exchange allows up to five); each is one link,
    in the order the export lists them.

    Example:
        >>> DuplicateLink("askubuntu.com:7", "askubuntu.com:3").canonical_id
        'askubuntu.com:3'
    """

    question_id: str
    canonical_id: str


class Malformed(NamedTuple):
    """A row that was skipped: the file it is in, its line (None: the whole file) and why.

    Example:
        >>> str(Malformed("Posts.xml", 12, "missing Title"))
        'Posts.xml:12: missing Title'
    """

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.reason}"


@dataclass
class ImportReport:
    """Counts of one read of an export; complete once :meth:`Export.questions` is exhausted.

    Attributes:
        format: ``"stackexchange"`` or ``"github"``.
        site: The site or repository the ids are prefixed with (None: taken from each GitHub issue's URL).
        questions: Questions yielded.
        other_posts: Stack Exchange rows that are not questions (answers, tag wikis, ...): skipped by design.
        pull_requests: GitHub pull requests: skipped by design (the issues API lists them among issues).
        malformed: Rows skipped because they could not be read (bad XML or JSON, a missing or bad field).
        malformed_samples: The first :data:`MAX_SAMPLES` of them, with file and line.
        links: Duplicate links between two questions of the export (what :meth:`Export.links` returns).
        links_missing: Duplicate links naming a post that is not a question of this export (deleted, an
            answer, a pull request, a later dump): dropped, not an error.
        missing_samples: The first :data:`MAX_SAMPLES` of them.
        links_reopened: Stack Exchange links dropped because PostHistory.xml shows the question reopened since.
        duplicates_unnamed: GitHub issues marked duplicate whose body names no issue of the same repository.

    Example:
        >>> ImportReport("stackexchange", "askubuntu.com", questions=3, links=1).to_dict()["questions"]
        3
    """

    format: str
    site: str | None
    questions: int = 0
    other_posts: int = 0
    pull_requests: int = 0
    malformed: int = 0
    malformed_samples: list[Malformed] = field(default_factory=list)
    links: int = 0
    links_missing: int = 0
    missing_samples: list[DuplicateLink] = field(default_factory=list)
    links_reopened: int = 0
    duplicates_unnamed: int = 0

    def add_malformed(self, file: str, line: int | None, reason: str) -> None:
        """Count one unreadable row; keep it as an example while there are fewer than :data:`MAX_SAMPLES`."""
        self.malformed += 1
        if len(self.malformed_samples) < MAX_SAMPLES:
            self.malformed_samples.append(Malformed(file, line, reason))

    def add_missing(self, link: DuplicateLink) -> None:
        """Count one link to a post the export does not hold."""
        self.links_missing += 1
        if len(self.missing_samples) < MAX_SAMPLES:
            self.missing_samples.append(link)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (samples as ``"file:line: reason"`` strings and ``[id, canonical]``)."""
        return {
            "format": self.format,
            "site": self.site,
            "questions": self.questions,
            "other_posts": self.other_posts,
            "pull_requests": self.pull_requests,
            "malformed": self.malformed,
            "malformed_samples": [str(m) for m in self.malformed_samples],
            "links": self.links,
            "links_missing": self.links_missing,
            "missing_samples": [list(link) for link in self.missing_samples],
            "links_reopened": self.links_reopened,
            "duplicates_unnamed": self.duplicates_unnamed,
        }


class Export(ABC):
    """One export to import: stream :meth:`questions` once, then take :meth:`links` and :attr:`report`.

    Subclasses read one format (:class:`dupq.sources.stackexchange.StackExchangeExport`,
    :class:`dupq.sources.github.GitHubExport`); :func:`dupq.sources.read_export` picks one. :attr:`size` and
    :attr:`bytes_read` let a caller draw its own progress bar; ``progress=True`` draws a tqdm bar by bytes.

    Args:
        path: The export (a folder or a file).
        site: The site or repository its ids are prefixed with.
        progress: Show a tqdm progress bar (bytes read) while the questions stream.

    Example:
        >>> export = read_export("askubuntu.com")                        # doctest: +SKIP
        >>> for batch in batched(export.questions(), 1000):              # doctest: +SKIP
        ...     store.add(batch)
        >>> export.links()[:1], export.report.malformed                  # doctest: +SKIP
        ([DuplicateLink(question_id='askubuntu.com:7', canonical_id='askubuntu.com:3')], 0)
    """

    format: str = ""

    def __init__(self, path: str | Path, site: str | None, *, progress: bool = False) -> None:
        self.path = Path(path)
        self.site = site
        self.progress = progress
        self.report = ImportReport(self.format, site)
        self._started = False
        self._links: list[DuplicateLink] | None = None

    @property
    @abstractmethod
    def size(self) -> int:
        """Bytes the walk reads in all (every file of the export it opens)."""

    @property
    @abstractmethod
    def bytes_read(self) -> int:
        """Bytes read so far (in blocks, so it runs a little ahead of the question last yielded)."""

    @abstractmethod
    def _questions(self) -> Iterator[QuestionRecord]:
        """Yield the questions; count what is skipped in :attr:`report`; return the links at the end."""

    @abstractmethod
    def _resolve_links(self) -> list[DuplicateLink]:
        """The duplicate links between questions yielded (called once the questions are exhausted)."""

    def questions(self) -> Iterator[QuestionRecord]:
        """Stream the export's questions, once (a second walk raises: the links and counts are of the first).

        Raises:
            RuntimeError: The questions were already walked.
            dupq.data.DataError: A file cannot be read at all (missing, not XML/JSON from its start, JSON that
                breaks off inside an array); a single bad row is counted in :attr:`report` instead.
        """
        if self._started:
            raise RuntimeError("an export's questions are read once; call read_export again to re-read it")
        self._started = True
        return self._walk()

    def _walk(self) -> Iterator[QuestionRecord]:
        bar = tqdm(
            total=self.size,
            unit="B",
            unit_scale=True,
            desc=f"reading {self.path.name}",
            disable=not self.progress,
            mininterval=0.5,
        )
        shown = 0
        report = self.report
        try:
            for record in self._questions():
                report.questions += 1
                yield record
                if self.progress:
                    now = self.bytes_read
                    if now != shown:
                        bar.update(now - shown)
                        shown = now
            self._links = self._resolve_links()
            report.links = len(self._links)
            if self.progress:
                bar.update(max(0, self.bytes_read - shown))
        finally:
            bar.close()

    def __iter__(self) -> Iterator[QuestionRecord]:
        return self.questions()

    def links(self) -> list[DuplicateLink]:
        """The duplicate links whose two ends are questions of the export, in the export's order, without repeats.

        Raises:
            RuntimeError: The questions have not all been read yet (which posts exist is known only then).
        """
        if self._links is None:
            raise RuntimeError("the links are known once the questions are exhausted: read export.questions() first")
        return list(self._links)
