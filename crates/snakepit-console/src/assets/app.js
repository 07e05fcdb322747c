// The snakepit console: routes by location.hash and renders what /api/* returns.
// Every text from the server goes in with textContent (plugin output is untrusted).
"use strict";

const CSRF = document.querySelector('meta[name="csrf"]').content;
const main = document.getElementById("main");
let timer = null; // the current page's refresh
let stream = null; // the current run's log stream

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(path, options) {
  const opts = Object.assign({ headers: {} }, options || {});
  if (opts.method === "POST") {
    opts.headers["Content-Type"] = "application/json";
    opts.headers["X-Snakepit-Csrf"] = CSRF;
  }
  const r = await fetch(path, opts);
  if (r.status === 401) {
    location.href = "/login";
    throw new Error("the console's token is needed");
  }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
  return body;
}

const badge = (s) => h("span", { class: "badge " + (s || "") }, s || "-");
const time = (t) => (t ? String(t).replace("T", " ").replace(/(\.\d+)?(Z|\+00:00)$/, "") : "-");

function duration(a, b) {
  if (!a) return "-";
  const ms = (b ? Date.parse(b) : Date.now()) - Date.parse(a);
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  return Math.floor(ms / 60000) + "m " + Math.round((ms % 60000) / 1000) + "s";
}

function mib(bytes) {
  return bytes === null || bytes === undefined ? "-" : (bytes / 1048576).toFixed(1) + " MiB";
}

function table(headers, rows) {
  return h("div", { class: "scroll" },
    h("table", {},
      h("thead", {}, h("tr", {}, headers.map((x) => {
        const [label, cls] = Array.isArray(x) ? x : [x, null];
        return h("th", { class: cls }, label);
      }))),
      h("tbody", {}, rows)));
}

// Replaces the page's content; lists are flattened, nulls left out.
function show(...nodes) {
  main.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
}

function fail(e) {
  main.replaceChildren(h("div", { class: "notice bad" }, "Error: " + e.message));
}

function stop() {
  if (timer) clearInterval(timer);
  timer = null;
  if (stream) stream.close();
  stream = null;
}

function query() {
  const q = location.hash.split("?")[1] || "";
  return new URLSearchParams(q);
}

// ---- Runs ---------------------------------------------------------------------------

async function runsPage() {
  const q = query();
  const params = new URLSearchParams();
  for (const k of ["job", "status", "trigger", "since", "until", "after"]) {
    if (q.get(k)) params.set(k, q.get(k));
  }
  const [data, jobs] = await Promise.all([api("/api/runs?" + params), api("/api/jobs")]);
  const select = (name, options) =>
    h("select", { name }, h("option", { value: "" }, "any"),
      options.map((o) => h("option", { value: o, selected: q.get(name) === o }, o)));
  const form = h("form", { class: "filters", onsubmit: (ev) => {
    ev.preventDefault();
    const f = new URLSearchParams();
    for (const [k, v] of new FormData(ev.target)) if (v) f.set(k, v);
    location.hash = "#/runs?" + f;
  } },
    h("label", {}, "Job", select("job", jobs.map((j) => j.name))),
    h("label", {}, "Status", select("status", ["queued", "running", "succeeded", "failed", "cancelled", "interrupted"])),
    h("label", {}, "Trigger", select("trigger", ["schedule", "manual"])),
    h("label", {}, "From", h("input", { type: "date", name: "since", value: q.get("since") || "" })),
    h("label", {}, "To", h("input", { type: "date", name: "until", value: q.get("until") || "" })),
    h("button", { type: "submit" }, "Filter"));
  const rows = data.runs.map((r) =>
    h("tr", { "data-run": r.id },
      h("td", {}, h("a", { href: "#/runs/" + encodeURIComponent(r.id), class: "mono" }, r.id)),
      h("td", {}, r.job),
      h("td", { class: "hide-narrow" }, r.trigger),
      h("td", { class: "hide-narrow" }, r.session_user),
      h("td", {}, badge(r.status)),
      h("td", { class: "hide-narrow" }, time(r.queued_at)),
      h("td", { class: "num" }, duration(r.started_at, r.finished_at)),
      h("td", { class: "wrap hide-narrow" }, r.error || "")));
  const pager = h("div", { class: "pager" });
  if (q.get("after")) {
    q.delete("after");
    pager.append(h("button", { class: "secondary", onclick: () => { location.hash = "#/runs?" + q; } }, "« Newest"));
  }
  if (data.next) {
    const next = new URLSearchParams(q);
    next.set("after", data.next);
    pager.append(h("button", { class: "secondary", onclick: () => { location.hash = "#/runs?" + next; } }, "Older »"));
  }
  show(
    h("h1", {}, "Runs"),
    form,
    data.runs.length
      ? table(["Run", "Job", ["Trigger", "hide-narrow"], ["User", "hide-narrow"], "Status", ["Queued (UTC)", "hide-narrow"], ["Took", "num"], ["Error", "hide-narrow"]], rows)
      : h("p", { class: "muted" }, "No runs match."),
    pager);
}

function refreshRuns() {
  // Not while a filter is being chosen.
  const form = main.querySelector("form.filters");
  if (form && form.contains(document.activeElement)) return;
  runsPage().catch(fail);
}

// ---- One run --------------------------------------------------------------------------

// A duration given in µs, as the CLI prints it: 85µs, 1.2ms, 3.4s, 2m 5s.
function micros(us) {
  us = Math.max(0, us || 0);
  if (us < 1000) return us + "µs";
  if (us < 1000000) return (us / 1000).toFixed(1) + "ms";
  if (us < 60000000) return (us / 1000000).toFixed(1) + "s";
  const s = Math.floor(us / 1000000);
  return Math.floor(s / 60) + "m " + (s % 60) + "s";
}

const count = (n) => (n === null || n === undefined ? "-" : n);

// The run record's connector_calls: one summary per package, connector and target, as
// the history computed it (calls, rows, errors, total, p50, p99), shown as they are.
function callSummary(r) {
  const list = r.connector_calls || [];
  const dropped = r.connector_calls_dropped || 0;
  const calls = list.reduce((n, c) => n + c.calls, 0);
  const rows = list.map((c) => h("tr", { "data-target": c.package + "/" + c.connector + "/" + c.target },
    h("td", {}, c.package), h("td", {}, c.connector), h("td", {}, c.target),
    h("td", { class: "num" }, c.calls), h("td", { class: "num" }, count(c.rows)),
    h("td", { class: "num" + (c.errors ? " error" : "") }, c.errors),
    h("td", { class: "num" }, micros(c.total_us)),
    h("td", { class: "num" }, micros(c.p50_us)), h("td", { class: "num" }, micros(c.p99_us))));
  return h("div", { id: "connector-calls" },
    h("h2", {}, "Connector calls ", h("span", { class: "muted" }, "(" + calls + ")"),
      list.length ? [" ", h("a", { id: "each-call", href: "#/runs/" + encodeURIComponent(r.id) + "/calls" }, "each call »")] : null),
    list.length
      ? table(["Package", "Connector", "Target", ["Calls", "num"], ["Rows", "num"], ["Errors", "num"], ["Total", "num"], ["p50", "num"], ["p99", "num"]], rows)
      : h("p", { class: "muted" }, "No connector calls."),
    dropped > 0
      ? h("p", { class: "notice bad", id: "calls-dropped" }, "And " + dropped + " calls not recorded: the history did not keep up with them.")
      : null);
}

function logLine(l) {
  const step = l.step ? l.step + (l.attempt ? "#" + l.attempt : "") : "run";
  const level = { 10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL" }[l.level] || String(l.level);
  return h("div", { class: "line" },
    h("span", { class: "meta" }, time(l.time).slice(11) + " " + step + " "),
    h("span", { class: "lvl-" + level }, level),
    h("span", { class: "meta" }, " " + l.logger + ": "),
    l.message);
}

async function runPage(id) {
  const r = await api("/api/runs/" + encodeURIComponent(id));
  const facts = h("dl", { class: "facts" },
    h("dt", {}, "Job"), h("dd", {}, r.job),
    h("dt", {}, "Status"), h("dd", { id: "run-status" }, badge(r.status)),
    h("dt", {}, "Trigger"), h("dd", {}, r.trigger + " by " + r.session_user),
    h("dt", {}, "Scheduled for"), h("dd", {}, time(r.scheduled_for)),
    h("dt", {}, "Started"), h("dd", {}, time(r.started_at)),
    h("dt", {}, "Finished"), h("dd", {}, time(r.finished_at) + " (" + duration(r.started_at, r.finished_at) + ")"),
    h("dt", {}, "Params"), h("dd", {}, Object.keys(r.params || {}).join(", ") || "none"),
    r.error ? [h("dt", {}, "Error"), h("dd", { class: "error" }, r.error)] : []);
  const steps = r.steps.map((s) =>
    h("tr", {},
      h("td", { class: "num" }, s.position + 1),
      h("td", {}, s.name),
      h("td", {}, badge(s.status)),
      h("td", { class: "num" }, s.attempts),
      h("td", { class: "num" }, duration(s.started_at, s.finished_at)),
      h("td", { class: "wrap" },
        s.result !== null && s.result !== undefined ? h("pre", {}, JSON.stringify(s.result, null, 2)) : null,
        s.error ? h("div", {},
          h("div", { class: "error" }, s.error.type + ": " + s.error.message),
          s.error.traceback ? h("pre", {}, s.error.traceback) : null) : null)));
  const log = h("div", { id: "log" });
  const live = h("span", { id: "live" });
  show(
    h("h1", {}, "Run ", h("span", { class: "mono" }, r.id)),
    h("div", { class: "card" }, facts),
    h("h2", {}, "Steps"),
    table([["#", "num"], "Step", "Status", ["Attempts", "num"], ["Took", "num"], "Result or error"], steps),
    callSummary(r),
    h("h2", {}, "Log ", live),
    log);
  follow(r.id, log, live, r.status);
}

// A page of the run's connector calls, oldest first (GET /api/runs/ID/calls, as
// `snakepit runs show ID --calls`), with its own pager.
async function callsPage(id) {
  const after = query().get("after");
  const params = new URLSearchParams({ limit: "100" });
  if (after) params.set("after", after);
  const p = await api("/api/runs/" + encodeURIComponent(id) + "/calls?" + params);
  const base = "#/runs/" + encodeURIComponent(p.run_id) + "/calls";
  const rows = p.calls.map((c) => c.outcome === "dropped"
    // The row that stands for records the history did not keep up with.
    ? h("tr", { "data-call": c.id },
      h("td", { class: "num mono" }, c.id),
      h("td", { class: "hide-narrow" }, time(c.time).slice(11)),
      h("td", { colspan: 6, class: "error" }, c.row_count + " calls not recorded: the history did not keep up with them"))
    : h("tr", { "data-call": c.id },
    h("td", { class: "num mono" }, c.id),
    h("td", { class: "hide-narrow" }, time(c.time).slice(11)),
    h("td", {}, c.package), h("td", {}, c.connector), h("td", {}, c.target),
    h("td", { class: c.outcome === "ok" || c.outcome === "committed" ? "" : "error" }, c.outcome),
    h("td", { class: "num" }, count(c.row_count)),
    h("td", { class: "num" }, micros(c.duration_us))));
  const pager = h("div", { class: "pager" });
  if (after) pager.append(h("button", { class: "secondary", onclick: () => { location.hash = base; } }, "« First"));
  if (p.next_after !== null && p.next_after !== undefined) {
    pager.append(h("button", { class: "secondary", id: "calls-next", onclick: () => { location.hash = base + "?after=" + p.next_after; } }, "Next »"));
  }
  show(
    h("h1", {}, "Connector calls of run ", h("a", { href: "#/runs/" + encodeURIComponent(p.run_id), class: "mono" }, p.run_id)),
    h("p", { id: "calls-total" }, p.total + " in all; " + p.calls.length + " shown, " + (after ? "after call #" + after : "from the first") + "."),
    rows.length
      ? table([["#", "num"], ["Time (UTC)", "hide-narrow"], "Package", "Connector", "Target", "Outcome", ["Rows", "num"], ["Took", "num"]], rows)
      : h("p", { class: "muted" }, "No connector calls."),
    pager);
}

function follow(id, log, live, shown) {
  stream = new EventSource("/api/runs/" + encodeURIComponent(id) + "/log");
  live.textContent = "live";
  live.className = "live";
  stream.addEventListener("lines", (ev) => {
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    for (const l of JSON.parse(ev.data)) log.append(logLine(l));
    if (atEnd) log.scrollTop = log.scrollHeight;
  });
  stream.addEventListener("status", (ev) => {
    const status = JSON.parse(ev.data);
    if (status !== shown) {
      // The steps changed: render the run again (the stream starts over with it).
      stop();
      route();
    }
  });
  stream.addEventListener("end", () => {
    stream.close();
    live.textContent = "(ended)";
    live.className = "muted";
  });
}

// ---- Jobs -----------------------------------------------------------------------------

function runForm(job, row) {
  const inputs = job.params.map((p) => h("label", {}, p, h("input", { name: p, placeholder: "default" })));
  const message = h("span", { class: "muted" });
  const form = h("form", { class: "runform", onsubmit: async (ev) => {
    ev.preventDefault();
    const params = {};
    for (const [k, v] of new FormData(ev.target)) if (v !== "") params[k] = v;
    const button = ev.target.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const r = await api("/api/jobs/" + encodeURIComponent(job.name) + "/run", {
        method: "POST", body: JSON.stringify({ params }),
      });
      location.hash = "#/runs/" + encodeURIComponent(r.run_id);
    } catch (e) {
      message.textContent = e.message;
      message.className = "error";
      button.disabled = false;
    }
  } },
    inputs.length ? inputs : h("span", { class: "muted" }, "This job has no params."),
    h("button", { type: "submit" }, "Start run"),
    h("button", { type: "button", class: "secondary", onclick: () => form.parentNode.parentNode.remove() }, "Cancel"),
    message);
  const cell = h("td", { colspan: 6 }, form);
  row.after(h("tr", { class: "runform-row" }, cell));
}

async function jobsPage() {
  const jobs = await api("/api/jobs");
  const rows = jobs.map((j) => {
    const last = j.last_run;
    const row = h("tr", { "data-job": j.name },
      h("td", {}, j.name),
      h("td", {}, j.schedule ? h("code", {}, j.schedule) : h("span", { class: "muted" }, "none"),
        j.schedule ? h("span", { class: "muted" }, " " + j.timezone) : null),
      h("td", {}, time(j.next_tick)),
      h("td", {}, last ? [h("a", { href: "#/runs/" + encodeURIComponent(last.id), class: "mono" }, last.id), " ", badge(last.status)] : h("span", { class: "muted" }, "never")),
      h("td", { class: "hide-narrow" }, j.steps.join(" → ")),
      h("td", {}, h("button", { class: "run-now", onclick: (ev) => {
        if (!row.nextSibling || !row.nextSibling.classList.contains("runform-row")) runForm(j, row);
        ev.target.blur();
      } }, "Run now")));
    return row;
  });
  show(
    h("h1", {}, "Jobs"),
    jobs.length ? table(["Job", "Schedule", "Next tick (UTC)", "Last run", ["Steps", "hide-narrow"], ""], rows)
      : h("p", { class: "muted" }, "No jobs.toml defines a job."));
}

// ---- Pools ----------------------------------------------------------------------------

function isolation(i) {
  const parts = ["uid " + i.uid,
    i.namespaces.length ? i.namespaces.join("+") + " namespaces" : "no namespaces",
    i.landlock.abi ? "landlock ABI " + i.landlock.abi + (i.landlock.fully_enforced ? "" : " (partly)") : "no landlock",
    i.seccomp ? "seccomp" : "no seccomp"];
  return h("div", {},
    h("div", {}, parts.join(", ")),
    i.settings.length ? h("ul", {}, i.settings.map((s) => h("li", {}, h("code", {}, s.setting + " = " + s.value), ": " + s.by))) : null,
    i.missing.length ? h("div", { class: "error" }, "missing: " + i.missing.join("; ")) : null);
}

function poolCard(p) {
  const workers = p.slots.map((w) =>
    h("tr", {},
      h("td", { class: "num" }, w.slot), h("td", { class: "num" }, w.pid === null ? "-" : w.pid),
      h("td", {}, badge(w.state)), h("td", { class: "num" }, w.calls),
      h("td", { class: "num" }, mib(w.rss_bytes)),
      h("td", { class: "num" }, w.uptime_secs === null ? "-" : Math.round(w.uptime_secs) + " s"),
      h("td", { class: "num" }, w.restarts)));
  return h("div", { class: "card", "data-pool": p.name },
    h("h2", {}, "Pool " + p.name + " ", h("span", { class: "muted" }, "generation " + p.generation)),
    h("p", {}, p.live + "/" + p.workers + " live, " + p.failing + " failing, " + p.restarts + " restarts, queue depth " + p.queued),
    h("details", {}, h("summary", {}, "Isolation"), isolation(p.isolation)),
    table([["Worker", "num"], ["Pid", "num"], "State", ["Calls", "num"], ["RSS", "num"], ["Up", "num"], ["Restarts", "num"]], workers));
}

async function poolsPage() {
  const [s, crashes, nodes] = await Promise.all([api("/api/status"), api("/api/crashes"), api("/api/nodes")]);
  const nodeRows = nodes.map((n) =>
    h("tr", { "data-node": n.id },
      h("td", {}, n.host), h("td", { class: "num" }, n.pid), h("td", {}, n.version),
      h("td", {}, time(n.started_at)), h("td", {}, time(n.last_seen)), h("td", { class: "num" }, n.runs),
      h("td", {}, badge(n.lost ? "lost" : "alive"))));
  const crashList = crashes.map((c) =>
    h("div", { class: "card crash" },
      h("div", {}, h("strong", {}, time(c.time)), " pool " + c.pool + " worker " + c.worker +
        " (generation " + c.generation + ", pid " + (c.pid === null ? "-" : c.pid) + "): " + c.what),
      c.stderr.length ? h("pre", {}, c.stderr.join("\n")) : null));
  const open = new Set([...main.querySelectorAll("details[open]")].map((d) => d.closest("[data-pool]").dataset.pool));
  show(
    h("h1", {}, "Pools and workers"),
    h("p", {}, "Generation " + s.generation + " serving since " + time(s.since) + ". Serve pid " + s.pid + ", up " + Math.round(s.uptime_secs) + " s."),
    s.pools.map(poolCard),
    s.retiring.map((r) => h("div", {}, h("h2", {}, "Generation " + r.generation + " finishing its calls"), r.pools.map(poolCard))),
    h("h2", {}, "Nodes"),
    nodeRows.length ? table(["Host", ["Pid", "num"], "Version", "Started", "Last seen", ["Runs", "num"], "State"], nodeRows)
      : h("p", { class: "muted" }, "No node has recorded itself yet."),
    h("h2", {}, "Recent crashes"),
    crashList.length ? crashList : h("p", { class: "muted" }, "No worker has crashed since the serve started."));
  for (const d of main.querySelectorAll("[data-pool]")) if (open.has(d.dataset.pool)) d.querySelector("details").open = true;
}

// ---- Reload ---------------------------------------------------------------------------

function problems(list) {
  return h("ul", {}, list.map((p) => h("li", {}, h("code", {}, p.file), p.entry ? " " + p.entry : "", ": " + p.reason)));
}

async function reloadPage(outcome) {
  const s = await api("/api/status");
  const last = s.last_reload;
  const button = h("button", { id: "reload", onclick: async () => {
    button.disabled = true;
    button.textContent = "Reloading…";
    try {
      const r = await api("/api/reload", { method: "POST", body: "{}" });
      await reloadPage(r);
    } catch (e) {
      await reloadPage({ reply: "error", message: e.message });
    }
  } }, "Reload");
  show(
    h("h1", {}, "Reload"),
    outcome ? h("div", { class: "notice" + (outcome.reply === "reloaded" ? "" : " bad"), id: "reload-outcome" },
      outcome.reply === "reloaded" ? "Generation " + outcome.generation + " serves."
        : outcome.reply === "refused" ? ["Reload refused; generation " + outcome.generation + " still serves.", problems(outcome.problems)]
          : outcome.message) : null,
    h("div", { class: "card" },
      h("p", {}, "Generation " + s.generation + " serves since " + time(s.since) + "; " + s.reloads + " reloads, " + s.failed_reloads + " refused."),
      last ? h("dl", { class: "facts" },
        h("dt", {}, "Last reload"), h("dd", {}, time(last.at) + " (" + last.trigger + ")"),
        h("dt", {}, "Outcome"), h("dd", {}, badge(last.serving ? "serving" : "refused"), " generation " + last.generation + " after " + last.took_ms + " ms"),
        last.problems.length ? [h("dt", {}, "Problems"), h("dd", {}, problems(last.problems))] : [])
        : h("p", { class: "muted" }, "No reload since the serve started."),
      h("p", { class: "muted" }, "A reload loads the install again, starts a new generation of every pool and validates it; the serving generation keeps serving if it is refused."),
      button));
}

// ---- Connectors -----------------------------------------------------------------------

async function connectorsPage() {
  const hours = query().get("hours") || "24";
  const d = await api("/api/connectors?hours=" + encodeURIComponent(hours));
  const rows = d.activity.map((a) => h("tr", {},
    h("td", {}, a.package), h("td", {}, a.connector), h("td", {}, a.target),
    h("td", { class: "num" }, a.calls), h("td", { class: "num" + (a.errors ? " error" : "") }, a.errors),
    h("td", { class: "num" }, (a.total_us / a.calls / 1000).toFixed(2)),
    h("td", { class: "num" }, (a.max_us / 1000).toFixed(2))));
  const pick = h("select", { onchange: (ev) => { location.hash = "#/connectors?hours=" + ev.target.value; } },
    [1, 24, 168, 720].map((n) => h("option", { value: n, selected: String(n) === hours }, n === 1 ? "last hour" : n === 24 ? "last day" : n === 168 ? "last week" : "last 30 days")));
  show(
    h("h1", {}, "Connector activity"),
    h("h2", {}, "Connectors"),
    d.connectors.length ? table(["Name", "Kind", "URL"], d.connectors.map((c) => h("tr", {}, h("td", {}, c.name), h("td", {}, c.kind), h("td", { class: "mono wrap" }, c.url))))
      : h("p", { class: "muted" }, "connectors.toml defines none."),
    h("h2", {}, "Calls since " + time(d.since) + " ", pick),
    rows.length ? table(["Package", "Connector", "Target", ["Calls", "num"], ["Errors", "num"], ["Avg ms", "num"], ["Max ms", "num"]], rows)
      : h("p", { class: "muted" }, "No connector calls in that time."));
}

// ---- Routing --------------------------------------------------------------------------

async function serving() {
  try {
    const s = await api("/api/status");
    document.getElementById("serving").textContent = "generation " + s.generation + " · " + s.apps;
  } catch (e) { /* the page says it */ }
}

async function route() {
  stop();
  const path = location.hash.replace(/^#/, "").split("?")[0] || "/runs";
  const parts = path.split("/").filter(Boolean);
  const page = parts[0] || "runs";
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.page === page);
  try {
    if (page === "runs" && parts[1] && parts[2] === "calls") await callsPage(decodeURIComponent(parts[1]));
    else if (page === "runs" && parts[1]) await runPage(decodeURIComponent(parts[1]));
    else if (page === "runs") { await runsPage(); if (!query().get("after")) timer = setInterval(refreshRuns, 5000); }
    else if (page === "jobs") await jobsPage();
    else if (page === "pools") { await poolsPage(); timer = setInterval(() => poolsPage().catch(fail), 2000); }
    else if (page === "reload") await reloadPage();
    else if (page === "connectors") await connectorsPage();
    else show(h("p", {}, "No such page."));
  } catch (e) { fail(e); }
}

window.addEventListener("hashchange", route);
serving();
route();
