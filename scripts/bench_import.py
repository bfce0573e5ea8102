"""Parse throughput and memory of a Stack Exchange data dump read by :mod:`dupq.sources` (issue 25, Targets: "a
generated 1 GB Posts.xml (+ links): parse ... throughput (questions/s, excluding embedding) and peak RSS growth
<= 300 MB"). A script that measures and prints, not a test.

Usage:
    python scripts/bench_import.py --generate /tmp/se-bench/bench.stackexchange.com --size-gb 1.0 [--unique-titles]
    python scripts/bench_import.py --parse /tmp/se-bench/bench.stackexchange.com [--json /tmp/se-bench/parse.json]
    python scripts/bench_import.py --parse /tmp/se-bench/bench.stackexchange.com --store /tmp/se-bench/home

``--generate DIR`` writes a synthetic but realistic site folder of at least ``--size-gb`` GB: ``Posts.xml`` with
questions and answers (about 1.6 answers a question) in the dump's own layout (one ``<row>`` a line, every field
an attribute, HTML bodies escaped as the dumps escape them: paragraphs, inline code, ``<pre>`` blocks with
``&#xA;`` newlines, links, lists, entities, some non-ASCII text; 1 to 5 tags in the ``<a><b>`` syntax, or ``|a|b|``
with ``--pipe-tags``), and ``PostLinks.xml`` with a duplicate link (``LinkTypeId=3``) for about 2% of the
questions (a later question closed against an earlier one, which gets a ``ClosedDate``; one link in twenty names
a post the dump lacks, as deleted posts do) and plain links (``LinkTypeId=1``) for about 5%. Seeded: the same
arguments write the same bytes. Write it outside the repository (``/tmp``).

``--parse DIR`` reads the folder with :func:`dupq.sources.read_export` and walks every question, holding one
batch of ``--batch`` questions at a time as an importer does, and prints the CPU kind, the command, questions/s,
MB/s, CPU seconds and the peak RSS growth (``getrusage`` peak after the walk minus the RSS before it; psutil's RSS
when installed, else /proc).

``--parse DIR --store HOME`` imports the folder into the dupq home HOME (SQLite; made if missing, use a scratch one)
with :meth:`dupq.service.DupQ.import_export` twice, as ``dupq import`` does but with ``embed=False``: parse + store
(id and text look-ups, inserts, the duplicate links as labelled pairs), excluding embedding: nothing is encoded, so
the home's index is left behind its store (delete the home afterwards; opening it again would encode everything).
For each run it prints questions/s (read from the dump, and added), the counts of the import report, and the peak
RSS growth during the run (RSS sampled every 20 ms from before the import to its end, minus the RSS before it; the
service and its model are loaded before the baseline). The second run must add 0 questions and 0 pairs and change
nothing: the store's revision (bumped by every question write), question count and pair count are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GB = 1_000_000_000

# --- a synthetic dump ------------------------------------------------------------------------------------------

_TAGS = (
    "networking wifi apt boot grub2 nvidia drivers sound bluetooth usb ssh server command-line bash permissions "
    "sudo kernel systemd dual-boot partitioning installation upgrade 22.04 20.04 24.04 gnome unity xorg wayland "
    "python java nodejs docker virtualbox vmware wine snap flatpak firefox chrome vim emacs git cron disk-usage "
    "mount nfs samba dns dhcp firewall ufw iptables vpn openvpn wireguard printing keyboard mouse touchpad display "
    "multiple-monitors resolution hibernate suspend power-management battery laptop lenovo dell hp thinkpad "
    "package-management dpkg ppa repository software-center updates security encryption luks lvm raid zfs btrfs "
    "ext4 ntfs fstab swap memory cpu performance monitoring logs journalctl rsyslog apache2 nginx mysql postgresql "
    "php ssl certificates email thunderbird libreoffice fonts localization unicode time timezone clock users groups"
).split()
_WORDS = (
    "the a an my this that it when after before with without on in from to of for and but or if then so because "
    "system package driver kernel module service daemon process file folder directory partition disk drive "
    "network interface connection adapter card screen monitor display window terminal shell command script output "
    "error warning message log update upgrade install remove configure enable disable start stop restart reboot "
    "boot login password user root permission access setting option version release laptop desktop server client "
    "works fails crashes hangs freezes shows returns prints says tries loads runs stops seems keeps cannot doesn't "
    "fresh clean default latest previous new old same different only also still again now never always sometimes "
    "slow fast broken missing wrong correct empty full hidden visible wireless wired external internal"
).split()
_NON_ASCII = ["café", "naïve", "Größe", "über", "—", "…", "日本語", "Привет", "ñandú", "€", "“quoted”", "l’écran"]
_COMMANDS = [
    "sudo apt update &amp;amp;&amp;amp; sudo apt upgrade",
    "lsblk -f",
    "sudo lshw -C network",
    "journalctl -b -p err",
    "nmcli dev wifi list",
    "sudo systemctl status ssh",
    "dmesg | grep -i firmware",
    "df -h /",
    "grep -r &amp;quot;foo&amp;quot; /etc/",
    "uname -a",
    "ip addr show",
    "cat /etc/fstab",
]
_TITLE_FORMS = [
    "How do I {v} {o} on Ubuntu {r}?",
    "Why does {o} {f} after {e}?",
    "{O} {f} when I {v} {o2}",
    "How can I {v} {o} without {o2}?",
    "What is the difference between {o} and {o2}?",
    "Unable to {v} {o}: {err}",
    "Is it safe to {v} {o}?",
    "{O} not working after {e} to {r}",
]
_VERBS = "install remove configure enable disable mount reset update fix change find restore share encrypt".split()
_OBJECTS = (
    "the wifi driver|my NVIDIA card|GRUB|a USB drive|the sound card|SSH keys|a second monitor|swap space|"
    "the firewall|Bluetooth headphones|a PPA|Docker|the keyboard layout|hibernation|the system clock|a Samba share|"
    "the boot order|snap packages|the touchpad|LUKS encryption"
).split("|")
_FAILS = (
    "stops working|freezes|crashes|is not detected|shows a black screen|runs very slowly|keeps disconnecting".split("|")
)
_EVENTS = "an upgrade|a kernel update|suspend|a fresh install|installing Windows|a reboot|changing the display".split(
    "|"
)
_RELEASES = ["20.04", "22.04", "24.04", "24.10"]
_ERRORS = [
    "E: Unable to locate package",
    "Permission denied",
    "No space left on device",
    "Device or resource busy",
    "Failed to start Network Manager",
    "dpkg was interrupted",
]


def _esc(text: str) -> str:
    """Escape for an XML attribute as the dumps do (quotes and brackets; ``&`` is handled by the callers)."""
    return text.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _sentence(rng: random.Random) -> str:
    words = rng.choices(_WORDS, k=rng.randint(8, 24))
    if rng.random() < 0.15:
        words.insert(rng.randrange(len(words)), rng.choice(_NON_ASCII))
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), f"&lt;code&gt;{rng.choice(_TAGS)}&lt;/code&gt;")
    s = " ".join(words)
    return s[0].upper() + s[1:] + rng.choice([".", ".", ".", "?", "!"])


def _body(rng: random.Random, paragraphs: int) -> str:
    """An HTML body, escaped once for XML (so its own entities, like ``&amp;amp;``, are escaped twice)."""
    parts = []
    for i in range(paragraphs):
        text = " ".join(_sentence(rng) for _ in range(rng.randint(1, 4)))
        if rng.random() < 0.1:
            text += " See &lt;a href=&quot;https://example.org/docs?page=2&amp;amp;lang=en&quot;&gt;the docs&lt;/a&gt;."
        if rng.random() < 0.1:
            text = "&lt;strong&gt;Update:&lt;/strong&gt; " + text
        parts.append(f"&lt;p&gt;{text}&lt;/p&gt;&#xA;")
        if i == 0 and rng.random() < 0.6:
            lines = "&#xA;".join(f"$ {c}" for c in rng.sample(_COMMANDS, rng.randint(1, 4)))
            parts.append(f"&#xA;&lt;pre&gt;&lt;code&gt;{lines}&#xA;&lt;/code&gt;&lt;/pre&gt;&#xA;&#xA;")
        if rng.random() < 0.12:
            items = "".join(f"&lt;li&gt;{_sentence(rng)}&lt;/li&gt;&#xA;" for _ in range(rng.randint(2, 4)))
            parts.append(f"&#xA;&lt;ul&gt;&#xA;{items}&lt;/ul&gt;&#xA;")
    return "".join(parts)


def _title(rng: random.Random) -> str:
    o, o2 = rng.sample(_OBJECTS, 2)
    title = rng.choice(_TITLE_FORMS).format(
        v=rng.choice(_VERBS),
        o=o,
        o2=o2,
        O=o[0].upper() + o[1:],
        f=rng.choice(_FAILS),
        e=rng.choice(_EVENTS),
        r=rng.choice(_RELEASES),
        err=rng.choice(_ERRORS),
    )
    if rng.random() < 0.05:
        title += f" ({rng.choice(_NON_ASCII)})"
    return _esc(title.replace("&", "&amp;"))


def _date(rng: random.Random, post: int) -> str:
    # Dates grow with the post id, as they do in a dump.
    seconds = 1_280_000_000 + post * 300 + rng.randint(0, 299)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rng.randint(0, 999):03d}"


def generate(
    folder: Path, size_gb: float, *, pipe_tags: bool = False, unique_titles: bool = False, seed: int = 0
) -> dict:
    """Write a synthetic site folder of at least ``size_gb`` GB (Posts.xml + PostLinks.xml); returns its counts.

    Args:
        folder: The site folder to create (its name is the site).
        size_gb: The least size of Posts.xml, in GB (10^9 bytes).
        pipe_tags: Write tags as ``|a|b|`` (newer dumps) instead of ``<a><b>``.
        unique_titles: End each title with `` #<Id>``, so that no two are the same text (the titles are drawn
            from templates: without it about 5 in 6 repeat an earlier one, which an import skips as stored text).
            The random draws are the same either way.
        seed: The random seed.

    Example:
        >>> generate(Path("/tmp/se/bench.stackexchange.com"), 0.001)["questions"] > 0  # doctest: +SKIP
        True
    """
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    target = int(size_gb * GB)
    questions: list[int] = []
    duplicates: list[tuple[int, int, str]] = []
    plain: list[tuple[int, int, str]] = []
    post = 0
    answers = 0
    with open(folder / "Posts.xml", "w", encoding="utf-8", newline="\n") as f:
        f.write('<?xml version="1.0" encoding="utf-8"?>\n<posts>\n')
        rows: list[str] = []
        written = f.tell()
        while written < target:
            for _ in range(2000):
                post += 1
                created = _date(rng, post)
                if not questions or rng.random() < 0.38:
                    tags = rng.sample(_TAGS, rng.randint(1, 5))
                    tag_attr = ("|" + "|".join(tags) + "|") if pipe_tags else "".join(f"&lt;{t}&gt;" for t in tags)
                    closed = ""
                    if len(questions) > 100 and rng.random() < 0.02:
                        # 1 in 20 points at a post the dump lacks (deleted), as real dumps have.
                        original = rng.choice(questions) if rng.random() < 0.95 else 10**9 + post
                        duplicates.append((post, original, created))
                        closed = f' ClosedDate="{created}"'
                    elif len(questions) > 100 and rng.random() < 0.05:
                        plain.append((post, rng.choice(questions), created))
                    questions.append(post)
                    mark = f" #{post}" if unique_titles else ""
                    rows.append(
                        f'  <row Id="{post}" PostTypeId="1" CreationDate="{created}" '
                        f'Score="{int(rng.paretovariate(1.5)) - 1 - (rng.random() < 0.1)}" '
                        f'ViewCount="{int(rng.paretovariate(1.2) * 50)}" Body="{_body(rng, rng.randint(1, 5))}" '
                        f'OwnerUserId="{rng.randint(1, 500_000)}" LastActivityDate="{created}" '
                        f'Title="{_title(rng)}{mark}" '
                        f'Tags="{tag_attr}" AnswerCount="{rng.randint(0, 4)}" CommentCount="{rng.randint(0, 9)}"'
                        f'{closed} ContentLicense="CC BY-SA 4.0" />\n'
                    )
                else:
                    answers += 1
                    rows.append(
                        f'  <row Id="{post}" PostTypeId="2" ParentId="{rng.choice(questions[-50:])}" '
                        f'CreationDate="{created}" Score="{rng.randint(-2, 40)}" '
                        f'Body="{_body(rng, rng.randint(1, 6))}" OwnerUserId="{rng.randint(1, 500_000)}" '
                        f'LastActivityDate="{created}" CommentCount="{rng.randint(0, 5)}" '
                        'ContentLicense="CC BY-SA 4.0" />\n'
                    )
            f.write("".join(rows))
            rows.clear()
            written = f.tell()
        f.write("</posts>\n")
    with open(folder / "PostLinks.xml", "w", encoding="utf-8", newline="\n") as f:
        f.write('<?xml version="1.0" encoding="utf-8"?>\n<postlinks>\n')
        links = sorted([(p, r, d, 3) for p, r, d in duplicates] + [(p, r, d, 1) for p, r, d in plain])
        for i, (p, r, d, kind) in enumerate(links, start=1):
            f.write(f'  <row Id="{i}" CreationDate="{d}" PostId="{p}" RelatedPostId="{r}" LinkTypeId="{kind}" />\n')
        f.write("</postlinks>\n")
    return {
        "posts_bytes": (folder / "Posts.xml").stat().st_size,
        "questions": len(questions),
        "answers": answers,
        "duplicate_links": len(duplicates),
        "plain_links": len(plain),
    }


# --- the measurement ------------------------------------------------------------------------------------------


def cpu_kind() -> str:
    """The vector extensions that matter here, as ``lscpu | grep -o 'avx512_bf16\\|avx2' | sort -u`` prints them."""
    try:
        out = subprocess.run(
            "lscpu | grep -o 'avx512_bf16\\|avx2' | sort -u", shell=True, capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return " ".join(out.split()) or "neither avx2 nor avx512_bf16"


def rss_bytes() -> int:
    """This process's resident set size now."""
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def parse(folder: Path, *, batch: int = 1000, progress: bool = False) -> dict:
    """Walk every question of the dump as an importer would (one batch held at a time); time it and its memory.

    Args:
        folder: The site folder.
        batch: Questions held before the batch is dropped (an importer stores it there).
        progress: Show the reader's progress bar.

    Example:
        >>> parse(Path("/tmp/se/bench.stackexchange.com"))["questions_per_s"]  # doctest: +SKIP
        25000.0
    """
    from dupq.sources import read_export

    export = read_export(folder, progress=progress)
    rss_before = rss_bytes()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    wall, cpu = time.perf_counter(), time.process_time()
    held = []
    for record in export.questions():
        held.append(record)
        if len(held) >= batch:
            held.clear()
    links = export.links()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report = export.report
    return {
        "bytes": export.size,
        "questions": report.questions,
        "other_posts": report.other_posts,
        "links": len(links),
        "links_missing": report.links_missing,
        "malformed": report.malformed,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "questions_per_s": round(report.questions / wall),
        "questions_per_cpu_s": round(report.questions / cpu),
        "mb_per_s": round(export.size / 1e6 / wall, 1),
        "rss_before_mb": round(rss_before / 1e6, 1),
        "peak_rss_growth_mb": round((max(peak_after, peak_before) - rss_before) / 1e6, 1),
        "peak_grew_during_walk": peak_after > peak_before,
    }


class _PeakRss:
    """The highest RSS seen by a thread that samples it every ``interval`` seconds while the block runs."""

    def __init__(self, interval: float = 0.02) -> None:
        import threading

        self.interval = interval
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def store(folder: Path, home: Path, *, batch: int = 2048, progress: bool = False) -> dict:
    """Import the dump into ``home`` twice without embedding (parse + store); time each run and its memory.

    Args:
        folder: The site folder.
        home: A scratch dupq home (SQLite); created if missing.
        batch: Questions per stored batch (one transaction each; the ``import_batch_size`` setting).
        progress: Show the reader's progress bar.

    Example:
        >>> store(Path("/tmp/se/bench.stackexchange.com"), Path("/tmp/se/home"))["runs"][1]["added"]  # doctest: +SKIP
        0
    """
    from dupq.service import DupQ

    runs = []
    with DupQ.open(home, seed_bank=None, import_batch_size=batch) as svc:
        for run in (1, 2):
            state = (svc.store.revision(), svc.count(), sum(svc.pair_counts().values()))
            rss_before = rss_bytes()
            wall, cpu = time.perf_counter(), time.process_time()
            with _PeakRss() as peak:
                report = svc.import_export(folder, progress=progress, embed=False).to_dict()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            after = (svc.store.revision(), svc.count(), sum(svc.pair_counts().values()))
            runs.append({
                "run": run,
                "questions": report["questions"],
                "added": report["added"],
                "existing": report["existing"],
                "same_text": report["same_text"],
                "malformed": report["malformed"],
                "links": report["links"],
                "links_missing": report["links_missing"],
                "pairs_added": report["pairs_added"],
                "pairs_existing": report["pairs_existing"],
                "pairs_self": report["pairs_self"],
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "questions_per_s": round(report["questions"] / wall),
                "added_per_s": round(report["added"] / wall),
                "rss_before_mb": round(rss_before / 1e6, 1),
                "peak_rss_growth_mb": round((peak.peak - rss_before) / 1e6, 1),
                "changed": {"revision": after[0] - state[0], "questions": after[1] - state[1],
                            "pairs": after[2] - state[2]},
            })
    second = runs[1]
    return {
        "home": str(home),
        "batch": batch,
        "runs": runs,
        "second_run_adds_and_changes_nothing": second["added"] == 0 and second["pairs_added"] == 0
        and not any(second["changed"].values()),
        "max_peak_rss_growth_mb": max(r["peak_rss_growth_mb"] for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--generate", type=Path, metavar="DIR", help="write a synthetic site folder")
    mode.add_argument("--parse", type=Path, metavar="DIR", help="measure reading a site folder")
    ap.add_argument("--size-gb", type=float, default=1.0, help="least size of the generated Posts.xml (GB)")
    ap.add_argument("--pipe-tags", action="store_true", help="generate tags as |a|b| instead of <a><b>")
    ap.add_argument("--unique-titles", action="store_true", help="generate titles that never repeat (#<Id> ends each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", type=Path, metavar="HOME",
                    help="with --parse: import into this scratch dupq home, twice, without embedding")
    ap.add_argument("--batch", type=int, default=None,
                    help="questions held at a time while parsing (default 1000), or stored a batch (default 2048)")
    ap.add_argument("--progress", action="store_true", help="show the reader's progress bar")
    ap.add_argument("--json", type=Path, help="append the result as a JSON line to this file")
    args = ap.parse_args(argv)

    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    print(f"command: {command}")
    print(f"cpu: {cpu_kind()}  ({os.cpu_count()} logical CPUs visible)")
    if args.generate:
        start = time.perf_counter()
        result = generate(args.generate, args.size_gb, pipe_tags=args.pipe_tags, unique_titles=args.unique_titles,
                          seed=args.seed)
        result["wall_s"] = round(time.perf_counter() - start, 1)
    elif args.store:
        result = store(args.parse, args.store, batch=args.batch or 2048, progress=args.progress)
        result["target_peak_rss_growth_mb"] = 300
        result["meets_target"] = result["max_peak_rss_growth_mb"] <= 300
    else:
        result = parse(args.parse, batch=args.batch or 1000, progress=args.progress)
        growth = result["peak_rss_growth_mb"]
        result["target_peak_rss_growth_mb"] = 300
        result["meets_target"] = growth <= 300
    for key, value in result.items():
        if key == "runs":
            for run in value:
                print(f"  run {run['run']}: {json.dumps(run)}")
        else:
            print(f"  {key}: {value}")
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            f.write(json.dumps({"command": command, "cpu": cpu_kind(), **result}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
