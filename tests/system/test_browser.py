"""The web pages in a real browser: Playwright driving Debian's chromium against a real running server.

One server (``dupq serve --production``) on a fresh home with the bundled bank, a tiny trained version (for
the training plots) and the fixture dev pairs; one browser. Each page state is saved as a screenshot under
``build/browser/`` (``$DUPQ_TEST_ARTIFACTS``), with ``axe.json`` and ``latency.json``.

Without /usr/bin/chromium (or ``$DUPQ_TEST_CHROMIUM``) these tests are skipped, unless ``DUPQ_TEST_REQUIRE_BROWSER=1``
(``.ci/run`` sets it) makes that a failure.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import time
import urllib.request
from typing import Any

import pytest
from support import ADMIN_TOKEN, ARTIFACTS, FIXTURES, ROOT, chromium, require_chromium, serving

pytestmark = pytest.mark.browser

AXE = ROOT / "tests" / "vendor" / "axe.min.js"
XSS = '<img src=x onerror="window.__pwned=1"> How do I reverse a list in Python without a loop?'
LATENCY_QUERIES = [
    "How can I reverse a list in Python",
    "free disk space on linux",
    "how long to boil an egg",
    "tax on savings interest",
    "visa to visit japan",
    "sort a dictionary by value",
    "cheap flights booking",
    "can I freeze bread",
    "check if a file exists in python",
    "defrost chicken safely",
    "what is a roth ira",
    "sharpen a kitchen knife",
]
#: The typing-to-painted target (p50, ms), of which the debounce (45 ms as designed) does not depend on the CPU,
#: and the GEMM rate of this kind of machine at its usual speed, which the target holds for: torch fp32 2048^3
#: on 2 threads, 100.6 and 139 GFLOP/s (docs/benchmarks.md). This shared host has also run at 26-36 GFLOP/s;
#: the p50 then rose far less than the GEMM rate fell (106 ms at 26.5), so a slow host stretches the CPU-bound
#: part of the budget by at most 2x.
LATENCY_TARGET_MS = 100.0
LATENCY_FIXED_MS = 45.0
REFERENCE_GFLOPS = 100.0
MAX_STRETCH = 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, token: str | None = None) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _post_json(url: str, body: dict[str, Any], token: str | None = None, method: str = "POST") -> Any:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    require_chromium()
    from support import tiny_version

    from dupq.config import Settings
    from dupq.service import DupQ

    home = tmp_path_factory.mktemp("browser") / "home"
    with DupQ(Settings(home=home, seed_bank="default")) as svc:  # embeds the bundled bank once
        tiny_version.install(svc)
        svc.import_pairs(FIXTURES / "train" / "dev.tsv")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DUPQ_ADMIN_TOKEN": ADMIN_TOKEN, "DUPQ_SECRET_KEY": "browser-test",
           "PYTHONPATH": str(ROOT)}
    with serving(home, env, port, start_s=60) as base:
        _post_json(base + "/api/v1/questions", {"questions": [{"text": XSS}]})
        yield base


@pytest.fixture(scope="module")
def browser(server: str):
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser, server: str):
    ctx = browser.new_context(viewport={"width": 1000, "height": 900}, base_url=server)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    yield pg
    ctx.close()
    assert not errors, errors


def shot(pg, name: str) -> None:
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def type_question(pg, text: str) -> None:
    """Type like a person (one key at a time) and wait for the live results of the whole text."""
    n = pg.evaluate("window.dupqTimings.length")
    pg.fill("#q", "")
    pg.locator("#q").press_sequentially(text, delay=15)
    pg.wait_for_function(
        "([n, q]) => window.dupqTimings.length > n && window.dupqTimings.at(-1).question === q", arg=[n, text.strip()]
    )


def pair_counts(server: str) -> dict[str, int]:
    return _get_json(server + "/admin/status.json", ADMIN_TOKEN)["pairs"]


def sign_in(pg) -> None:
    pg.goto("/admin/")
    pg.fill("#token", ADMIN_TOKEN)
    pg.get_by_role("button", name="Sign in").click()
    pg.wait_for_selector("#plots")
    pg.wait_for_function(  # the plots are drawn on request: wait until every image has arrived
        "Array.from(document.querySelectorAll('#plots img')).every(i => i.complete && i.naturalWidth > 100)"
    )


# -- the search page --------------------------------------------------------------------------------------------
def test_typing_shows_results_without_submitting(page) -> None:
    page.goto("/")
    page.evaluate("window.__sameDocument = true")
    page.locator("#q").press_sequentially("rev", delay=15)
    page.wait_for_timeout(200)
    assert page.locator("#result-list").count() == 0  # nothing sent under 4 characters
    type_question(page, "How can I reverse a list in Python")
    items = page.locator("#result-list li")
    assert items.count() == 10
    assert items.first.locator("a.qtext").inner_text() == "How do I reverse a list in Python?"
    assert items.first.locator(".badge").inner_text() == "likely duplicate"
    scores = [float(s) for s in page.locator("#result-list .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    assert page.evaluate("window.__sameDocument") is True  # no reload, no form submission
    assert "This may have been asked already" in page.locator("#ask").inner_text()
    shot(page, "01-typed-results")


def test_keyboard_moves_through_results_and_enter_opens_one(page) -> None:
    page.goto("/")
    type_question(page, "How can I check free disk space")
    page.keyboard.press("ArrowDown")
    first = page.locator("#result-list a.qtext").nth(0)
    assert first.evaluate("el => el === document.activeElement")
    page.keyboard.press("ArrowDown")
    second = page.locator("#result-list a.qtext").nth(1)
    assert second.evaluate("el => el === document.activeElement")
    text = second.inner_text()
    shot(page, "02-keyboard-focus")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    page.wait_for_url("**/q/**")
    assert page.locator("h1").inner_text() == text
    shot(page, "03-question-page")


def test_stored_and_typed_html_is_text(page) -> None:
    page.goto("/")
    type_question(page, "reverse a list in Python without a loop")
    link = page.locator("#result-list a.qtext", has_text="onerror")
    assert link.count() == 1 and link.inner_text() == XSS
    assert page.locator("#results img").count() == 0
    type_question(page, '<img src=x onerror="window.__pwned=2"><b>bold</b> reverse a list')
    assert page.locator("#results img, #results b").count() == 0
    page.wait_for_timeout(200)
    assert page.evaluate("window.__pwned") is None
    shot(page, "04-html-as-text")


def test_a_canonical_result_shows_its_closed_duplicates_as_text(page, server: str) -> None:
    """Issue 25: a cluster answers once, as its canonical question, "asked before as" its matched duplicates."""
    text = '<b id="dupbold">Flip</b> the order of a Python list <img src=x onerror="window.__pwned=3">'
    qid = _post_json(server + "/api/v1/questions", {"questions": [{"text": text}]})["ids"][0]
    url = f"{server}/api/v1/questions/{qid}/duplicate-of"
    _post_json(url, {"canonical": "py-001"}, ADMIN_TOKEN)
    try:
        page.goto("/")
        type_question(page, "Flip the order of a Python list")
        asked = page.locator("#result-list li", has=page.locator("p.asked")).first
        asked.wait_for()
        assert f"/q/{qid}" in asked.locator("p.asked a").first.get_attribute("href")
        assert text in asked.locator("p.asked").inner_text()
        assert page.locator("#results img, #dupbold").count() == 0
        ids = [a.get_attribute("href") for a in page.locator("#result-list a.qtext").all()]
        assert f"/q/{qid}" not in ids and len(ids) == len(set(ids))
        page.wait_for_timeout(200)
        assert page.evaluate("window.__pwned") is None
        shot(page, "05b-asked-before-as")
    finally:
        _post_json(url, {}, ADMIN_TOKEN, method="DELETE")
        _post_json(f"{server}/api/v1/questions/{qid}", {}, ADMIN_TOKEN, method="DELETE")


def test_feedback_and_undo_store_and_remove_a_pair(page, server: str) -> None:
    page.goto("/")
    type_question(page, "How do I boil an egg so the yolk stays runny")
    before = pair_counts(server).get("feedback", 0)
    first = page.locator("#result-list li").first
    first.get_by_role("button", name="Different").click()
    page.wait_for_selector("#result-list .done")
    assert "Saved: different question." in first.inner_text()
    assert pair_counts(server).get("feedback", 0) == before + 1
    shot(page, "05-feedback-saved")
    first.get_by_role("button", name="Undo").click()
    first.locator("form.fb").wait_for()
    assert pair_counts(server).get("feedback", 0) == before
    shot(page, "06-feedback-undone")


def test_ask_flow_this_is_mine_or_add_it(page, server: str) -> None:
    page.goto("/")
    type_question(page, "What's the quickest way to reverse a Python list?")
    dups = page.locator("#result-list li.dup")
    n_dups = dups.count()
    assert n_dups >= 1
    before = pair_counts(server).get("feedback", 0)
    dups.first.get_by_role("button", name="This is my question").click()
    page.wait_for_selector("#result-list .done")
    assert pair_counts(server).get("feedback", 0) == before + 1
    questions = _get_json(server + "/healthz")["questions"]
    page.get_by_role("button", name="Mine is different — add it").click()
    page.wait_for_selector("#ask .ok")
    assert "Added your question" in page.locator("#ask").inner_text()
    assert _get_json(server + "/healthz")["questions"] == questions + 1
    assert pair_counts(server).get("feedback", 0) == before + 1 + n_dups  # a negative per shown likely duplicate
    shot(page, "07-ask-added")


def test_phone_width_keeps_controls_whole(browser, server: str) -> None:
    ctx = browser.new_context(viewport={"width": 375, "height": 800}, base_url=server)
    pg = ctx.new_page()
    pg.goto("/")
    type_question(pg, "Which command shows how much storage is left on my drive and how do I read its output?")
    assert pg.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling
    heights = pg.evaluate(
        "Array.from(document.querySelectorAll('#results button')).map(b => [b.getBoundingClientRect().height,"
        " parseFloat(getComputedStyle(b).lineHeight) || 20, b.scrollWidth <= b.clientWidth + 1])"
    )
    assert heights and all(h < 2 * lh and fits for h, lh, fits in heights)  # one line each, nothing clipped
    tops = pg.evaluate(
        "Array.from(document.querySelectorAll('#result-list form.fb')).map(f =>"
        " Array.from(f.querySelectorAll('button')).map(b => Math.round(b.getBoundingClientRect().top)))"
    )
    assert all(len(set(t)) == 1 for t in tops)  # each result's two buttons side by side
    shot(pg, "08-phone-375")
    violations = _axe(pg)
    sign_in(pg)
    assert pg.evaluate("document.documentElement.scrollWidth") <= 375
    shot(pg, "08b-phone-375-admin")
    violations += _axe(pg)
    pg.goto("/admin/review")
    assert pg.evaluate("document.documentElement.scrollWidth") <= 375
    shot(pg, "08c-phone-375-review")
    violations += _axe(pg)
    ctx.close()
    assert not [v for v in violations if v["impact"] in ("serious", "critical")], violations


def test_page_works_without_javascript(browser, server: str) -> None:
    ctx = browser.new_context(java_script_enabled=False, viewport={"width": 1000, "height": 900}, base_url=server)
    pg = ctx.new_page()
    pg.goto("/")
    pg.fill("#q", "How can I reverse a list in Python?")
    pg.keyboard.press("Enter")
    pg.wait_for_url("**/?q=*")
    assert pg.locator("#result-list li").count() == 10
    shot(pg, "09-nojs-results")
    before = pair_counts(server).get("feedback", 0)
    pg.locator("#result-list li").first.get_by_role("button", name="This is my question").click()
    pg.wait_for_selector(".flash.ok")
    assert pair_counts(server).get("feedback", 0) == before + 1
    shot(pg, "10-nojs-feedback")
    pg.get_by_role("button", name="Undo that feedback").click()
    pg.wait_for_selector("text=Feedback undone.")
    assert pair_counts(server).get("feedback", 0) == before
    ctx.close()


# -- moderators -----------------------------------------------------------------------------------------------
def test_review_queue_labels_a_pair(page, server: str) -> None:
    page.goto("/admin/review")
    assert page.url.endswith("/admin/review") and page.locator("#token").is_visible()  # signed out: the sign-in form
    sign_in(page)
    page.get_by_role("link", name="Review queue", exact=True).click()
    page.wait_for_selector("#queue li")
    first = page.locator("#queue li").first
    pair = first.locator("blockquote").all_inner_texts()
    before = pair_counts(server).get("review", 0)
    shot(page, "11-review-queue")
    page.keyboard.press("s")
    first.locator(".done").wait_for()
    assert pair_counts(server).get("review", 0) == before + 1
    assert "active" in page.locator("#queue li").nth(1).get_attribute("class")
    page.keyboard.press("d")
    page.locator("#queue li").nth(1).locator(".done").wait_for()
    assert pair_counts(server).get("review", 0) == before + 2
    shot(page, "12-review-labelled")
    page.keyboard.press("u")
    page.locator("#queue li").nth(1).locator("form.label").wait_for()
    assert pair_counts(server).get("review", 0) == before + 1
    page.reload()  # a labelled pair leaves the queue
    assert page.locator("#queue li").first.locator("blockquote").all_inner_texts() != pair


def test_admin_plots_render(page) -> None:
    sign_in(page)
    imgs = page.locator("#plots img")
    assert imgs.count() == 4
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#plots img')).every(i => i.complete && i.naturalWidth > 100)"
    )
    shot(page, "13-admin-plots")


# -- accessibility and speed --------------------------------------------------------------------------------------
def _axe(pg) -> list[dict[str, Any]]:
    pg.add_script_tag(path=str(AXE))
    result = pg.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
    ]


def test_axe_finds_no_serious_violations(browser, server: str) -> None:
    report: dict[str, list[dict[str, Any]]] = {}
    for js in (True, False):
        ctx = browser.new_context(viewport={"width": 1000, "height": 900}, base_url=server, java_script_enabled=js)
        pg = ctx.new_page()
        if js:
            pg.goto("/")
            report["search (empty)"] = _axe(pg)
            pg.goto("/")
            type_question(pg, "How can I reverse a list in Python")
            pg.locator("#result-list li").first.get_by_role("button", name="Different").click()
            pg.wait_for_selector("#result-list .done")
            report["search (live results, feedback saved)"] = _axe(pg)
            pg.goto("/q/py-001")
            report["question page"] = _axe(pg)
            sign_in(pg)
            report["admin"] = _axe(pg)
            pg.goto("/admin/review")
            report["review queue"] = _axe(pg)
        else:
            pg.goto("/?q=How+do+I+boil+an+egg")
            # axe needs script: run it with JavaScript on, over the no-JS page's server-rendered HTML.
            html = pg.content()
            ctx.close()
            ctx = browser.new_context(viewport={"width": 1000, "height": 900}, base_url=server)
            pg = ctx.new_page()
            pg.route("**/static/search.js", lambda route: route.abort())
            pg.goto("/?q=How+do+I+boil+an+egg")
            assert pg.content().count("<li ") == html.count("<li ")
            report["search (no JavaScript)"] = _axe(pg)
        ctx.close()
    (ARTIFACTS / "axe.json").write_text(json.dumps(report, indent=2))
    serious = {page: [v for v in vs if v["impact"] in ("serious", "critical")] for page, vs in report.items()}
    print("\naxe violations by page:", {p: [(v["id"], v["impact"]) for v in vs] for p, vs in report.items()})
    assert not any(serious.values()), serious


def gemm_gflops(reps: int = 5) -> float:
    """This host's fp32 GEMM rate now (torch 2048^3 on 2 threads, as ``scripts/research/cpu_limits.py``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        a @ b
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        return 2 * 2048**3 * reps / (time.perf_counter() - t0) / 1e9
    finally:
        torch.set_num_threads(threads)


def latency_budget_ms(target_ms: float, gflops: float) -> float:
    """The target on a host running below its usual speed: the debounce part is fixed, the rest is CPU-bound and
    stretched by how far the GEMM rate fell short of the reference, at most ``MAX_STRETCH`` times."""
    stretch = min(MAX_STRETCH, max(1.0, REFERENCE_GFLOPS / gflops))
    return LATENCY_FIXED_MS + (target_ms - LATENCY_FIXED_MS) * stretch


def test_latency_budget_stretches_only_the_cpu_part() -> None:
    assert latency_budget_ms(100, 139) == latency_budget_ms(100, 100) == 100
    assert latency_budget_ms(100, 80) == 45 + 55 * 1.25
    assert latency_budget_ms(100, 26.5) == latency_budget_ms(100, 50) == 155


def test_typing_to_painted_latency(page) -> None:
    """From the last keystroke to the frame with the results painted (performance marks), on the bundled bank.

    The p50 must meet the target at this machine's usual speed; on a host measured slower just before (its GEMM
    rate), the CPU-bound part of the budget stretches by the same factor, and the report says so.
    """
    target = float(os.environ.get("DUPQ_TEST_LATENCY_P50_MS", LATENCY_TARGET_MS))
    gflops = gemm_gflops()
    budget = latency_budget_ms(target, gflops)
    page.goto("/")
    type_question(page, "warm up the connection")
    page.evaluate("window.dupqTimings = []")
    for q in LATENCY_QUERIES:
        type_question(page, q)
    timings = [t for t in page.evaluate("window.dupqTimings") if t["question"] in LATENCY_QUERIES]
    finals = {t["question"]: t for t in timings}  # the paint for the finished question (not a mid-typing one)
    ms = sorted(t["ms"] for t in finals.values())
    p50 = statistics.median(ms)
    parts = {k: round(statistics.median(t[k] for t in finals.values()), 1)
             for k in ("wait_ms", "fetch_ms", "paint_ms", "server_ms")}
    report = {"p50_ms": round(p50, 1), "max_ms": round(ms[-1], 1), "n": len(ms), "median_parts": parts,
              "target_p50_ms": target, "gemm_gflops": round(gflops, 1), "reference_gflops": REFERENCE_GFLOPS,
              "budget_p50_ms": round(budget, 1), "all": list(finals.values())}
    (ARTIFACTS / "latency.json").write_text(json.dumps(report, indent=2))
    print(f"\ntyping -> painted: p50 {p50:.1f} ms over {len(ms)} questions (median parts {parts}); budget "
          f"{budget:.1f} ms (target {target:.0f} ms at {REFERENCE_GFLOPS:.0f} GFLOP/s, this host {gflops:.1f})")
    assert len(ms) == len(LATENCY_QUERIES)
    assert p50 <= budget, f"p50 {p50:.1f} ms over the budget {budget:.1f} ms (host at {gflops:.1f} GFLOP/s)"
