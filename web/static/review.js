// dupq review queue: one key per label (S same, D different), J/K or arrows to move, U to undo; no reloads.
(() => {
  "use strict";
  const list = document.getElementById("queue");
  if (!list || !window.fetch) return;
  const status = document.getElementById("review-status");
  const items = () => Array.from(list.children);
  const undoStack = [];
  let current = 0;

  function activate(i, focus = true) {
    const all = items();
    if (!all.length) return;
    current = Math.max(0, Math.min(i, all.length - 1));
    all.forEach((li, n) => li.classList.toggle("active", n === current));
    if (focus) all[current].focus();
  }

  async function post(url, body) {
    const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
    const r = await fetch(url, { method: "POST", headers: { Accept: "application/json", "X-CSRFToken": csrf }, body,
                                 credentials: "same-origin" });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error ? data.error.message : `request failed (${r.status})`);
    return data;
  }

  async function label(li, value) {
    const form = li.querySelector("form.label");
    if (!form) return;
    const body = new FormData(form);
    body.set("label", value);
    try {
      const data = await post(form.action, body);
      const done = document.createElement("span");
      done.className = "done";
      done.textContent = data.message || (value === "1" ? `Labelled same (pair ${data.pair.id}).` : `Labelled different (pair ${data.pair.id}).`);
      form.replaceWith(done);
      li.classList.add("labelled");
      undoStack.push({ li, form, done, id: data.pair.id });
      status.textContent = done.textContent;
      const next = items().findIndex((x, n) => n > items().indexOf(li) && x.querySelector("form.label"));
      activate(next >= 0 ? next : items().indexOf(li));
    } catch (e) {
      status.textContent = e.message;
    }
  }

  async function undo() {
    const last = undoStack.pop();
    if (!last) return;
    try {
      await post(list.dataset.undo.replace("/0", `/${last.id}`), new FormData());
      last.done.replaceWith(last.form);
      last.li.classList.remove("labelled");
      status.textContent = `Label ${last.id} undone.`;
      activate(items().indexOf(last.li));
    } catch (e) {
      undoStack.push(last);
      status.textContent = e.message;
    }
  }

  list.addEventListener("submit", (e) => {
    e.preventDefault();
    const li = e.target.closest("li");
    label(li, e.submitter ? e.submitter.value : "1");
  });
  list.addEventListener("click", (e) => {
    const li = e.target.closest("li");
    if (li && !e.target.closest("button")) activate(items().indexOf(li), false);
  });
  document.addEventListener("keydown", (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey || /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName)) return;
    const k = e.key.toLowerCase();
    if (k === "s") label(items()[current], "1");
    else if (k === "d") label(items()[current], "0");
    else if (k === "j" || e.key === "ArrowDown") activate(current + 1);
    else if (k === "k" || e.key === "ArrowUp") activate(current - 1);
    else if (k === "u") undo();
    else return;
    e.preventDefault();
  });
})();
