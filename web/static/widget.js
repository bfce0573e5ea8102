// dupq widget: likely duplicates under a text field on any site, as the person types (docs/widget.md).
//   <script src="https://dupq.example/widget.js" data-dupq-input="#title" async></script>
// Attributes: data-dupq-input (CSS selector of the field, required), data-dupq-key (a search key, sent as
// Authorization: Bearer), data-dupq-k (how many results, default 5), data-dupq-filter (JSON, sent as the
// search's "filter").
// Rules of dupq's own search page: a pause before asking, a stale request aborted, everything from the server
// inserted as text (textContent, never innerHTML), an aria-live status, arrow keys / Enter / Escape.
// The list lives in an open shadow root under the field: the host's styles cannot reach it and its styles
// cannot leak out; it inherits the host's font and colours, and --dupq-* custom properties restyle it.
// No cookie, no storage, requests without credentials. Each paint of results records
// performance.measure("dupq-widget:typed-to-painted") from the last keystroke to the painted frame, with
// detail {question, count, wait_ms, fetch_ms, paint_ms, server_ms}.
(() => {
  "use strict";
  const script = document.currentScript;
  if (!script || !window.fetch || !window.AbortController || !Element.prototype.attachShadow) return;
  const cfg = script.dataset;
  const MIN = 4; // characters before the first search (fewer say too little)
  const PAUSE = 45; // ms after the last keystroke (as the search page)
  // The API lives where this script came from: /widget.js or /widget/<digest>.js under dupq's root.
  const ROOT = new URL(script.src.replace(/\/widget(\/[^/?#]*)?\.js([?#].*)?$/, "/"), location.href).href;
  const API = new URL("api/v1/search", ROOT).href;
  const warn = (...a) => console.warn("dupq widget:", ...a);

  let filter;
  if (cfg.dupqFilter) {
    try { filter = JSON.parse(cfg.dupqFilter); } catch (e) { filter = e; }
    if (!filter || typeof filter !== "object" || Array.isArray(filter) || filter instanceof Error) {
      // A broken scope must not widen into an unscoped search: the widget stays off.
      warn("data-dupq-filter is not a JSON object; the widget is off.");
      return;
    }
  }
  const K = Math.min(100, Math.max(1, parseInt(cfg.dupqK, 10) || 5));

  const CSS = `
:host { display: block; font: inherit; color: inherit; margin: var(--dupq-margin, .25em 0 1em); }
.box { font-family: var(--dupq-font, inherit); font-size: var(--dupq-font-size, inherit);
  color: var(--dupq-color, inherit); background: var(--dupq-bg, transparent);
  border: 1px solid var(--dupq-border, color-mix(in srgb, currentColor 30%, transparent));
  border-radius: var(--dupq-radius, 6px); padding: .25em; max-width: 100%; box-sizing: border-box; }
.box[hidden] { display: none; }
.vh { display: block; position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%);
  white-space: nowrap; }
.h { font-weight: 600; margin: .25em .5em; font-size: .95em; }
[role=listbox] { display: flex; flex-direction: column; gap: 2px; }
a { display: flex; flex-wrap: wrap; align-items: baseline; gap: .25em .6em; min-height: 2.75em;
  box-sizing: border-box; padding: .5em; border-radius: calc(var(--dupq-radius, 6px) - 2px);
  color: var(--dupq-link, inherit); text-decoration: none; overflow-wrap: anywhere; }
a:hover, a[aria-selected=true] { background: var(--dupq-hover, color-mix(in srgb, currentColor 8%, transparent)); }
a:focus-visible { outline: 2px solid var(--dupq-focus, currentColor); outline-offset: -2px; }
.t { flex: 1 1 16em; min-width: 0; text-decoration: underline; text-underline-offset: .15em; }
.b { font-size: .8em; border: 1px solid currentColor; border-radius: 1em; padding: 0 .5em; white-space: nowrap; }
`;

  function start() {
    const input = document.querySelector(cfg.dupqInput || "");
    if (!input || !("value" in input)) {
      warn(`no text field matches data-dupq-input=${JSON.stringify(cfg.dupqInput || "")}`);
      return;
    }
    const host = document.createElement("div");
    host.setAttribute("data-dupq-widget", "");
    input.insertAdjacentElement("afterend", host);
    const root = host.attachShadow({ mode: "open" });
    const el = (tag, props = {}, ...kids) => {
      const n = document.createElement(tag);
      for (const [k, v] of Object.entries(props)) {
        if (k === "text") n.textContent = v;
        else n.setAttribute(k, v);
      }
      n.append(...kids.filter((c) => c != null));
      return n;
    };
    const style = el("style");
    style.textContent = CSS;
    // The status is always in the document (a live region must exist before it changes), visible or not.
    const status = el("p", { class: "vh", role: "status", "aria-live": "polite" });
    const heading = el("p", { id: "h", class: "h", text: "Similar questions already asked" });
    const list = el("div", { role: "listbox", "aria-labelledby": "h" });
    const box = el("div", { class: "box", hidden: "" }, heading, list);
    root.append(style, status, box);

    let timer = 0;
    let inflight = null;
    let shown = "";

    const options = () => Array.from(list.querySelectorAll("[role=option]"));
    function select(opt) {
      for (const o of options()) o.setAttribute("aria-selected", String(o === opt));
      if (opt) opt.focus();
    }

    function link(r) {
      // The community's own page for the question (meta.url) when it is an http(s) address, else dupq's.
      const own = r.url || (r.meta && r.meta.url);
      if (typeof own === "string") {
        try {
          const u = new URL(own, location.href);
          if (u.protocol === "https:" || u.protocol === "http:") return u.href;
        } catch { /* not a URL: dupq's page instead */ }
      }
      return new URL(`q/${encodeURIComponent(r.id)}`, ROOT).href;
    }

    function render(question, results) {
      const opts = results.map((r) => el("a", {
        role: "option", href: link(r), target: "_blank", rel: "noopener noreferrer", tabindex: "-1",
        "aria-selected": "false",
      }, el("span", { class: "t", text: r.text }),
      r.duplicate ? el("span", { class: "b", text: "likely duplicate" }) : null,
      el("span", { class: "vh", text: " (opens in a new tab)" })));
      list.replaceChildren(...opts);
      if (opts.length) box.removeAttribute("hidden");
      else box.setAttribute("hidden", "");
      const dups = results.filter((r) => r.duplicate).length;
      status.textContent = opts.length
        ? `${opts.length} similar question${opts.length === 1 ? "" : "s"} already asked` +
          (dups ? `, ${dups} likely duplicate${dups === 1 ? "" : "s"}` : "") + ". Press Down to browse them."
        : "";
      shown = question;
      host.dispatchEvent(new CustomEvent("dupq-results", { bubbles: true, detail: { question, results } }));
    }

    function clear() {
      if (inflight) inflight.abort();
      inflight = null;
      list.replaceChildren();
      box.setAttribute("hidden", "");
      status.textContent = "";
      shown = "";
    }

    async function search(started) {
      const question = input.value.trim().replace(/\s+/g, " ");
      if (inflight) inflight.abort();
      inflight = null;
      if (question.length < MIN) { clear(); return; }
      if (question === shown) return;
      const ctrl = new AbortController();
      inflight = ctrl;
      const headers = { "Content-Type": "application/json", Accept: "application/json" };
      if (cfg.dupqKey) headers.Authorization = `Bearer ${cfg.dupqKey}`;
      const body = { question: question.slice(0, 1000), k: K };
      if (filter) body.filter = filter;
      const sent = performance.now();
      try {
        const r = await fetch(API, {
          method: "POST", mode: "cors", credentials: "omit", referrerPolicy: "origin",
          headers, body: JSON.stringify(body), signal: ctrl.signal,
        });
        const data = await r.json().catch(() => ({}));
        if (ctrl !== inflight) return; // a newer request owns the list
        inflight = null;
        if (!r.ok) {
          warn(`search failed (${r.status}):`, data.error ? data.error.message : r.statusText);
          return;
        }
        const received = performance.now();
        render(question, data.results || []);
        requestAnimationFrame(() => setTimeout(() => { // the frame with the results has been painted
          const end = performance.now();
          performance.measure("dupq-widget:typed-to-painted", { start: started, end, detail: {
            question, count: list.children.length, wait_ms: sent - started, fetch_ms: received - sent,
            paint_ms: end - received, server_ms: data.took_ms } });
        }, 0));
      } catch (e) {
        if (e.name !== "AbortError" && ctrl === inflight) {
          inflight = null;
          warn("search failed: dupq unreachable or this origin is not in its cors_origins.", e);
        }
      }
    }

    input.addEventListener("input", () => {
      const started = performance.now();
      clearTimeout(timer);
      timer = setTimeout(() => search(started), PAUSE);
    });
    // Down from the field to the first result; Up / Down between results (Up from the first: the field);
    // Home / End; Escape back to the field, and Escape in the field closes the list. Enter opens (a link).
    input.addEventListener("keydown", (e) => {
      if (e.key === "ArrowDown" && !box.hidden && options().length) { e.preventDefault(); select(options()[0]); }
      if (e.key === "Escape" && !box.hidden) { e.preventDefault(); clear(); }
    });
    list.addEventListener("keydown", (e) => {
      const o = options();
      const i = o.indexOf(root.activeElement);
      let next;
      if (e.key === "ArrowDown") next = o[Math.min(i + 1, o.length - 1)];
      else if (e.key === "ArrowUp") next = i > 0 ? o[i - 1] : null;
      else if (e.key === "Home") next = o[0];
      else if (e.key === "End") next = o[o.length - 1];
      else if (e.key === "Escape") next = null;
      else return;
      e.preventDefault();
      if (next) select(next);
      else { select(null); input.focus(); }
    });
    list.addEventListener("focusout", (e) => {
      if (!list.contains(e.relatedTarget)) select(null);
    });
    if (input.value.trim().length >= MIN) search(performance.now());
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start, { once: true });
  else start();
})();
