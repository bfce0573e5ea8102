// dupq search page: results as you type, feedback in place with undo, keyboard navigation.
// Everything from the server or the person is inserted with textContent / value, never as HTML.
// Timing: each paint of live results records performance.measure("dupq:typed-to-painted") from the last
// keystroke to the frame after the results were inserted; window.dupqTimings keeps the durations (ms).
(() => {
  "use strict";
  const form = document.getElementById("search");
  if (!form || !window.fetch || !window.AbortController) return;
  const input = document.getElementById("q");
  const kInput = document.getElementById("k");
  const scopeInputs = [...document.querySelectorAll("input[data-field]")];
  function scopeFilter() {  // as web/pages.py page_filter: comma-separated values, any of which may match
    const f = {};
    for (const i of scopeInputs) {
      const vals = i.value.split(",").map((v) => v.trim()).filter((v) => v);
      if (vals.length) f[i.dataset.field] = { any: vals };
    }
    return Object.keys(f).length ? f : null;
  }
  const results = document.getElementById("results");
  const cfg = form.dataset;
  const MIN = Number(cfg.min || 4);
  const DEBOUNCE = Number(cfg.debounce || 45);
  // The page's CSRF token (web/csrf.py): sent with every form post, as a header and in each form built here.
  const CSRF = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const JSON_HEADERS = { Accept: "application/json", "X-CSRFToken": CSRF };
  window.dupqTimings = [];

  let timer = 0;
  let inflight = null;
  let lastInput = 0;
  let shownFor = input.value.trim();

  const el = (tag, props = {}, ...children) => {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "class") n.className = v;
      else if (k === "text") n.textContent = v;
      else n.setAttribute(k, v);
    }
    for (const c of children) if (c != null) n.append(c);
    return n;
  };
  const hidden = (name, value) => { const i = el("input", { type: "hidden", name }); i.value = value; return i; };
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

  function feedbackForm(question, r, model) {
    const f = el("form", { class: "fb", method: "post", action: cfg.feedback });
    f.append(hidden("csrf_token", CSRF), hidden("question", question), hidden("id", r.id), hidden("model", model));
    const same = el("button", { class: "small", name: "label", value: "1" },
      r.duplicate ? "This is my question" : "Same question", el("span", { class: "vh", text: `: ${r.text}` }));
    const diff = el("button", { class: "small", name: "label", value: "0" },
      "Different", el("span", { class: "vh", text: ` question: ${r.text}` }));
    f.append(same, diff);
    return f;
  }

  // A canonical question whose closed duplicates matched: "asked before as “…”, “…”" (texts as text, never HTML).
  function askedBefore(dups) {
    const p = el("p", { class: "asked" }, "asked before as ");
    dups.slice(0, 3).forEach((d, i) => {
      if (i) p.append(", ");
      p.append(el("a", { href: cfg.question.replace("__ID__", encodeURIComponent(d.id)), text: `“${d.text}”` }));
    });
    if (dups.length > 3) p.append(` and ${dups.length - 3} more`);
    return p;
  }

  function render(question, data) {
    const likely = data.results.filter((r) => r.duplicate);
    const summary = el("p", { id: "summary" },
      `${plural(data.results.length, "stored question", "stored questions")}, best first; ` +
      `${plural(likely.length, "likely duplicate", "likely duplicates")} `,
      el("span", { class: "score", text: `(model ${data.model}, threshold ${data.threshold == null ? "none" : data.threshold.toFixed(3)}, ${data.took_ms.toFixed(1)} ms)` }));
    const nodes = [summary];
    if (data.results.length) {
      const list = el("ol", { class: "results", id: "result-list" });
      for (const r of data.results) {
        const li = el("li", r.duplicate ? { class: "dup" } : {});
        const link = el("a", { class: "qtext", href: cfg.question.replace("__ID__", encodeURIComponent(r.id)), text: r.text });
        const meta = el("div", { class: "meta" },
          el("span", { class: "score", title: "similarity to your question", text: r.score.toFixed(3) }),
          r.duplicate ? el("span", { class: "badge", text: "likely duplicate" }) : null,
          feedbackForm(question, r, data.model));
        li.append(link);
        if (r.duplicates && r.duplicates.length) li.append(askedBefore(r.duplicates));
        li.append(meta);
        list.append(li);
      }
      nodes.push(list);
    } else {
      nodes.push(el("p", { text: "The bank is empty." }));
    }
    const ask = el("div", { id: "ask", class: likely.length ? "ask found" : "ask" });
    if (likely.length) {
      ask.append(el("p", {}, el("strong", { text: "This may have been asked already:" }),
        ` ${plural(likely.length, "stored question looks", "stored questions look")} like yours (marked “likely duplicate”). ` +
        "If one asks the same thing, choose “This is my question” on it. If not:"));
    } else {
      ask.append(el("p", { text: "No stored question looks like a duplicate of yours." }));
    }
    const add = el("form", { method: "post", action: cfg.add, class: "addq" }, hidden("csrf_token", CSRF), hidden("question", question),
      hidden("model", data.model));
    for (const r of likely) add.append(hidden("dup", r.id));
    add.append(el("button", { type: "submit", class: "primary", text: likely.length ? "Mine is different — add it" : "Add my question to the bank" }));
    ask.append(add);
    nodes.push(ask);
    results.replaceChildren(...nodes);
    shownFor = question;
  }

  function showMessage(text, cls) {
    results.replaceChildren(el("p", { id: "summary", class: cls || "", text }));
  }

  async function search(started) {
    const question = input.value.trim();
    if (inflight) inflight.abort();
    inflight = null;
    if (question.length < MIN) {
      if (question.length === 0) results.replaceChildren();
      else showMessage(`Keep typing: results start at ${MIN} characters.`, "hint");
      return;
    }
    const ctrl = new AbortController();
    inflight = ctrl;
    const k = Number(kInput.value) || 10;
    const sent = performance.now();
    try {
      const r = await fetch(cfg.api, {
        method: "POST",
        headers: { ...JSON_HEADERS, "Content-Type": "application/json" },
        body: JSON.stringify(scopeFilter() ? { question, k, filter: scopeFilter() } : { question, k }),
        signal: ctrl.signal,
      });
      const data = await r.json();
      if (ctrl !== inflight) return; // a newer request owns the results
      inflight = null;
      if (!r.ok) { showMessage(data.error ? data.error.message : `search failed (${r.status})`, "error"); return; }
      const received = performance.now();
      render(question, data);
      const url = new URL(window.location.href);
      url.searchParams.set("q", question);
      for (const i of scopeInputs) {
        if (i.value.trim()) url.searchParams.set(i.name, i.value.trim()); else url.searchParams.delete(i.name);
      }
      history.replaceState(null, "", url);
      requestAnimationFrame(() => setTimeout(() => {  // the frame with the results has been painted
        const end = performance.now();
        performance.measure("dupq:typed-to-painted", { start: started, end });
        window.dupqTimings.push({ question, ms: end - started, wait_ms: sent - started, fetch_ms: received - sent,
          paint_ms: end - received, server_ms: data.took_ms });
      }, 0));
    } catch (e) {
      if (e.name !== "AbortError" && ctrl === inflight) showMessage("Search failed: is the server running?", "error");
    }
  }

  input.addEventListener("input", () => {
    lastInput = performance.now();
    performance.mark("dupq:input");
    clearTimeout(timer);
    const started = lastInput;
    timer = setTimeout(() => search(started), DEBOUNCE);
  });
  kInput.addEventListener("change", () => search(performance.now()));
  for (const i of scopeInputs) i.addEventListener("change", () => search(performance.now()));
  form.addEventListener("submit", (e) => {  // with JavaScript, Search does not reload the page
    e.preventDefault();
    clearTimeout(timer);
    search(performance.now());
  });

  // Keyboard: ↓ from the box to the first result, ↑ / ↓ between results, Esc back to the box; Enter opens.
  const links = () => Array.from(results.querySelectorAll("a.qtext"));
  input.addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown") { const l = links(); if (l.length) { e.preventDefault(); l[0].focus(); } }
  });
  results.addEventListener("keydown", (e) => {
    const l = links();
    const i = l.indexOf(document.activeElement);
    if (e.key === "Escape") { e.preventDefault(); input.focus(); return; }
    if (i < 0) return;
    if (e.key === "ArrowDown" && i + 1 < l.length) { e.preventDefault(); l[i + 1].focus(); }
    if (e.key === "ArrowUp") { e.preventDefault(); (i > 0 ? l[i - 1] : input).focus(); }
  });

  // Feedback and "add it" act in place: the same forms, posted with fetch, answered with JSON.
  async function post(url, body) {
    const r = await fetch(url, { method: "POST", headers: JSON_HEADERS, body, credentials: "same-origin" });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error ? data.error.message : `request failed (${r.status})`);
    return data;
  }

  results.addEventListener("submit", async (e) => {
    const f = e.target;
    e.preventDefault();
    const body = new FormData(f);
    if (e.submitter && e.submitter.name) body.set(e.submitter.name, e.submitter.value);
    for (const b of f.querySelectorAll("button")) b.disabled = true;
    try {
      if (f.classList.contains("fb")) {
        const data = await post(f.action, body);
        const same = body.get("label") === "1";
        const undo = el("button", { class: "small", type: "button", text: "Undo" });
        const done = el("span", { class: "done", "data-pair": String(data.pair.id) },
          el("span", { role: "status", text: same ? "Saved: same question." : "Saved: different question." }), undo);
        f.replaceWith(done);
        undo.focus();
        undo.addEventListener("click", async () => {
          undo.disabled = true;
          try {
            const ub = new FormData();
            ub.set("question", body.get("question"));
            await post(cfg.undo.replace("/0/", `/${data.pair.id}/`), ub);
            for (const b of f.querySelectorAll("button")) b.disabled = false;
            done.replaceWith(f);
            f.querySelector("button").focus();
          } catch (err) {
            undo.disabled = false;
            done.firstChild.textContent = err.message;
          }
        });
      } else if (f.classList.contains("addq")) {
        const data = await post(f.action, body);
        const ask = document.getElementById("ask");
        ask.classList.remove("found");
        ask.replaceChildren(el("p", { class: "ok", role: "status", text: data.message }));
      }
    } catch (err) {
      for (const b of f.querySelectorAll("button")) b.disabled = false;
      f.append(el("span", { class: "error", role: "status", text: err.message }));
    }
  });

  if (input.value.trim().length >= MIN && !results.querySelector("#result-list") && shownFor !== "") search(performance.now());
})();
