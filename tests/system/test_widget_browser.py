"""The embeddable widget in a real browser: a community's page on another origin, with dupq's ``/widget.js``.

Two real servers: dupq (``dupq serve --production``, the bundled bank, ``DUPQ_CORS_ORIGINS`` listing the host
page's origin) and a plain static server on another port holding the host page. The same static server is
also reached as ``http://localhost:PORT``: the same page from an origin that is *not* listed, whose searches the
browser must refuse. Screenshots go to ``build/browser/`` (``$DUPQ_TEST_ARTIFACTS``) as ``widget-*.png``, with
``widget-axe.json`` and ``widget-latency.json``. Skipped without chromium, as tests/system/test_browser.py.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from support import ARTIFACTS, ROOT, chromium, require_chromium, serving
from test_browser import (
    AXE,
    LATENCY_FIXED_MS,
    LATENCY_QUERIES,
    REFERENCE_GFLOPS,
    XSS,
    _free_port,
    _post_json,
    gemm_gflops,
    latency_budget_ms,
)

pytestmark = pytest.mark.browser

#: The issue's target for the widget: p50 typed-to-painted (ms), on the bundled bank, cross-origin.
WIDGET_LATENCY_TARGET_MS = 150.0
MEASURE = "dupq-widget:typed-to-painted"
FORUM_URL = "https://forum.example/t/descale-a-kettle/42"
KETTLE = "How do I descale a kettle with vinegar?"
BAD_URL_TEXT = "Can I clean a kettle with lemon juice instead of vinegar?"
#: The host page's search-scoped key, created by ``dupq keys create`` (with the host's origin) once dupq serves.
KEY: dict[str, str] = {}
FILTER = {"site": "forum.example"}

#: The community's page: its own fonts and colours (which the widget inherits), a theme variable, and rules
#: that would wreck the widget's list if a host's styles could reach into it (the shadow root stops them).
HOST_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Ask the community</title>
<style>
  body {{ font-family: Georgia, serif; color: rgb(26, 42, 68); background: rgb(253, 248, 236); margin: 0; }}
  main {{ max-width: 42rem; margin: 0 auto; padding: 1rem; }}
  label {{ display: block; font-weight: bold; margin: 1rem 0 .25rem; }}
  input, textarea {{ font: inherit; width: 100%; box-sizing: border-box; padding: .5rem; }}
  [data-dupq-widget] {{ --dupq-radius: 10px; }}
  a, [role=option] {{ display: none !important; }}
  span {{ color: red !important; font-size: 40px !important; }}
</style></head>
<body><main>
  <h1>Ask a question</h1>
  <form action="#" onsubmit="return false">
    <label for="title">Title</label>
    <input id="title" name="title" autocomplete="off">
    <label for="body">Details</label>
    <textarea id="body" name="body" rows="4"></textarea>
  </form>
</main>
<script src="{dupq}/widget.js" data-dupq-input="#title" {extra} async></script>
</body></html>
"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def host_port() -> int:
    return _free_port()


@pytest.fixture(scope="module")
def dupq(tmp_path_factory: pytest.TempPathFactory, host_port: int):
    """dupq serving the bundled bank, with the host page's 127.0.0.1 origin (only) in ``cors_origins``."""
    require_chromium()
    home = tmp_path_factory.mktemp("widget") / "home"
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DUPQ_SECRET_KEY": "widget-test", "PYTHONPATH": str(ROOT),
           "DUPQ_CORS_ORIGINS": f"http://127.0.0.1:{host_port}"}
    with serving(home, env, port) as base:
        # A search-scoped key allowed on the host's origin only (issue 26: the widget's key), made while dupq serves.
        made = subprocess.run(
            [sys.executable, "-m", "dupq.cli", "--home", str(home), "keys", "create", "--scope", "search", "--name",
             "forum-widget", "--origin", f"http://127.0.0.1:{host_port}"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr
        KEY["search"] = made.stdout.strip().splitlines()[-1]
        _post_json(base + "/api/v1/questions", {"questions": [
            {"text": XSS},
            {"text": KETTLE, "meta": {"url": FORUM_URL, "site": "forum.example"}},
            {"text": BAD_URL_TEXT, "meta": {"url": "javascript:window.__pwned=3"}},
        ]})
        yield base


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, dupq: str, host_port: int):
    """The static server of the community's pages; yields its listed origin (``http://127.0.0.1:PORT``)."""
    root = tmp_path_factory.mktemp("host")
    (root / "ask.html").write_text(HOST_PAGE.format(dupq=dupq, extra=""))
    (root / "ask-k3.html").write_text(HOST_PAGE.format(dupq=dupq, extra='data-dupq-k="3"'))
    (root / "ask-scoped.html").write_text(HOST_PAGE.format(
        dupq=dupq, extra=f'data-dupq-key="{KEY["search"]}" data-dupq-k="4" data-dupq-filter=\'{json.dumps(FILTER)}\''))
    (root / "ask-broken-filter.html").write_text(HOST_PAGE.format(dupq=dupq, extra="data-dupq-filter='{site:'"))
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", host_port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{host_port}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(host: str):
    with chromium() as b:
        yield b


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1000, "height": 800})
    yield ctx
    ctx.close()


@pytest.fixture
def page(context, host: str):
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    pg.goto(host + "/ask.html")
    pg.wait_for_function("document.querySelector('[data-dupq-widget]')?.shadowRoot")
    yield pg
    assert not errors, errors


OPTIONS = "[data-dupq-widget] [role=option]"  # Playwright's CSS goes through open shadow roots


def painted(pg) -> list[dict[str, Any]]:
    return pg.evaluate(
        f"performance.getEntriesByName('{MEASURE}').map(e => ({{ms: e.duration, ...e.detail}}))"
    )


def type_title(pg, text: str) -> None:
    """Type like a person (one key at a time) and wait until the results for the whole text are painted."""
    n = len(painted(pg))
    pg.fill("#title", "")
    pg.locator("#title").press_sequentially(text, delay=15)
    pg.wait_for_function(
        f"([n, q]) => {{ const e = performance.getEntriesByName('{MEASURE}');"
        " return e.length > n && e.at(-1).detail.question === q; }",
        arg=[n, " ".join(text.split())],
    )


def shot(pg, name: str) -> None:
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def shadow(pg, expr: str) -> Any:
    """Evaluate ``expr`` with ``root`` bound to the widget's (open) shadow root."""
    return pg.evaluate(f"(() => {{ const root = document.querySelector('[data-dupq-widget]').shadowRoot; "
                       f"return {expr}; }})()")


# -- results under the field ----------------------------------------------------------------------------------------
def test_results_appear_under_the_field_while_typing(page, dupq: str) -> None:
    page.locator("#title").press_sequentially("rev", delay=15)
    page.wait_for_timeout(200)
    assert page.locator(OPTIONS).count() == 0  # nothing asked under 4 characters
    assert shadow(page, "root.querySelector('.box').hidden") is True
    type_title(page, "How can I reverse a list in Python")
    options = page.locator(OPTIONS)
    assert options.count() == 5  # data-dupq-k's default
    assert options.first.locator(".t").inner_text() == "How do I reverse a list in Python?"
    assert options.first.locator(".b").inner_text() == "likely duplicate"
    assert options.first.get_attribute("href") == f"{dupq}/q/py-012"  # no meta.url: dupq's own page
    field, box = page.locator("#title").bounding_box(), page.locator("[data-dupq-widget]").bounding_box()
    bottom = field["y"] + field["height"]
    assert abs(box["x"] - field["x"]) < 1 and bottom <= box["y"] < bottom + 30  # right under the field
    assert "5 similar questions already asked" in shadow(page, "root.querySelector('[aria-live=polite]').textContent")
    # The host's fonts and colours reach the list; its rules against a, [role=option] and span do not.
    style = options.first.evaluate("o => [getComputedStyle(o).fontFamily, getComputedStyle(o).color,"
                                   " getComputedStyle(o).display, getComputedStyle(o.querySelector('.t')).fontSize]")
    assert "Georgia" in style[0] and style[1] == "rgb(26, 42, 68)" and style[2] == "flex" and style[3] != "40px"
    assert page.evaluate("document.cookie") == ""
    shot(page, "widget-01-desktop")


def test_k_and_links_to_the_community_url(context, host: str, dupq: str) -> None:
    pg = context.new_page()
    pg.goto(host + "/ask-k3.html")
    pg.wait_for_function("document.querySelector('[data-dupq-widget]')?.shadowRoot")
    type_title(pg, "descale my kettle with vinegar")
    options = pg.locator(OPTIONS)
    assert options.count() == 3
    hrefs = {o.locator(".t").inner_text(): o.get_attribute("href") for o in options.all()}
    assert hrefs[KETTLE] == FORUM_URL  # meta.url: the community's own page
    assert hrefs[BAD_URL_TEXT].startswith(dupq + "/q/")  # a javascript: url falls back to dupq's page
    assert options.first.get_attribute("target") == "_blank"  # the person's draft stays open
    assert "noopener" in options.first.get_attribute("rel")


def test_keyboard_moves_through_results_enter_opens_escape_returns(page, context, dupq: str) -> None:
    type_title(page, "How can I check free disk space")
    focused = "root.activeElement && [root.activeElement.getAttribute('role'), " \
              "root.activeElement.getAttribute('aria-selected'), root.activeElement.querySelector('.t').textContent]"
    page.keyboard.press("ArrowDown")
    first = shadow(page, focused)
    assert first[:2] == ["option", "true"]
    page.keyboard.press("ArrowDown")
    second = shadow(page, focused)
    assert second[:2] == ["option", "true"] and second[2] != first[2]
    assert shadow(page, "root.querySelectorAll('[aria-selected=true]').length") == 1
    shot(page, "widget-02-keyboard")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    assert page.evaluate("document.activeElement.id") == "title"
    page.keyboard.press("End")  # in the field: the host's (caret), not the list's
    assert page.evaluate("document.activeElement.id") == "title"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Escape")
    assert page.evaluate("document.activeElement.id") == "title"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    with context.expect_page() as opened:
        page.keyboard.press("Enter")
    new = opened.value
    new.wait_for_load_state()
    assert new.url.startswith(dupq + "/q/")
    assert new.locator("h1").inner_text() == second[2]
    new.close()
    page.keyboard.press("Escape")  # back in the field, Escape closes the list
    assert page.evaluate("document.activeElement.id") == "title"
    page.keyboard.press("Escape")
    assert shadow(page, "root.querySelector('.box').hidden") is True
    assert page.locator(OPTIONS).count() == 0


def test_stored_and_typed_markup_is_text(page) -> None:
    type_title(page, "reverse a list in Python without a loop")
    option = page.locator(OPTIONS, has_text="onerror")
    assert option.count() == 1 and option.locator(".t").inner_text() == XSS
    type_title(page, '<img src=x onerror="window.__pwned=2"><b>bold</b> reverse a list')
    assert shadow(page, "root.querySelectorAll('img, b, script').length") == 0
    page.wait_for_timeout(200)
    assert page.evaluate("window.__pwned") is None
    shot(page, "widget-03-markup-as-text")


def test_an_origin_not_listed_gets_no_results(browser, host: str, dupq: str) -> None:
    """The same page from http://localhost:PORT: not in cors_origins, so the preflight carries no CORS header and
    the browser refuses to send the search; nothing is shown, the console says why."""
    unlisted = host.replace("127.0.0.1", "localhost")
    ctx = browser.new_context(viewport={"width": 1000, "height": 800})
    pg = ctx.new_page()
    console: list[str] = []
    failed: list[str] = []
    answered: list[str] = []
    pg.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    pg.on("requestfailed", lambda r: failed.append(r.url))
    pg.on("response", lambda r: answered.append(f"{r.request.method} {r.url}"))
    pg.goto(unlisted + "/ask.html")
    pg.wait_for_function("document.querySelector('[data-dupq-widget]')?.shadowRoot")
    pg.locator("#title").press_sequentially("How can I reverse a list in Python", delay=15)
    deadline = time.time() + 10
    while not any("blocked by CORS policy" in c for c in console) and time.time() < deadline:
        pg.wait_for_timeout(100)
    pg.wait_for_timeout(300)
    assert any("blocked by CORS policy" in c and "Access-Control-Allow-Origin" in c for c in console), console
    assert any("dupq widget: search failed" in c for c in console), console
    assert f"{dupq}/api/v1/search" in failed
    assert f"POST {dupq}/api/v1/search" not in answered  # the browser never sent the search itself
    assert pg.locator(OPTIONS).count() == 0
    assert pg.evaluate("performance.getEntriesByName('dupq-widget:typed-to-painted').length") == 0
    shot(pg, "widget-04-unlisted-origin")
    ctx.close()


def test_key_and_filter_travel_with_the_search_and_no_cookie(context, host: str, dupq: str) -> None:
    """``data-dupq-key`` goes as ``Authorization: Bearer`` (a header the preflight must allow), ``data-dupq-filter``
    as the body's ``filter``, ``data-dupq-k`` as ``k``; the browser's cookies for dupq's host stay home."""
    context.add_cookies([{"name": "session", "value": "visitor", "url": dupq}])
    pg = context.new_page()
    console: list[str] = []
    pg.on("console", lambda m: console.append(m.text))
    sent: list[Any] = []
    pg.on("request", lambda r: sent.append(r) if r.method == "POST" and r.url == f"{dupq}/api/v1/search" else None)
    pg.goto(host + "/ask-scoped.html")
    pg.wait_for_function("document.querySelector('[data-dupq-widget]')?.shadowRoot")
    typed = "How do I descale my kettle"
    # A loaded machine may pause mid-typing long enough for a search of a prefix: wait for the whole question's.
    with pg.expect_response(lambda r: r.url == f"{dupq}/api/v1/search" and r.request.method == "POST"
                            and (r.request.post_data_json or {}).get("question") == typed) as answer:
        pg.locator("#title").press_sequentially(typed, delay=15)
    # the search-scoped key, on the origin it is allowed on, and the scoped search: only the forum's question
    assert answer.value.status == 200, answer.value.text()
    assert [r["text"] for r in answer.value.json()["results"]] == [KETTLE]
    request = answer.value.request
    assert all(r.all_headers().get("authorization") == f"Bearer {KEY['search']}" for r in sent)
    headers = request.all_headers()
    assert headers["authorization"] == f"Bearer {KEY['search']}"
    assert "cookie" not in headers
    assert request.post_data_json == {"question": typed, "k": 4, "filter": FILTER}
    pg.locator(OPTIONS).first.wait_for(timeout=5000)
    assert pg.locator(OPTIONS).count() == 1 and KETTLE in pg.locator(OPTIONS).first.text_content()
    assert not any("CORS" in c for c in console), console  # the preflight allowed the key and the JSON type


def test_a_broken_filter_keeps_the_widget_off(context, host: str) -> None:
    pg = context.new_page()
    console: list[str] = []
    pg.on("console", lambda m: console.append(m.text))
    pg.goto(host + "/ask-broken-filter.html")
    pg.wait_for_function("() => performance.getEntriesByType('resource').some(e => e.name.endsWith('/widget.js'))")
    pg.wait_for_timeout(300)
    assert pg.locator("[data-dupq-widget]").count() == 0  # never an unscoped search instead
    assert any("data-dupq-filter is not a JSON object" in c for c in console), console


# -- accessibility, phones, speed -----------------------------------------------------------------------------------
def _axe(pg) -> list[dict[str, Any]]:
    """axe-core over the host page, the widget's open shadow root included (axe goes into open shadow roots)."""
    pg.add_script_tag(path=str(AXE))
    result = pg.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
    ]


def test_axe_and_phone_width(browser, page, host: str) -> None:
    report: dict[str, list[dict[str, Any]]] = {}
    type_title(page, "How can I reverse a list in Python")
    assert page.locator(OPTIONS).count() == 5
    report["desktop, results"] = _axe(page)
    page.keyboard.press("ArrowDown")
    report["desktop, option focused"] = _axe(page)
    inside = page.evaluate(  # the nodes axe checked for ARIA roles, by their path (one step per shadow root)
        "axe.run(document, {runOnly: ['aria-allowed-role', 'aria-required-children', 'aria-allowed-attr']})"
        ".then(r => r.passes.flatMap(p => p.nodes.map(n => n.target)))"
    )
    options = [t for t in inside if len(t[0]) == 2 and t[0][1].startswith("a:")]  # [[host, node in its shadow]]
    assert len({str(t) for t in options}) == 5  # axe went into the widget's shadow root

    ctx = browser.new_context(viewport={"width": 375, "height": 800}, is_mobile=True, has_touch=True)
    pg = ctx.new_page()
    pg.goto(host + "/ask.html")
    pg.wait_for_function("document.querySelector('[data-dupq-widget]')?.shadowRoot")
    type_title(pg, "Which command shows how much storage is left on my drive and how do I read its output?")
    assert pg.locator(OPTIONS).count() == 5
    assert pg.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling
    boxes = [o.bounding_box() for o in pg.locator(OPTIONS).all()]
    assert all(b["x"] >= 0 and b["x"] + b["width"] <= 375 and b["height"] >= 40 for b in boxes)  # whole, tappable
    size = pg.locator(OPTIONS).first.locator(".t").evaluate("t => parseFloat(getComputedStyle(t).fontSize)")
    assert size >= 16  # the host's 16 px text, not shrunk
    shot(pg, "widget-05-phone-375")
    report["phone, results"] = _axe(pg)
    ctx.close()
    (ARTIFACTS / "widget-axe.json").write_text(json.dumps(report, indent=2))
    print("\nwidget axe violations:", {p: [(v["id"], v["impact"]) for v in vs] for p, vs in report.items()})
    serious = {p: [v for v in vs if v["impact"] in ("serious", "critical")] for p, vs in report.items()}
    assert not any(serious.values()), serious


def test_typed_to_painted_latency(page) -> None:
    """From the last keystroke to the frame with the widget's results painted, on the host page (cross-origin:
    the preflight is cached after the first search), bundled bank; p50 within the target, stretched for a slow
    host exactly as tests/system/test_browser.py does."""
    target = float(os.environ.get("DUPQ_TEST_WIDGET_LATENCY_P50_MS", WIDGET_LATENCY_TARGET_MS))
    gflops = gemm_gflops()
    budget = latency_budget_ms(target, gflops)
    type_title(page, "warm up the connection")
    page.evaluate("performance.clearMeasures()")
    for q in LATENCY_QUERIES:
        type_title(page, q)
    finals = {t["question"]: t for t in painted(page) if t["question"] in LATENCY_QUERIES}
    ms = sorted(t["ms"] for t in finals.values())
    p50 = statistics.median(ms)
    parts = {k: round(statistics.median(t[k] for t in finals.values()), 1)
             for k in ("wait_ms", "fetch_ms", "paint_ms", "server_ms")}
    report = {"p50_ms": round(p50, 1), "max_ms": round(ms[-1], 1), "n": len(ms), "median_parts": parts,
              "target_p50_ms": target,
              "fixed_ms": LATENCY_FIXED_MS, "gemm_gflops": round(gflops, 1), "reference_gflops": REFERENCE_GFLOPS,
              "budget_p50_ms": round(budget, 1), "all": list(finals.values())}
    (ARTIFACTS / "widget-latency.json").write_text(json.dumps(report, indent=2))
    print(f"\nwidget typing -> painted: p50 {p50:.1f} ms, max {ms[-1]:.1f} ms over {len(ms)} questions (median parts "
          f"{parts}); budget "
          f"{budget:.1f} ms (target {target:.0f} ms at {REFERENCE_GFLOPS:.0f} GFLOP/s, this host {gflops:.1f})")
    assert len(ms) == len(LATENCY_QUERIES)
    assert p50 <= budget, f"p50 {p50:.1f} ms over the budget {budget:.1f} ms (host at {gflops:.1f} GFLOP/s)"
