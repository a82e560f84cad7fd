// celeriac dashboard: draws the page its path names from /api, and
// refreshes it when /api/events says something happened (or every tick).
"use strict";

const main = document.getElementById("main");
const path = location.pathname.replace(/\/+$/, "") || "/";

const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) =>
  ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const when = (t) => (t ? new Date(t).toLocaleString() : "–");
const secs = (s) => (s == null ? "–" : s < 1 ? `${Math.round(s * 1000)} ms`
  : s < 120 ? `${s.toFixed(1)} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`);
const num = (n) => (n == null ? "–" : typeof n === "number" ? n.toLocaleString() : esc(n));
const badge = (s) => (s ? `<span class="badge s-${esc(s)}">${esc(s)}</span>` : `<span class="muted">–</span>`);
const pretty = (v) => esc(typeof v === "string" ? v : JSON.stringify(v, null, 2));
const taskLink = (id, label) => `<a href="/tasks/${encodeURIComponent(id)}">${esc(label ?? id)}</a>`;
// A PROGRESS row's meta: {done, total} (or Celery's usual {current, total}).
const bar = (p) => {
  const done = p && (p.done ?? p.current);
  if (!p || !p.total || done == null) return "";
  const pct = Math.max(0, Math.min(100, (100 * done) / p.total));
  return ` <span class="bar" title="${esc(done)}/${esc(p.total)}"><i style="width:${pct}%"></i></span>` +
    ` <small class="progress">${esc(done)}/${esc(p.total)}</small>`;
};

async function api(url) {
  const r = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw Object.assign(new Error(body.error || `HTTP ${r.status}`), { status: r.status });
  return body;
}

function toast(text, bad) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.className = bad ? "show bad" : "show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.className = ""), 4000);
}

// Actions: POST with the token (kept for this tab only).
const tokenKey = "celeriac-dashboard-token";
function askToken() {
  const t = prompt("Dashboard token (for actions):", sessionStorage.getItem(tokenKey) || "");
  if (t !== null) sessionStorage.setItem(tokenKey, t.trim());
}
document.getElementById("token").addEventListener("click", askToken);

async function act(url, label) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(tokenKey);
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(url, { method: "POST", headers });
  const body = await r.json().catch(() => ({}));
  if (r.ok) {
    toast(`${label}: done`);
    refresh(0);
  } else {
    const hint = r.status === 401 ? " (press Token)" : "";
    toast(`${label} refused (${r.status}): ${body.error || ""}${hint}`, true);
  }
  return r.status;
}
main.addEventListener("click", (e) => {
  const b = e.target.closest("button[data-act]");
  if (b) act(b.dataset.act, b.textContent.trim());
});

// Charts: a few lines over the last hour, drawn as SVG.
function chart(title, points, series, unit) {
  const w = 320, h = 150, pad = 28;
  const vals = points.flatMap((p) => series.map((s) => s.get(p) ?? 0));
  const max = Math.max(...vals, unit === "/s" ? 0.1 : 0.001);
  const x = (i) => pad + (i * (w - pad - 4)) / Math.max(1, points.length - 1);
  const y = (v) => h - 16 - (v / max) * (h - 26);
  const lines = series.map((s) => {
    const d = points.map((p, i) => `${x(i).toFixed(1)},${y(s.get(p) ?? 0).toFixed(1)}`).join(" ");
    return `<polyline fill="none" stroke="${s.color}" stroke-width="1.6" points="${d}"/>`;
  }).join("");
  const top = unit === "s" ? secs(max) : `${max.toFixed(max < 10 ? 2 : 0)}${unit}`;
  const legend = series.map((s) => `<span><i style="background:${s.color}"></i>${esc(s.name)}</span>`).join("");
  return `<div class="card chart"><strong>${esc(title)}</strong><div class="legend">${legend}</div>
    <svg viewBox="0 0 ${w} ${h}" preserveAspectRatio="none" role="img" aria-label="${esc(title)}">
    <line class="axis" x1="${pad}" y1="${h - 16}" x2="${w}" y2="${h - 16}"/>
    <line class="axis" x1="${pad}" y1="6" x2="${w}" y2="6"/>
    <text x="0" y="12">${esc(top)}</text><text x="0" y="${h - 18}">0</text>
    <text x="${pad}" y="${h - 3}">-60 min</text><text x="${w - 30}" y="${h - 3}">now</text>${lines}</svg></div>`;
}

const pages = {
  "/": {
    title: "Overview",
    async draw() {
      const o = await api("/api/overview");
      const cards = [["Workers online", o.workers_online]]
        .concat(Object.entries(o.open).map(([s, n]) => [s, n > o.open_cap ? `${o.open_cap}+` : n]))
        .concat(Object.entries(o.last_hour).map(([k, n]) => [`${k} (1 h)`, n]));
      const m = o.minutes;
      const pct = (k, p) => (x) => x[k][p];
      return `<h1>Overview</h1>
        <div class="cards" id="counts">${cards.map(([k, v]) =>
          `<div class="card"><span class="muted">${esc(k)}</span><b>${num(v)}</b></div>`).join("")}</div>
        <h2>Last hour</h2>
        ${o.sampled ? `<p class="muted">Busy hour: charts cover the newest tasks, from ${when(o.covered_from)}.</p>` : ""}
        <div class="charts">
        ${chart("Tasks per second", m, [
          { name: "succeeded", color: "#3f8f3a", get: (x) => x.succeeded },
          { name: "failed", color: "#c2402f", get: (x) => x.failed },
          { name: "retried", color: "#c98a12", get: (x) => x.retried }], "/s")}
        ${chart("Run time", m, [
          { name: "p50", color: "#2f6fb3", get: pct("runtime", "p50") },
          { name: "p95", color: "#c98a12", get: pct("runtime", "p95") },
          { name: "p99", color: "#c2402f", get: pct("runtime", "p99") }], "s")}
        ${chart("Queue wait" + (o.events ? "" : " (needs events: worker -E)"), m, [
          { name: "p50", color: "#2f6fb3", get: pct("wait", "p50") },
          { name: "p95", color: "#c98a12", get: pct("wait", "p95") },
          { name: "p99", color: "#c2402f", get: pct("wait", "p99") }], "s")}
        </div>`;
    },
  },
  "/workers": {
    title: "Workers",
    async draw() {
      const d = await api("/api/workers");
      const rows = d.workers.map((w) => `<tr class="${w.alive ? "alive" : "dead"}" data-host="${esc(w.hostname)}">
        <td><span class="dot"></span></td><td>${esc(w.hostname)}</td><td class="num">${esc(w.pid ?? "–")}</td>
        <td class="num">${secs(w.heartbeat_age_secs)}</td><td class="num">${num(w.active)}</td>
        <td class="num">${num(w.processed)}</td><td class="num">${num(w.concurrency)}</td>
        <td class="hide-narrow">${esc((w.queues || []).join(", ") || "–")}</td>
        <td class="num hide-narrow">${w.rss_kb == null ? "–" : `${(w.rss_kb / 1024).toFixed(0)} MB`}</td><td class="hide-narrow">${w.loadavg ? esc(w.loadavg.map((l) => l.toFixed(2)).join(" ")) : "–"}</td>
        <td class="hide-narrow">${when(w.started_at)}</td><td class="hide-narrow">${esc(w.source)}</td></tr>`).join("");
      return `<h1>Workers <span class="muted">${d.online} online</span></h1>
        ${d.events ? "" : `<p class="muted">Not connected to the events stream: active and processed counts need it.</p>`}
        <div class="scroll"><table id="workers"><thead><tr><th></th><th>Host</th><th class="num">PID</th>
        <th class="num">Heartbeat</th><th class="num">Active</th><th class="num">Processed</th>
        <th class="num">Pool</th><th class="hide-narrow">Queues</th><th class="num hide-narrow">Peak RSS</th>
        <th class="hide-narrow">Load</th><th class="hide-narrow">Started</th><th class="hide-narrow">Seen by</th></tr></thead>
        <tbody>${rows || `<tr><td colspan="12" class="muted">No workers.</td></tr>`}</tbody></table></div>`;
    },
  },
  "/queues": {
    title: "Queues",
    async draw() {
      const d = await api("/api/queues");
      const rate = (r) => (r == null ? "–" : r.toFixed(1));
      const rows = d.queues.map((q) => `<tr data-queue="${esc(q.name)}"><td>${esc(q.name)}</td>
        <td class="num">${num(q.messages)}</td><td class="num">${num(q.ready)}</td><td class="num">${num(q.unacked)}</td>
        <td class="num">${num(q.consumers)}</td><td class="num">${rate(q.rate_in)}</td><td class="num">${rate(q.rate_out)}</td></tr>`).join("");
      const dl = d.dead_letters;
      const letters = dl.listed.map((l) => `<tr data-letter="${esc(l.id)}"><td>${l.id ? taskLink(l.id) : "–"}</td>
        <td>${esc(l.task)}</td><td>${esc(l.reason)}</td><td class="hide-narrow">${esc(l.queue)}</td>
        <td>${l.id ? `<button data-act="/api/dlq/${encodeURIComponent(l.id)}/replay">Replay</button>` : ""}</td></tr>`).join("");
      return `<h1>Queues</h1>
        <p class="muted">From ${d.source === "management" ? "the RabbitMQ management API" : "passive declares (depth and consumers only)"}${d.note ? `: ${esc(d.note)}` : ""}.</p>
        <div class="scroll"><table id="queues"><thead><tr><th>Queue</th><th class="num">Messages</th><th class="num">Ready</th>
        <th class="num">Unacked</th><th class="num">Consumers</th><th class="num">In/s</th><th class="num">Out/s</th></tr></thead>
        <tbody>${rows}</tbody></table></div>
        <p>Delayed (countdown/eta) messages: <b id="delayed">${num(d.delayed.messages)}</b> in ${num(d.delayed.queues)} delay queues.</p>
        <h2>Dead letters <span class="muted">${esc(dl.queue)}: ${num(dl.messages)}</span></h2>
        <div class="scroll"><table id="dead-letters"><thead><tr><th>Task id</th><th>Task</th><th>Reason</th>
        <th class="hide-narrow">From</th><th></th></tr></thead>
        <tbody>${letters || `<tr><td colspan="5" class="muted">None.</td></tr>`}</tbody></table></div>`;
    },
  },
  "/tasks": {
    title: "Tasks",
    form() {
      const q = new URLSearchParams(location.search);
      const v = (k) => esc(q.get(k) || "");
      const states = ["", "RECEIVED", "STARTED", "PROGRESS", "SUCCESS", "FAILURE", "RETRY", "REVOKED", "REJECTED"];
      return `<h1>Tasks</h1><form class="search" method="get" action="/tasks">
        <input name="id" placeholder="task id" value="${v("id")}">
        <input name="name" placeholder="task name" value="${v("name")}">
        <select name="state">${states.map((s) => `<option ${q.get("state") === s ? "selected" : ""} value="${s}">${s || "any state"}</option>`).join("")}</select>
        <input name="worker" placeholder="worker" value="${v("worker")}">
        <input name="since" placeholder="since (RFC 3339)" value="${v("since")}">
        <input name="until" placeholder="until (RFC 3339)" value="${v("until")}">
        <button>Search</button></form><div id="data"></div>`;
    },
    async draw() {
      const q = new URLSearchParams(location.search);
      const d = await api(`/api/tasks?${q}`);
      const rows = d.tasks.map((t) => `<tr data-id="${esc(t.id)}"><td>${taskLink(t.id, t.id.slice(0, 8))}</td>
        <td>${esc(t.name)}</td><td>${badge(t.state)}${bar(t.progress)}</td><td class="hide-narrow">${esc(t.worker)}</td>
        <td>${when(t.created_at)}</td><td class="num">${secs(t.runtime)}</td></tr>`).join("");
      const older = new URLSearchParams(q);
      if (d.next) older.set("before", d.next);
      return `<div class="scroll"><table id="tasks"><thead><tr><th>Id</th><th>Name</th><th>State</th>
        <th class="hide-narrow">Worker</th><th>Created</th><th class="num">Run time</th></tr></thead>
        <tbody>${rows || `<tr><td colspan="6" class="muted">No tasks match.</td></tr>`}</tbody></table></div>
        <p>${q.get("before") ? `<a href="/tasks?${esc(new URLSearchParams([...q].filter(([k]) => k !== "before")))}">Newest</a> · ` : ""}
        ${d.next ? `<a id="older" href="/tasks?${esc(older)}">Older →</a>` : ""}</p>`;
    },
    // A later page stays as it is; the newest one follows new tasks.
    live: () => !new URLSearchParams(location.search).get("before"),
  },
  task: {
    title: "Task",
    async draw(id) {
      const u = encodeURIComponent(id);
      const revoke = `<button class="danger" data-act="/api/tasks/${u}/revoke">Revoke</button>`;
      let t;
      try {
        t = await api(`/api/tasks/${u}`);
      } catch (e) {
        // No row: not received by a worker yet (waiting, or scheduled for
        // later), or forgotten. It can still be revoked by id.
        if (e.status !== 404) throw e;
        return `<h1>${esc(id)} ${badge("PENDING")}</h1><div class="actions">${revoke}</div>
          <p class="muted">No record of this task: not yet received by a worker (waiting in a queue, or
          scheduled for later), or unknown or forgotten.</p>`;
      }
      const fact = (k, v) => `<dt>${esc(k)}</dt><dd>${v}</dd>`;
      const err = t.error ? `<h2>Error</h2><pre id="error">${esc(t.error.type)}: ${esc(t.error.message)}</pre>
        ${t.error.traceback ? `<h2>Traceback</h2><pre id="traceback">${esc(t.error.traceback)}</pre>` : ""}` : "";
      return `<h1>${esc(t.name || "task")} ${badge(t.state)}${bar(t.progress)}</h1>
        <div class="actions">${revoke}<button data-act="/api/tasks/${u}/retry">Retry</button></div>
        <h2>Details</h2><dl class="facts" id="facts">
        ${fact("Id", esc(t.id))}${fact("Worker", esc(t.worker || "–"))}${fact("Queue", esc(t.queue || "–"))}
        ${fact("Retries", num(t.retries))}${fact("Recorded", when(t.created_at))}${fact("Started", when(t.started_at))}
        ${fact("Done", when(t.done_at))}${fact("Run time", secs(t.runtime))}
        ${t.parent_id ? fact("Parent", taskLink(t.parent_id)) : ""}${t.root_id && t.root_id !== t.id ? fact("Root", taskLink(t.root_id)) : ""}
        ${t.group_id ? fact("Group", esc(t.group_id)) : ""}</dl>
        <h2>Arguments</h2><pre id="args">${pretty(t.args)}</pre><pre id="kwargs">${pretty(t.kwargs)}</pre>
        <h2>Result</h2><pre id="result">${pretty(t.result)}</pre>${err}
        ${t.progress ? `<h2>Progress</h2><pre>${pretty(t.progress)}</pre>` : ""}
        ${workflow(t)}`;
    },
  },
  "/schedules": {
    title: "Schedules",
    async draw() {
      const d = await api("/api/schedules");
      const rows = d.schedules.map((s) => {
        const n = encodeURIComponent(s.name);
        const grid = s.runs.map((r) => `<a href="/tasks/${encodeURIComponent(r.id)}" class="s-${esc(r.state || "none")}"
          title="${esc(when(r.at))}: ${esc(r.state || "no record")}"></a>`).join("");
        return `<tr class="schedule" data-name="${esc(s.name)}"><td><b>${esc(s.name)}</b>
          ${s.paused ? ` <span class="badge s-paused">paused</span>` : ""}<br><small class="muted">${esc(s.description || s.source)}</small></td>
          <td>${esc(s.trigger || "–")}<br><small class="muted">${esc(s.task || "")}</small></td>
          <td class="fires">${s.next.map((f) => esc(when(f))).join("<br>") || "–"}</td>
          <td>${s.last_run_at ? when(s.last_run_at) : "never"}<br>${s.last_task_id ? taskLink(s.last_task_id, "") + badge(s.last_state) : ""}
          <small class="muted">${num(s.total_runs)} runs</small></td>
          <td><div class="grid">${grid}</div></td>
          <td><div class="actions">${s.paused ? `<button data-act="/api/schedules/${n}/resume">Resume</button>`
            : `<button data-act="/api/schedules/${n}/pause">Pause</button>`}
          <button data-act="/api/schedules/${n}/run">Run now</button></div></td></tr>`;
      }).join("");
      const leader = d.leader ? `Leading beat: <b id="leader">${esc(d.leader.holder)}</b> (lease ${secs(d.leader.expires_in_secs)} left)`
        : `<b id="leader">No beat leads</b> (none running, or its lease expired)`;
      return `<h1>Schedules</h1><p>${leader}</p>
        <div class="scroll"><table id="schedules"><thead><tr><th>Entry</th><th>Trigger</th><th>Next 5</th>
        <th>Last run</th><th>Recent runs</th><th></th></tr></thead>
        <tbody>${rows || `<tr><td colspan="6" class="muted">No schedule entries.</td></tr>`}</tbody></table></div>`;
    },
  },
};

function workflow(t) {
  const w = t.workflow;
  if (!w) return "";
  const kids = new Map();
  for (const n of w.tree) {
    const p = n.id === w.root_id ? null : n.parent_id || w.root_id;
    if (!kids.has(p)) kids.set(p, []);
    kids.get(p).push(n);
  }
  const seen = new Set();
  const draw = (parent) => {
    const list = (kids.get(parent) || []).filter((n) => !seen.has(n.id));
    list.forEach((n) => seen.add(n.id));
    return list.length ? `<ul class="tree">${list.map((n) => `<li class="${n.id === t.id ? "here" : ""}">
      ${taskLink(n.id, n.name || n.id)} ${badge(n.state)}${draw(n.id)}</li>`).join("")}</ul>` : "";
  };
  const g = w.group;
  const group = g ? `<h3>Group ${esc(g.id)}${g.chord ? ` · chord ${num(g.chord.done)}/${num(g.chord.size)} ${esc(g.chord.state)}
    → ${taskLink(g.chord.callback_id, "callback")}` : ""}</h3><ul class="tree">${g.members.map((n) =>
    `<li>${taskLink(n.id, n.name || n.id)} ${badge(n.state)}</li>`).join("")}</ul>` : "";
  return `<h2>Workflow</h2><div id="workflow">${draw(null)}${group}</div>`;
}

// Which page, and drawing it again on demand.
const taskId = path.startsWith("/tasks/") ? decodeURIComponent(path.slice(7)) : null;
const page = taskId ? pages.task : pages[path];
let target = main;
if (page && page.form) {
  main.innerHTML = page.form();
  target = document.getElementById("data");
}
document.querySelectorAll("nav a").forEach((a) => {
  const h = a.getAttribute("href");
  if (h === path || (h !== "/" && path.startsWith(h))) a.classList.add("here");
});
if (page) document.title = `${page.title} · celeriac`;

let drawing = false, again = false, lastHtml = "";
async function draw() {
  if (!page) { main.innerHTML = `<h1>Not found</h1>`; return; }
  if (drawing) { again = true; return; }
  drawing = true;
  try {
    const html = await page.draw(taskId);
    // Unchanged: left alone (no flicker, no button replaced under a click).
    if (html !== lastHtml) {
      target.innerHTML = html;
      lastHtml = html;
    }
  } catch (e) {
    target.innerHTML = lastHtml = `<p class="error">Cannot load: ${esc(e.message)}</p>`;
  }
  drawing = false;
  if (again) { again = false; draw(); }
}
let timer = null;
function refresh(delay) {
  if (page && page.live && !page.live()) return;
  clearTimeout(timer);
  timer = setTimeout(draw, delay);
}
draw();

// Live updates: events (debounced) and a tick every few seconds.
const live = document.getElementById("live");
function listen() {
  const es = new EventSource("/api/events");
  es.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  es.onerror = () => { live.textContent = "offline"; live.className = "live off"; };
  es.addEventListener("celery", () => refresh(700));
  es.addEventListener("tick", () => refresh(0));
  // Browsers keep few connections per server: let this one go with the page.
  addEventListener("pagehide", () => es.close());
}
listen();
