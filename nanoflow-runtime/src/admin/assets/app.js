// The nanoflow dashboard: workflows as graphs, run history with filters, search and
// server-side pagination, a run's per-node timeline, live updates over /events, starting and
// retrying runs. Builds its DOM with createElement/textContent only: nothing received is ever
// parsed as HTML or evaluated.
"use strict";

(() => {
  const PAGE = 50;
  const TRUNCATE = 4000;
  const state = {
    workflows: [],
    config: { auth: false, journal: true, metrics: true },
    view: null,     // { name, ... } of the current page
    counts: {},     // per workflow, since the page loaded: { started, succeeded, failed }
  };
  const main = document.getElementById("main");

  // ---- small helpers -------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "style") Object.assign(e.style, v); // CSSOM: allowed by the page's CSP
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function toast(text, bad) {
    const t = document.getElementById("toast");
    t.textContent = text;
    t.className = "show" + (bad ? " bad" : "");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.className = ""; }, 3500);
  }

  async function api(path, options) {
    const response = await fetch(path, Object.assign({ headers: { accept: "application/json" } }, options || {}));
    if (response.status === 401) { location.href = "/login"; throw new Error("login needed"); }
    let body = null;
    const text = await response.text();
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
    if (!response.ok) {
      const err = body && body.error ? body.error : { code: "http_" + response.status, message: String(text).slice(0, 300) };
      const e = new Error(err.code + ": " + err.message);
      e.status = response.status; e.body = body;
      throw e;
    }
    return { status: response.status, body, headers: response.headers };
  }

  function badge(status) { return h("span", { class: "badge " + status }, status); }

  function fmtDuration(us) {
    if (us === undefined || us === null) return "";
    if (us < 1000) return us + " µs";
    if (us < 1e6) return (us / 1000).toFixed(us < 1e4 ? 2 : 1) + " ms";
    if (us < 6e7) return (us / 1e6).toFixed(2) + " s";
    return Math.floor(us / 6e7) + " m " + Math.round((us % 6e7) / 1e6) + " s";
  }

  function fmtAgo(ms) {
    const s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 60) return Math.floor(s) + "s ago";
    if (s < 3600) return Math.floor(s / 60) + "m ago";
    if (s < 86400) return Math.floor(s / 3600) + "h ago";
    return new Date(ms).toLocaleString();
  }

  function time(ms) {
    return h("time", { datetime: new Date(ms).toISOString(), title: new Date(ms).toISOString() }, fmtAgo(ms));
  }

  function pretty(value) {
    try { return JSON.stringify(value, null, 2); } catch (_) { return String(value); }
  }

  // A JSON value shown in a <pre>, truncated past TRUNCATE characters with a button to see all.
  function payload(value) {
    const text = pretty(value);
    const pre = h("pre", { class: "json" });
    if (text.length <= TRUNCATE) { pre.textContent = text; return pre; }
    pre.textContent = text.slice(0, TRUNCATE) + "\n…";
    const more = h("button", {
      class: "secondary more", type: "button",
      onclick: () => { pre.textContent = text; more.remove(); },
    }, "Show all (" + Math.round(text.length / 1024) + " KiB, truncated)");
    return h("div", {}, pre, more);
  }

  function errorText(err) {
    if (!err) return "";
    const node = err.node ? err.node + ": " : "";
    return node + (err.message || err.code || "");
  }

  function shortId(id) { return id.slice(0, 8) + "…" + id.slice(-4); }

  function workflow(name) { return state.workflows.find((w) => w.name === name); }

  // ---- routing -------------------------------------------------------------------------------

  function route() {
    const hash = location.hash.replace(/^#/, "") || "/";
    const [path, query] = hash.split("?");
    const params = new URLSearchParams(query || "");
    for (const a of document.querySelectorAll("[data-nav]")) {
      const nav = a.getAttribute("data-nav");
      a.classList.toggle("active", nav === "runs" ? path.startsWith("/runs") : path === "/");
    }
    const run = path.match(/^\/runs\/([0-9a-f]{32})$/);
    if (run) return showRun(run[1]);
    if (path === "/runs") return showRuns(params);
    return showWorkflows();
  }

  function setView(view, ...content) {
    state.view = view;
    main.replaceChildren(...content);
  }

  // ---- workflows -----------------------------------------------------------------------------

  function httpTriggers(wf) {
    return (wf.triggers || []).filter((t) => t.startsWith("http ")).map((t) => {
      const [, method, path] = t.split(" ");
      return { method, path };
    });
  }

  function countsLine(name) {
    const c = state.counts[name] || { started: 0, succeeded: 0, failed: 0, blocked: 0, waiting: 0, cancelled: 0 };
    // A run that stops to wait ends its task (`waiting`) and starts again when woken.
    const running = Math.max(0, c.started - c.succeeded - c.failed - c.blocked - (c.waiting || 0) - (c.cancelled || 0));
    return h("span", { class: "counts", "data-counts": name },
      h("span", {}, "since opened: "), h("span", {}, h("b", {}, String(c.started)), " started"),
      h("span", {}, h("b", {}, String(running)), " running"),
      h("span", {}, h("b", {}, String(c.succeeded)), " succeeded"),
      h("span", {}, h("b", {}, String(c.failed)), " failed"),
      c.blocked ? h("span", {}, h("b", {}, String(c.blocked)), " blocked") : null,
      c.waiting ? h("span", {}, h("b", {}, String(c.waiting)), " went waiting") : null,
      c.cancelled ? h("span", {}, h("b", {}, String(c.cancelled)), " cancelled") : null);
  }

  function showWorkflows() {
    if (!state.workflows.length) {
      return setView({ name: "workflows" }, h("h1", {}, "Workflows"), h("p", { class: "empty" }, "This runner has no workflows."));
    }
    const cards = state.workflows.map((wf) => {
      const start = httpTriggers(wf).length
        ? h("button", { type: "button", "data-start": wf.name, onclick: () => openStart(wf) }, "Start run")
        : null;
      return h("section", { class: "card", "data-workflow": wf.name },
        h("header", {}, h("h2", {}, wf.name),
          ...(wf.triggers || []).map((t) => h("span", { class: "chip" }, t)),
          (wf.triggers || []).length ? null : h("span", { class: "chip" }, "no trigger")),
        wf.doc ? h("p", { class: "doc" }, wf.doc) : null,
        h("div", { class: "graph-box" }, NanoGraph.render(wf)),
        h("div", { class: "actions" }, start,
          h("a", { href: "#/runs?workflow=" + encodeURIComponent(wf.name) }, "Runs \u2192"),
          h("span", { class: "spacer" }), countsLine(wf.name)));
    });
    setView({ name: "workflows" }, h("h1", {}, "Workflows"), h("div", { class: "cards" }, cards));
  }

  // ---- starting a run ------------------------------------------------------------------------

  const dialog = document.getElementById("start-dialog");
  const startInput = document.getElementById("start-input");
  const startError = document.getElementById("start-error");
  const startPath = document.getElementById("start-path");
  const startTrigger = document.getElementById("start-trigger");
  const startFields = document.getElementById("start-fields");
  const startJson = document.getElementById("start-json");
  const startMode = document.getElementById("start-mode");
  let startWorkflow = null;
  let startForm = null; // the form built from the input's schema, while it is shown

  // Form or JSON editor: the value moves across when switching.
  function showForm(schema, value) {
    startForm = NanoForm.build(schema, value);
    startFields.replaceChildren(startForm.el);
    startFields.hidden = false;
    startJson.hidden = true;
    document.getElementById("start-format").hidden = true;
    startMode.textContent = "Edit as JSON";
  }
  function showJson(value) {
    startForm = null;
    startFields.hidden = true;
    startJson.hidden = false;
    document.getElementById("start-format").hidden = false;
    startMode.textContent = "Edit as form";
    if (value !== undefined) startInput.value = pretty(value);
  }
  startMode.addEventListener("click", () => {
    const schema = startWorkflow && startWorkflow.input_schema;
    if (startForm) {
      let value;
      try { value = startForm.get(); } catch (e) { startError.textContent = e.message; return; }
      showJson(value);
    } else {
      const r = checkJson();
      if (r && r.error) return;
      showForm(schema, r ? r.value : undefined);
    }
    startError.textContent = "";
  });

  function checkJson() {
    const text = startInput.value.trim();
    if (!text) { startError.textContent = ""; return null; }
    try { const v = JSON.parse(text); startError.textContent = ""; return { value: v }; }
    catch (e) { startError.textContent = "Not valid JSON: " + e.message; return { error: e }; }
  }

  async function openStart(wf) {
    startWorkflow = wf;
    document.getElementById("start-workflow").textContent = wf.name;
    startTrigger.replaceChildren(...httpTriggers(wf).map((t, i) => h("option", { value: String(i) }, t.method + " " + t.path)));
    const pick = () => {
      const t = httpTriggers(wf)[Number(startTrigger.value) || 0];
      startPath.value = t.path;
      startInput.disabled = t.method === "GET" || t.method === "DELETE";
    };
    startTrigger.onchange = pick;
    pick();
    startError.textContent = "";
    startInput.value = "{}";
    // Start from the input of the workflow's latest run: the closest thing to a valid example.
    let last;
    {
      try {
        const r = await api("/runs?limit=1&workflow=" + encodeURIComponent(wf.name));
        last = r.body.runs[0];
        if (last) startInput.value = pretty(last.input);
      } catch (_) { /* keep {} */ }
    }
    // With the input's JSON Schema: a form of its fields; without one, the JSON editor.
    const formable = typeof NanoForm !== "undefined" && NanoForm.supports(wf.input_schema);
    startMode.hidden = !formable;
    if (formable) showForm(wf.input_schema, last ? last.input : undefined);
    else showJson();
    dialog.showModal();
    if (!formable) startInput.focus();
  }

  // Prefills the open dialog with `value` (the "Run again" button).
  function prefillStart(value) {
    if (value === undefined) return;
    if (startForm) showForm(startWorkflow.input_schema, value);
    else startInput.value = pretty(value);
  }

  startInput.addEventListener("input", checkJson);
  document.getElementById("start-format").addEventListener("click", () => {
    const r = checkJson();
    if (r && r.value !== undefined) startInput.value = pretty(r.value);
  });
  document.getElementById("start-cancel").addEventListener("click", () => dialog.close());
  document.getElementById("start-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const t = httpTriggers(startWorkflow)[Number(startTrigger.value) || 0];
    const withBody = !(t.method === "GET" || t.method === "DELETE");
    let parsed = null;
    if (startForm) {
      try { parsed = { value: startForm.get() }; } catch (e) { startError.textContent = e.message; return; }
    } else if (withBody) {
      parsed = checkJson();
    }
    if (parsed && parsed.error) return;
    let path = startPath.value.trim();
    if (!withBody && parsed && parsed.value && typeof parsed.value === "object") {
      // GET and DELETE take the input's fields as query parameters.
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(parsed.value)) {
        if (v !== null && v !== undefined) q.set(k, typeof v === "object" ? JSON.stringify(v) : String(v));
      }
      const query = q.toString();
      if (query) path = path.split("?")[0] + "?" + query;
    }
    if (!path.startsWith("/") || path.startsWith("//")) { startError.textContent = "The path must start with a single /"; return; }
    const submit = document.getElementById("start-submit");
    submit.disabled = true;
    try {
      const response = await fetch(path, {
        method: t.method,
        headers: Object.assign({ prefer: "respond-async", accept: "application/json" },
          withBody ? { "content-type": "application/json" } : {}),
        body: withBody ? JSON.stringify(parsed ? parsed.value : null) : undefined,
      });
      const text = await response.text();
      let body = null;
      try { body = JSON.parse(text); } catch (_) { /* not JSON */ }
      if (response.status === 202 && body && body.run_id) {
        dialog.close();
        toast("Started run " + shortId(body.run_id));
        location.hash = "#/runs/" + body.run_id;
      } else if (body && body.error) {
        startError.textContent = body.error.code + ": " + body.error.message +
          (body.error.path ? " (at " + body.error.path + ")" : "") +
          (body.error.run_id ? "\nrun " + body.error.run_id : "");
        if (startForm && body.error.path) NanoForm.markInvalid(startFields, body.error.path);
      } else {
        startError.textContent = "HTTP " + response.status + ": " + text.slice(0, 300);
      }
    } catch (e) {
      startError.textContent = String(e.message || e);
    } finally {
      submit.disabled = false;
    }
  });

  // ---- runs ----------------------------------------------------------------------------------

  function runsHash(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
    const s = q.toString();
    return "#/runs" + (s ? "?" + s : "");
  }

  function runRow(r, fresh) {
    const duration = r.finished_ms ? fmtDuration((r.finished_ms - r.created_ms) * 1000) : "";
    return h("tr", {
      class: fresh ? "fresh" : "", "data-run": r.run_id,
      onclick: () => { location.hash = "#/runs/" + r.run_id; },
    },
    h("td", { "data-status": "" }, badge(r.status)),
    h("td", { class: "mono" }, h("a", { href: "#/runs/" + r.run_id }, shortId(r.run_id))),
    h("td", {}, r.workflow),
    h("td", {}, time(r.created_ms)),
    h("td", { "data-duration": "" }, duration),
    h("td", { class: "err", title: errorText(r.error) }, errorText(r.error)));
  }

  async function showRuns(params) {
    const filters = {
      workflow: params.get("workflow") || "",
      status: params.get("status") || "",
      q: params.get("q") || "",
      before: params.get("before") || "",
    };
    // Cursors of the pages before this one, for "Newer".
    const trail = (params.get("trail") || "").split(",").filter(Boolean);
    const wfSelect = h("select", { id: "filter-workflow", "aria-label": "workflow" },
      h("option", { value: "" }, "all workflows"),
      ...state.workflows.map((w) => h("option", { value: w.name, selected: w.name === filters.workflow }, w.name)));
    const stSelect = h("select", { id: "filter-status", "aria-label": "status" },
      ...["", "running", "queued", "waiting", "succeeded", "failed", "cancelled", "blocked"].map((s) => h("option", { value: s, selected: s === filters.status }, s || "any status")));
    const search = h("input", {
      id: "filter-q", type: "search", placeholder: "run id prefix, idempotency key, input or error text",
      value: filters.q, "aria-label": "search",
    });
    const apply = () => {
      location.hash = runsHash({ workflow: wfSelect.value, status: stSelect.value, q: search.value.trim() });
    };
    wfSelect.addEventListener("change", apply);
    stSelect.addEventListener("change", apply);
    const form = h("form", { class: "filters", onsubmit: (ev) => { ev.preventDefault(); apply(); } },
      wfSelect, stSelect, search, h("button", { type: "submit" }, "Search"));
    const tbody = h("tbody");
    const table = h("table", { class: "runs" },
      h("thead", {}, h("tr", {}, ...["status", "run", "workflow", "started", "duration", "error"].map((c) => h("th", {}, c)))),
      tbody);
    const pager = h("div", { class: "pager" });
    const view = { name: "runs", filters, tbody, firstPage: !filters.before };
    setView(view, h("h1", {}, "Runs"), form, table, pager);
    if (!state.config.journal) {
      pager.appendChild(h("p", { class: "muted" }, "This runner runs with --journal off: it keeps in memory the runs that failed, ran asynchronously or had an idempotency key (the most recent finished ones), not the synchronous runs that succeeded."));
    }
    const q = new URLSearchParams({ limit: String(PAGE) });
    for (const k of ["workflow", "status", "q", "before"]) if (filters[k]) q.set(k, filters[k]);
    let page;
    try {
      page = (await api("/runs?" + q)).body;
    } catch (e) {
      tbody.appendChild(h("tr", {}, h("td", { colspan: 6, class: "error-text" }, e.message)));
      return;
    }
    if (state.view !== view) return;
    tbody.replaceChildren(...page.runs.map((r) => runRow(r)));
    if (!page.runs.length) tbody.appendChild(h("tr", { class: "none" }, h("td", { colspan: 6, class: "empty" }, "No runs match.")));
    const base = { workflow: filters.workflow, status: filters.status, q: filters.q };
    if (filters.before) {
      const back = trail[trail.length - 1];
      pager.appendChild(h("a", {
        href: runsHash(Object.assign({}, base, { before: back && back !== "-" ? back : "", trail: trail.slice(0, -1).join(",") })), id: "newer",
      }, "\u2190 Newer"));
    }
    pager.appendChild(h("span", { class: "muted" }, "newest first, " + PAGE + " per page"));
    if (page.next_before) {
      pager.appendChild(h("a", {
        href: runsHash(Object.assign({}, base, { before: page.next_before, trail: trail.concat([filters.before || "-"]).join(",") })), id: "older",
      }, "Older \u2192"));
    }
  }

  function runMatches(filters, ev) {
    if (filters.workflow && filters.workflow !== ev.workflow) return false;
    if (filters.q && !ev.run_id.startsWith(filters.q.toLowerCase())) return false;
    return true;
  }

  // ---- one run -------------------------------------------------------------------------------

  function stepStatuses(run) {
    const out = {};
    for (const a of run.timeline || []) {
      if (a.step.includes("~")) continue;
      out[a.step] = a.status === "failed" && run.status === "running" ? "retrying" : a.status;
    }
    return out;
  }

  function gantt(run, select) {
    const attempts = run.timeline || [];
    const t0 = Math.min(run.created_ms, ...attempts.map((a) => a.started_ms));
    const ends = attempts.map((a) => a.started_ms + a.duration_us / 1000);
    const t1 = Math.max(run.finished_ms || (run.status === "running" ? Date.now() : t0), ...ends, t0 + 1);
    const span = t1 - t0;
    const pct = (ms) => (100 * (ms - t0)) / span;
    const rows = attempts.map((a, i) => {
      const left = pct(a.started_ms);
      const width = Math.max(0.4, (100 * a.duration_us) / 1000 / span);
      const row = h("div", { class: "row", "data-attempt": a.step + "#" + a.attempt, onclick: () => select(i, row) },
        h("div", { class: "label", title: a.step }, a.step, h("span", { class: "att" }, " #" + a.attempt)),
        h("div", { class: "track" },
          h("div", { class: "bar " + a.status, style: { left: left + "%", width: width + "%" } }),
          h("span", { class: "dur", style: left + width > 80 ? { right: (100 - left + 1) + "%" } : { left: "calc(" + (left + width) + "% + 6px)" } },
            fmtDuration(a.duration_us) + (a.status === "failed" ? " \u2717" : ""))));
      return row;
    });
    if (run.status === "running") {
      rows.push(h("div", { class: "row" }, h("div", { class: "label muted" }, "running\u2026"),
        h("div", { class: "track" }, h("div", { class: "bar running", style: { left: pct(Math.max(t0, ...ends)) + "%", width: Math.max(1, 100 - pct(Math.max(t0, ...ends))) + "%" } }))));
    }
    const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => h("span", { style: { left: f * 100 + "%" } }, fmtDuration(Math.round(f * span * 1000))));
    return h("div", { class: "gantt", id: "timeline" },
      h("div", { class: "axis" }, h("span", {}, "step #attempt"), h("div", { class: "ticks" }, ticks)),
      rows.length ? rows : h("p", { class: "muted" }, "No step has finished yet."));
  }

  function attemptDetail(a) {
    const items = [
      ["step", a.step], ["attempt", String(a.attempt)], ["status", badge(a.status)],
      ["started", new Date(a.started_ms).toISOString()], ["duration", fmtDuration(a.duration_us)],
    ];
    const dl = h("dl", { class: "detail" }, ...items.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    return h("div", { id: "attempt-detail" }, h("h3", {}, "Attempt"), dl,
      a.error ? [h("h3", {}, "Error"), payload(a.error)] : null,
      a.output !== undefined ? [h("h3", {}, "Output"), payload(a.output)] : null);
  }

  async function showRun(id) {
    const view = { name: "run", id, timer: null, selected: null };
    setView(view, h("p", { class: "muted" }, "Loading run " + id + "\u2026"));
    await renderRun(view);
  }

  async function renderRun(view) {
    let run;
    try {
      run = (await api("/runs/" + view.id)).body;
    } catch (e) {
      if (state.view === view) setView(view, h("h1", {}, "Run"), h("p", { class: "error-text" }, e.message));
      return;
    }
    if (state.view !== view) return;
    const wf = workflow(run.workflow);
    const created = run.created_ms || run.started_ms;
    const retry = run.status === "failed" && state.config.journal
      ? h("button", { type: "button", class: "danger", id: "retry", onclick: () => retryRun(run.run_id) }, "Retry from failed node")
      : null;
    // A run parked by a deploy (`graph_changed`): run it again from its first step, or cancel it.
    const blocked = run.status === "blocked" && state.config.journal
      ? [h("button", { type: "button", class: "danger", id: "retry-from-start", onclick: () => blockedAction(run.run_id, "/retry?from_start=true", "Re-running run " + shortId(run.run_id) + " from its first step") }, "Retry from start"),
        h("button", { type: "button", class: "secondary", id: "cancel-run", onclick: () => blockedAction(run.run_id, "/cancel", "Cancelled run " + shortId(run.run_id)) }, "Cancel")]
      : [];
    // A run that has not ended (and is not parked) can be cancelled: its compensations run.
    const live = ["running", "queued", "waiting"].includes(run.status)
      ? h("button", { type: "button", class: "secondary", id: "cancel-run", onclick: () => blockedAction(run.run_id, "/cancel", "Cancelling run " + shortId(run.run_id)) }, "Cancel")
      : null;
    // A waiting run: one form per signal of its workflow, built from the signal's schema.
    const signals = run.status === "waiting" && wf
      ? (wf.steps || []).filter((s) => s.kind === "signal" && s.signal).map((s) => signalForm(run, s))
      : [];
    // Re-execute the run's input through the current code and compare step by step.
    const replay = !["running", "queued", "waiting"].includes(run.status) && state.config.journal && wf
      ? h("button", { type: "button", class: "secondary", id: "replay", onclick: () => replayRun(view, run.run_id) }, "Replay")
      : null;
    const again = wf && httpTriggers(wf).length
      ? h("button", { type: "button", class: "secondary", id: "run-again", onclick: () => openStart(wf).then(() => prefillStart(run.input)) }, "Run again\u2026")
      : null;
    const facts = h("div", { class: "facts" },
      h("span", {}, "workflow ", h("b", {}, h("a", { href: "#/runs?workflow=" + encodeURIComponent(run.workflow) }, run.workflow))),
      created ? h("span", {}, "started ", h("b", {}, time(created))) : null,
      run.finished_ms ? h("span", {}, "took ", h("b", {}, fmtDuration((run.finished_ms - created) * 1000))) : null,
      run.idempotency_key ? h("span", {}, "idempotency key ", h("b", { class: "mono" }, run.idempotency_key)) : null,
      run.due_ms ? h("span", {}, run.status === "queued" ? "starts after " : "wakes at ", h("b", { id: "run-due" }, time(run.due_ms))) : null,
      h("span", {}, "attempts ", h("b", {}, String((run.timeline || []).length))));
    const detail = h("div", { class: "panel", id: "detail-panel" });
    const select = (i, row) => {
      view.selected = i;
      for (const r of document.querySelectorAll(".gantt .row.selected")) r.classList.remove("selected");
      if (row) row.classList.add("selected");
      detail.replaceChildren(attemptDetail(run.timeline[i]));
    };
    const left = h("div", {},
      wf ? h("div", { class: "panel" }, h("h3", {}, "Graph"), h("div", { class: "graph-box" }, NanoGraph.render(wf, stepStatuses(run)))) : null,
      h("div", { class: "panel timeline-panel" }, h("h3", {}, "Timeline"),
        run.timeline ? gantt(run, select) : h("p", { class: "muted" }, "Per-node timelines need the journal.")));
    // Inputs and outputs field by field against their schemas, when the workflow has them.
    const against = (schema, value, id) => (schema && typeof NanoForm !== "undefined"
      ? h("div", { id }, NanoForm.view(schema, value)) : null);
    detail.append(...[
      // A replay's report stays when live events re-render the run.
      view.replay && view.replay.id === run.run_id ? replayReport(view.replay.report) : null,
      ...signals,
      h("h3", {}, "Input"), against(wf && wf.input_schema, run.input, "input-schema"),
      payload(run.input === undefined ? null : run.input),
      run.output !== undefined
        ? [h("h3", {}, "Output"), against(wf && wf.output_schema, run.output, "output-schema"), payload(run.output)] : [],
      run.error ? [h("h3", {}, "Error"), payload(run.error)] : [],
    ].flat().filter(Boolean));
    setView(view,
      h("div", { class: "run-head" }, h("h1", { "data-run-id": run.run_id }, run.run_id), h("span", { id: "run-status" }, badge(run.status)),
        h("span", { class: "spacer" }), again, replay, retry, live, ...blocked),
      facts,
      h("div", { class: "split" }, left, detail));
    if (view.selected !== null && run.timeline && run.timeline[view.selected]) {
      select(view.selected, document.querySelectorAll(".gantt .row")[view.selected]);
    }
  }

  async function retryRun(id) {
    const button = document.getElementById("retry");
    if (button) button.disabled = true;
    try {
      await api("/runs/" + id + "/retry", { method: "POST" });
      toast("Re-driving run " + shortId(id) + " from its failed node");
      if (state.view && state.view.id === id) renderRun(state.view);
    } catch (e) {
      toast(e.message, true);
      if (button) button.disabled = false;
    }
  }

  async function replayRun(view, id) {
    const button = document.getElementById("replay");
    if (button) button.disabled = true;
    try {
      const report = (await api("/runs/" + id + "/replay", { method: "POST" })).body;
      // Kept on the view, so the run's next render (a live event) shows it again.
      view.replay = { id, report };
      const detail = document.getElementById("detail-panel");
      if (state.view === view && detail) {
        const shown = document.getElementById("replay-report");
        if (shown) shown.remove();
        detail.prepend(replayReport(report));
      }
      toast(report.reproduces ? "The run reproduces" : "The run does not reproduce", !report.reproduces);
    } catch (e) {
      toast(e.message, true);
    } finally {
      const again = document.getElementById("replay");
      if (again) again.disabled = false;
    }
  }

  function replayReport(report) {
    const rows = report.steps.map((s) => h("tr", { "data-step": s.step },
      h("td", { class: "mono" }, s.step), h("td", {}, h("span", { class: "badge " + (s.verdict === "same" || s.verdict === "stubbed" ? "succeeded" : "failed") }, s.verdict)),
      h("td", { class: "mono" }, (s.diff || []).map((d) => h("div", {}, d.path + ": " + JSON.stringify(d.recorded) + " \u2192 " + JSON.stringify(d.replayed))))));
    return h("div", { id: "replay-report" },
      h("h3", {}, "Replay: " + (report.reproduces ? "reproduced" : "not reproduced")),
      report.error ? h("p", { class: "error-text" }, report.error) : null,
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "step"), h("th", {}, "result"), h("th", {}, "differences"))), h("tbody", {}, rows)));
  }

  // The form sending signal `step.name` to a waiting run: fields from the signal's schema (or
  // a JSON text area), its 422 marked on the field.
  function signalForm(run, step) {
    const schema = step.signal.schema;
    const formable = schema && typeof NanoForm !== "undefined" && NanoForm.supports(schema);
    const fields = formable ? NanoForm.build(schema, undefined) : null;
    const text = formable ? null : h("textarea", { class: "mono", rows: "4", "aria-label": "signal value", "data-path": "" }, "{}");
    const error = h("p", { class: "error-text", role: "alert" });
    const send = h("button", { type: "submit", class: "primary" }, "Send " + step.name);
    const box = h("div", { class: "signal-fields schema-form" }, fields ? fields.el : text);
    const form = h("form", { class: "panel signal-form", "data-signal": step.name },
      h("h3", {}, "Signal ", h("span", { class: "mono" }, step.name), h("span", { class: "muted" }, " · " + step.signal.type)),
      box, error, send);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      error.textContent = "";
      let body;
      try {
        body = fields ? JSON.stringify(fields.get()) : JSON.stringify(JSON.parse(text.value));
      } catch (e) {
        error.textContent = "not JSON: " + e.message;
        return;
      }
      send.disabled = true;
      try {
        await api("/runs/" + run.run_id + "/signals/" + encodeURIComponent(step.name),
          { method: "POST", headers: { "content-type": "application/json" }, body });
        toast("Signal " + step.name + " sent to run " + shortId(run.run_id));
        if (state.view && state.view.id === run.run_id) renderRun(state.view);
      } catch (e) {
        error.textContent = e.message;
        const path = e.body && e.body.error && e.body.error.path;
        if (fields && path !== undefined) NanoForm.markInvalid(box, path);
        send.disabled = false;
      }
    });
    return form;
  }

  async function blockedAction(id, path, done) {
    for (const b of document.querySelectorAll("#retry-from-start, #cancel-run")) b.disabled = true;
    try {
      await api("/runs/" + id + path, { method: "POST" });
      toast(done);
      if (state.view && state.view.id === id) renderRun(state.view);
    } catch (e) {
      toast(e.message, true);
      for (const b of document.querySelectorAll("#retry-from-start, #cancel-run")) b.disabled = false;
    }
  }

  // ---- live updates --------------------------------------------------------------------------

  function bump(name, field) {
    const c = state.counts[name] || (state.counts[name] = { started: 0, succeeded: 0, failed: 0, blocked: 0, waiting: 0, cancelled: 0 });
    c[field] += 1;
    const line = document.querySelector('[data-counts="' + CSS.escape(name) + '"]');
    if (line) line.replaceWith(countsLine(name));
  }

  function pulse(wfName, step, ok) {
    const card = document.querySelector('.card[data-workflow="' + CSS.escape(wfName) + '"]');
    const node = card && card.querySelector('[data-node="' + CSS.escape(step) + '"]');
    if (!node) return;
    node.classList.remove("pulse", "bad");
    void node.getBoundingClientRect();
    node.classList.add("pulse");
    if (!ok) node.classList.add("bad");
  }

  function onEvent(kind, ev) {
    const v = state.view;
    if (kind === "run_started") bump(ev.workflow, "started");
    if (kind === "run_finished") bump(ev.workflow, ev.status);
    if (kind === "step_finished" && v && v.name === "workflows") pulse(ev.workflow, ev.step, ev.status === "succeeded");
    if (!v) return;
    if (v.name === "run" && ev.run_id === v.id) {
      clearTimeout(v.timer);
      v.timer = setTimeout(() => renderRun(v), 120);
    }
    if (v.name === "runs") {
      const row = v.tbody.querySelector('tr[data-run="' + ev.run_id + '"]');
      if (kind === "run_started" && v.firstPage && !row && runMatches(v.filters, ev) && (!v.filters.status || v.filters.status === "running")) {
        const none = v.tbody.querySelector("tr.none");
        if (none) none.remove();
        v.tbody.prepend(runRow({ run_id: ev.run_id, workflow: ev.workflow, status: "running", created_ms: ev.at_ms }, true));
        while (v.tbody.children.length > PAGE) v.tbody.lastChild.remove();
      }
      if (kind === "run_finished" && row) {
        row.querySelector("[data-status]").replaceChildren(badge(ev.status));
        row.querySelector("[data-duration]").textContent = fmtDuration(ev.duration_us);
        const err = row.querySelector(".err");
        err.textContent = errorText(ev.error);
        err.title = errorText(ev.error);
      }
    }
  }

  function connect() {
    const live = document.getElementById("live");
    const source = new EventSource("/events");
    source.addEventListener("ready", () => { live.className = "live on"; live.textContent = "live"; });
    source.onerror = () => { live.className = "live off"; live.textContent = "reconnecting"; };
    for (const kind of ["run_started", "step_finished", "run_finished"]) {
      source.addEventListener(kind, (e) => {
        try { onEvent(kind, JSON.parse(e.data)); } catch (err) { console.error(err); }
      });
    }
    source.addEventListener("lagged", () => { if (state.view && state.view.name !== "workflows") route(); });
  }

  // ---- start ---------------------------------------------------------------------------------

  async function boot() {
    try {
      const [wfs, config] = await Promise.all([api("/workflows"), api("/ui/config.json")]);
      state.workflows = wfs.body.workflows;
      state.config = config.body;
    } catch (e) {
      main.replaceChildren(h("p", { class: "error-text" }, "Cannot load the runner's workflows: " + e.message));
      return;
    }
    document.getElementById("logout").hidden = !state.config.auth;
    document.getElementById("metrics-link").hidden = !state.config.metrics;
    window.addEventListener("hashchange", route);
    route();
    connect();
    // Keep relative times fresh.
    setInterval(() => {
      for (const t of document.querySelectorAll("time[datetime]")) t.textContent = fmtAgo(Date.parse(t.getAttribute("datetime")));
    }, 10000);
  }

  boot();
})();
