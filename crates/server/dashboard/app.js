// Tidewire dashboard: plain script, no libraries. Talks to /dashboard/api/* with
// the session cookie the login sets; the server enforces read-only sessions, the
// page only hides what they cannot do.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { session: null, view: "overview", cursor: "0", selected: null, timer: null, ops: [], history: [], histPos: 0, commands: [] };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick" || k === "onsubmit") e[k] = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c instanceof Node ? c : String(c));
  return e;
}

async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
  const res = await fetch("api/" + path, { credentials: "same-origin", ...opts });
  let data = null;
  try { data = await res.json(); } catch (_) { /* not JSON */ }
  if (res.status === 401 && path !== "login") { showLogin(); }
  if (!res.ok) throw new Error((data && data.error) || res.statusText);
  return data;
}

const readOnly = () => !state.session || state.session.role !== "admin";

// ---- login ----------------------------------------------------------------
function showLogin() {
  stopTimer();
  closeTail();
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#credential").focus();
}

function showApp() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#who").textContent = `${state.session.user} · ${state.session.role}`;
  document.body.classList.toggle("read-only", readOnly());
  api("commands").then((names) => {
    state.commands = names;
    const list = $("#command-names");
    list.replaceChildren(...names.filter((n) => !n.includes(" ")).map((n) => el("option", { value: n })));
  }).catch(() => {});
  show(state.view);
}

$("#login-form").onsubmit = async (ev) => {
  ev.preventDefault();
  $("#login-error").textContent = "";
  try {
    state.session = await api("login", { credential: $("#credential").value });
    $("#credential").value = "";
    showApp();
  } catch (e) {
    $("#login-error").textContent = e.message;
  }
};

$("#logout").onclick = async () => {
  await api("logout", {}).catch(() => {});
  state.session = null;
  showLogin();
};

// ---- tabs -----------------------------------------------------------------
function stopTimer() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

function show(view) {
  state.view = view;
  stopTimer();
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === view));
  document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== "view-" + view; });
  if (view === "overview") { refreshOverview(); state.timer = setInterval(refreshOverview, 1000); }
  if (view === "keys") scanKeys(true);
  if (view === "console") $("#console-in").focus();
  if (view === "slowlog") refreshSlowlog();
  if (view === "realtime") { refreshRealtime(); state.timer = setInterval(refreshRealtime, 2000); }
  else closeTail();
  if (view === "queues") refreshQueues();
  if (view === "primitives") refreshPrimitives();
  if (view === "memory") refreshMemory();
  if (view === "qstash") refreshQstash();
  if (view === "rtkeys") refreshKeys();
}
document.querySelectorAll(".tab").forEach((t) => { t.onclick = () => show(t.dataset.view); });

// ---- overview -------------------------------------------------------------
function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

async function refreshOverview() {
  let o;
  try { o = await api("overview"); } catch (_) { return; }
  if (o.ops_per_sec != null) {
    state.ops.push(o.ops_per_sec);
    if (state.ops.length > 120) state.ops.shift();
  }
  const hit = o.hit_rate == null ? "–" : (o.hit_rate * 100).toFixed(1) + " %";
  const cards = [
    ["ops/s", o.ops_per_sec == null ? "…" : o.ops_per_sec.toFixed(0)],
    ["commands", o.ops_total],
    ["keys", o.keys],
    ["memory used", bytes(o.used_memory)],
    ["memory resident", bytes(o.used_memory_rss)],
    ["hit rate", hit],
    ["evicted keys", o.evicted_keys],
    ["RESP clients", o.clients.resp],
    ["REST requests", o.clients.rest_requests_total],
    ["realtime connections", o.clients.realtime],
    ["realtime channels", o.realtime.channels],
    ["messages in / out", `${o.realtime.messages_in} / ${o.realtime.messages_out}`],
  ];
  $("#cards").replaceChildren(...cards.map(([label, value]) =>
    el("div", { class: "card" }, el("div", { class: "label", text: label }), el("div", { class: "value", text: String(value) }))));
  drawChart();
}

function drawChart() {
  const c = $("#chart");
  const dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth || 900, h = c.clientHeight || 220;
  c.width = w * dpr; c.height = h * dpr;
  const g = c.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  const data = state.ops;
  const max = Math.max(10, ...data) * 1.15;
  g.strokeStyle = "#2a3644"; g.fillStyle = "#8796a5"; g.font = "11px sans-serif"; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = 8 + (h - 24) * i / 4;
    g.beginPath(); g.moveTo(40, y); g.lineTo(w - 4, y); g.stroke();
    g.fillText(Math.round(max * (1 - i / 4)), 2, y + 4);
  }
  if (data.length < 2) return;
  const x = (i) => 40 + (w - 44) * i / 119;
  const y = (v) => 8 + (h - 24) * (1 - v / max);
  const off = 120 - data.length;
  g.strokeStyle = "#3fb6a8"; g.lineWidth = 2;
  g.beginPath();
  data.forEach((v, i) => { i ? g.lineTo(x(i + off), y(v)) : g.moveTo(x(i + off), y(v)); });
  g.stroke();
}

// ---- keys -----------------------------------------------------------------
async function scanKeys(fresh) {
  if (fresh) { state.cursor = "0"; $("#keys").replaceChildren(); }
  const q = new URLSearchParams({ cursor: state.cursor, match: $("#key-pattern").value || "*", type: $("#key-type").value, count: "200" });
  let page;
  try { page = await api("keys?" + q); } catch (e) { $("#keys").append(el("li", { class: "error", text: e.message })); return; }
  for (const k of page.keys) {
    const li = el("li", { "data-key": k.key }, el("span", { class: "mono", text: k.key }), el("span", { class: "t", text: k.type }));
    li.onclick = () => openKey(k.key);
    $("#keys").append(li);
  }
  state.cursor = String(page.cursor);
  $("#keys-more").hidden = state.cursor === "0";
  // A filtered SCAN may return empty pages before the end: keep going a little.
  if (page.keys.length === 0 && state.cursor !== "0" && fresh) scanKeys(false);
}
$("#key-search").onsubmit = (ev) => { ev.preventDefault(); scanKeys(true); };
$("#keys-more").onclick = () => scanKeys(false);

function pretty(s) {
  const t = (s || "").trim();
  if (t.startsWith("{") || t.startsWith("[")) {
    try { return JSON.stringify(JSON.parse(t), null, 2); } catch (_) { /* not JSON */ }
  }
  return s;
}

function ttlText(pttl) {
  if (pttl === -1) return "no TTL";
  if (pttl < 0) return "–";
  return (pttl / 1000).toFixed(1) + " s";
}

async function edit(body, reopen = true) {
  try {
    await api("key", body);
    if (reopen) await openKey(body.key);
  } catch (e) {
    alert(e.message);
  }
}

function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c))))));
}

function button(text, onclick, cls) {
  const b = el("button", { text, class: (cls || "") + " write" });
  b.onclick = onclick;
  if (readOnly()) b.hidden = true;
  return b;
}

function writeRow(...children) {
  const r = el("div", { class: "row write" }, ...children);
  if (readOnly()) r.hidden = true;
  return r;
}

function input(placeholder, cls) { return el("input", { placeholder, class: cls || "" }); }

async function openKey(key) {
  state.selected = key;
  document.querySelectorAll("#keys li").forEach((li) => li.classList.toggle("selected", li.dataset.key === key));
  const d = $("#key-detail");
  let k;
  try { k = await api("key?" + new URLSearchParams({ key })); } catch (e) { d.replaceChildren(el("p", { class: "error", text: e.message })); return; }
  const ttlIn = input("seconds");
  const head = [
    el("h2", { class: "mono", text: k.key }),
    el("div", { class: "muted", id: "key-meta", text: `${k.type} · length ${k.length ?? "–"} · TTL ${ttlText(k.pttl)}` }),
    writeRow(ttlIn,
      button("Set TTL", () => edit({ op: "expire", key, seconds: parseInt(ttlIn.value, 10) })),
      button("Persist", () => edit({ op: "persist", key })),
      button("Delete key", async () => {
        if (!confirm(`Delete ${key}?`)) return;
        await edit({ op: "del", key }, false);
        d.replaceChildren(el("p", { class: "muted", text: `${key} deleted.` }));
        document.querySelector(`#keys li[data-key="${CSS.escape(key)}"]`)?.remove();
      }, "danger")),
  ];
  const body = [];
  if (k.type === "string") {
    const ta = el("textarea", { id: "string-value", class: "mono" });
    ta.value = pretty(k.value);
    ta.readOnly = readOnly();
    body.push(ta, writeRow(button("Save", () => edit({ op: "set", key, value: ta.value }))));
  } else if (k.type === "hash") {
    // HGETALL answers a map (an object); an HSCAN page a flat array.
    const pairs = [];
    if (Array.isArray(k.value)) for (let i = 0; i + 1 < k.value.length; i += 2) pairs.push([k.value[i], k.value[i + 1]]);
    else pairs.push(...Object.entries(k.value));
    body.push(table(["field", "value", ""], pairs.map(([f, v]) => [el("span", { class: "mono", text: f }), el("span", { class: "mono", text: v }), button("✕", () => edit({ op: "hdel", key, field: f }))])));
    const f = input("field", "hash-field"), v = input("value", "hash-value");
    body.push(writeRow(f, v, button("Set field", () => edit({ op: "hset", key, field: f.value, value: v.value }))));
  } else if (k.type === "list") {
    body.push(table(["index", "value", ""], k.value.map((v, i) => {
      const idx = k.start + i;
      return [String(idx), el("span", { class: "mono", text: v }), button("Edit", () => {
        const nv = prompt(`New value at ${idx}`, v);
        if (nv != null) edit({ op: "lset", key, index: idx, value: nv });
      })];
    })));
    const v = input("value");
    body.push(writeRow(v, button("LPUSH", () => edit({ op: "lpush", key, value: v.value })), button("RPUSH", () => edit({ op: "rpush", key, value: v.value })), button("LREM", () => edit({ op: "lrem", key, value: v.value }))));
  } else if (k.type === "set") {
    body.push(table(["member", ""], k.value.map((m) => [el("span", { class: "mono", text: m }), button("✕", () => edit({ op: "srem", key, value: m }))])));
    const v = input("member");
    body.push(writeRow(v, button("SADD", () => edit({ op: "sadd", key, value: v.value }))));
  } else if (k.type === "zset") {
    const rows = [];
    for (let i = 0; i + 1 < k.value.length; i += 2) {
      const m = k.value[i];
      rows.push([el("span", { class: "mono", text: m }), String(k.value[i + 1]), button("✕", () => edit({ op: "zrem", key, value: m }))]);
    }
    body.push(table(["member", "score", ""], rows));
    const m = input("member"), s = input("score");
    body.push(writeRow(m, s, button("ZADD", () => edit({ op: "zadd", key, value: m.value, score: parseFloat(s.value) }))));
  } else if (k.type === "stream") {
    body.push(table(["id", "fields"], (k.value || []).map(([id, fields]) => {
      const parts = [];
      for (let i = 0; i + 1 < fields.length; i += 2) parts.push(`${fields[i]}=${fields[i + 1]}`);
      return [el("span", { class: "mono", text: id }), el("span", { class: "mono", text: parts.join("  ") })];
    })));
    const groups = (k.groups || []).map((g) => {
      let o = g;
      if (Array.isArray(g)) { o = {}; for (let i = 0; i + 1 < g.length; i += 2) o[g[i]] = g[i + 1]; }
      return [o.name, String(o.consumers), String(o.pending), String(o["last-delivered-id"])];
    });
    body.push(el("h3", { text: "Consumer groups" }), table(["group", "consumers", "pending", "last delivered"], groups));
    const f = input("field"), v = input("value");
    body.push(writeRow(f, v, button("XADD", () => edit({ op: "xadd", key, fields: [[f.value, v.value]] }))));
  } else {
    body.push(el("p", { class: "muted", text: `No viewer for ${k.type} yet; use the console.` }));
  }
  d.replaceChildren(...head, ...body);
}

// ---- console --------------------------------------------------------------
/** Splits a command line like redis-cli: spaces separate, quotes group. */
function splitArgs(line) {
  const out = [];
  const re = /"((?:\\.|[^"\\])*)"|'([^']*)'|(\S+)/g;
  let m;
  while ((m = re.exec(line))) {
    if (m[1] !== undefined) out.push(m[1].replace(/\\(.)/g, (_, c) => ({ n: "\n", t: "\t", r: "\r" })[c] || c));
    else if (m[2] !== undefined) out.push(m[2]);
    else out.push(m[3]);
  }
  return out;
}

function format(v, indent = "") {
  if (v === null) return "(nil)";
  if (Array.isArray(v)) {
    if (!v.length) return "(empty array)";
    return v.map((x, i) => `${indent}${i + 1}) ${format(x, indent + "   ").trimStart()}`).join("\n");
  }
  if (typeof v === "number") return `(integer) ${v}`;
  if (typeof v === "object") return JSON.stringify(v, null, 2);
  return `"${v}"`;
}

function print(text, cls) {
  const out = $("#console-out");
  out.append(el("div", { class: cls || "", text }));
  out.scrollTop = out.scrollHeight;
}

$("#console-form").onsubmit = async (ev) => {
  ev.preventDefault();
  const line = $("#console-in").value.trim();
  if (!line) return;
  state.history.push(line);
  state.histPos = state.history.length;
  $("#console-in").value = "";
  print("> " + line, "muted");
  try {
    const r = await api("command", { args: splitArgs(line) });
    print(format(r.result));
  } catch (e) {
    print("(error) " + e.message, "error");
  }
};

$("#console-in").addEventListener("keydown", (ev) => {
  const inp = ev.target;
  if (ev.key === "ArrowUp" && state.histPos > 0) {
    state.histPos--; inp.value = state.history[state.histPos]; ev.preventDefault();
  } else if (ev.key === "ArrowDown") {
    state.histPos = Math.min(state.history.length, state.histPos + 1);
    inp.value = state.history[state.histPos] || ""; ev.preventDefault();
  } else if (ev.key === "Tab") {
    const word = inp.value.trimStart().toUpperCase();
    if (!word) return;
    const hits = state.commands.filter((n) => n.startsWith(word));
    ev.preventDefault();
    if (hits.length === 1) inp.value = hits[0] + " ";
    else if (hits.length > 1) {
      let p = hits[0];
      for (const h of hits) while (!h.startsWith(p)) p = p.slice(0, -1);
      inp.value = p;
      print(hits.slice(0, 40).join("  "), "muted");
    }
  }
});

// ---- slowlog --------------------------------------------------------------
async function refreshSlowlog() {
  const tbody = $("#slowlog tbody");
  try {
    const rows = await api("slowlog");
    tbody.replaceChildren(...rows.map((r) => el("tr", {},
      el("td", { text: r.id }), el("td", { text: new Date(r.time * 1000).toLocaleString() }), el("td", { text: r.micros }),
      el("td", { class: "mono", text: (r.args || []).join(" ") }), el("td", { text: r.client || "" }))));
  } catch (e) {
    tbody.replaceChildren(el("tr", {}, el("td", { class: "error", colspan: "5", text: e.message })));
  }
}
$("#slowlog-refresh").onclick = refreshSlowlog;

// ---- realtime -------------------------------------------------------------
// Channels and connections are polled every 2 s; the selected channel's messages
// arrive over an EventSource (the tail), closed when another channel is picked or
// the tab is left.
const rt = { app: null, name: null, tail: null };
const TAIL_LINES = 200;

function closeTail() {
  if (rt.tail) rt.tail.close();
  rt.tail = null;
}

const q = (params) => new URLSearchParams(params).toString();

async function refreshRealtime() {
  let data;
  try { data = await api("realtime/channels"); } catch (e) {
    $("#rt-apps").replaceChildren(el("p", { class: "error", text: e.message }));
    return;
  }
  $("#rt-apps").replaceChildren(...data.apps.map((a) => {
    const rows = a.channels.map((c) => {
      const tr = el("tr", { class: "channel" + (a.app === rt.app && c.name === rt.name ? " selected" : ""), "data-channel": c.name },
        el("td", { class: "mono", text: c.name }), el("td", { text: c.connections }), el("td", { text: c.subscribers }),
        el("td", { text: c.publishers }), el("td", { text: c.presence_members }));
      tr.onclick = () => openChannel(a.app, c.name);
      return tr;
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { class: "muted", colspan: "5", text: "no active channels" })));
    return el("div", {},
      el("p", {}, el("strong", { text: a.app }), el("span", { class: "muted", text: ` · ${a.connections} connections · ${a.total_channels} channels · ${a.presence_members} members · messages in/out ${a.messages_in} / ${a.messages_out}` })),
      el("table", {}, el("thead", {}, el("tr", {}, ...["channel", "connections", "subscribers", "publishers", "members"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...rows)));
  }));
  const rows = [];
  for (const a of data.apps) {
    let c;
    try { c = await api("realtime/connections?" + q({ app: a.app })); } catch (_) { continue; }
    for (const conn of c.connections) {
      rows.push(el("tr", { "data-connection": conn.id },
        el("td", { text: a.app }), el("td", { class: "mono", text: conn.id + (conn.disconnected_ms ? " (parked)" : "") }),
        el("td", { text: conn.clientId || "" }), el("td", { class: "mono", text: conn.channels.join(", ") }),
        el("td", {}, button("Disconnect", () => disconnect(a.app, conn.id), "danger"))));
    }
  }
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "muted", colspan: "5", text: "no connections" })));
  $("#rt-conns tbody").replaceChildren(...rows);
  if (rt.name) loadChannel();
}

async function disconnect(app, id) {
  if (!confirm(`Disconnect ${id}?`)) return;
  try { await api("realtime/disconnect", { app, id }); } catch (e) { alert(e.message); }
  refreshRealtime();
}

function tailLine(text, cls) {
  const out = $("#rt-tail");
  if (!out) return;
  out.append(el("div", { class: cls || "", text }));
  while (out.childNodes.length > TAIL_LINES) out.firstChild.remove();
  out.scrollTop = out.scrollHeight;
}

function openChannel(app, name) {
  rt.app = app;
  rt.name = name;
  closeTail();
  $("#rt-channel").replaceChildren(
    el("h2", { class: "mono", text: name }), el("div", { id: "rt-info" }),
    el("h3", { text: "Live tail" }), el("pre", { id: "rt-tail" }));
  const src = new EventSource("api/realtime/tail?" + q({ app, name }));
  src.addEventListener("message", (ev) => {
    let m;
    try { m = JSON.parse(ev.data); } catch (_) { m = { data: ev.data }; }
    const data = typeof m.data === "string" ? m.data : JSON.stringify(m.data);
    tailLine(`${new Date(m.timestamp || Date.now()).toLocaleTimeString()}  ${m.name || "(no name)"}  ${data}${m.clientId ? "  · " + m.clientId : ""}`);
  });
  src.addEventListener("note", (ev) => tailLine(ev.data, "note"));
  src.onopen = () => tailLine("tail open: waiting for messages…", "note");
  rt.tail = src;
  document.querySelectorAll("#rt-apps tr.channel").forEach((tr) => tr.classList.toggle("selected", tr.dataset.channel === name));
  loadChannel();
}

async function loadChannel() {
  const { app, name } = rt;
  let c;
  try { c = await api("realtime/channel?" + q({ app, name })); } catch (e) {
    $("#rt-info").replaceChildren(el("p", { class: "error", text: e.message }));
    return;
  }
  if (rt.name !== name || !$("#rt-info")) return;
  const str = (v) => (v == null ? "" : typeof v === "string" ? v : JSON.stringify(v));
  const members = c.members.map((m) => [el("span", { class: "mono", text: m.clientId }), el("span", { class: "mono", text: m.connectionId }), str(m.data)]);
  const history = c.history.map((m) => [String(m.serial), new Date(m.timestamp).toLocaleTimeString(), el("span", { class: "mono", text: m.name || "" }), el("span", { class: "mono", text: str(m.data) })]);
  const o = c.occupancy;
  $("#rt-info").replaceChildren(
    el("p", { class: "muted", text: o ? `${o.connections} connections · ${o.subscribers} subscribers · ${o.publishers} publishers · ${o.presence_members} members` : "not active (history only)" }),
    el("h3", { text: `Presence (${members.length})` }),
    members.length ? table(["clientId", "connection", "data"], members) : el("p", { class: "muted", text: "nobody present" }),
    el("h3", { text: "Recent history" }),
    history.length ? table(["serial", "time", "name", "data"], history) : el("p", { class: "muted", text: "no history" }));
}

// ---- queues ---------------------------------------------------------------
// Bull and BullMQ queues: counts per state, a page of jobs per state, a job's
// details, and retry / promote / clean (admin sessions; the server checks too).
const qs = { queue: null, state: "failed", start: 0, job: null };
const PAGE = 25;
const when = (ms) => (ms == null || ms === "" ? "" : new Date(Number(ms)).toLocaleString());
const qkey = (q) => `${q.prefix}:${q.name}`;

async function refreshQueues() {
  let data;
  try { data = await api("queues"); } catch (e) {
    $("#queues tbody").replaceChildren(el("tr", {}, el("td", { class: "error", colspan: "7", text: e.message })));
    return;
  }
  const rows = data.queues.map((q) => {
    const c = q.counts;
    const tr = el("tr", { "data-queue": qkey(q), class: qs.queue && qkey(qs.queue) === qkey(q) ? "selected" : "" },
      el("td", { class: "mono", text: qkey(q) + (q.paused ? " (paused)" : "") }), el("td", { text: q.kind }),
      el("td", { text: (c.wait || 0) + (c.paused || 0) + (c.prioritized || 0) }), el("td", { text: c.active || 0 }),
      el("td", { text: c.delayed || 0 }), el("td", { text: c.completed || 0 }), el("td", { text: c.failed || 0 }));
    tr.onclick = () => { qs.queue = q; qs.start = 0; loadQueue(); };
    return tr;
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "muted", colspan: "7", text: "no queues found" })));
  $("#queues tbody").replaceChildren(...rows);
  if (qs.queue) loadQueue();
}
$("#queues-refresh").onclick = refreshQueues;

async function queueAction(body, what) {
  try {
    const r = await api("queue/action", { prefix: qs.queue.prefix, name: qs.queue.name, ...body });
    if (r.removed != null) alert(`${r.removed} jobs removed`);
  } catch (e) { alert(`${what}: ${e.message}`); }
  await refreshQueues();
}

async function loadQueue() {
  const q = qs.queue;
  let page;
  try { page = await api("queue?" + new URLSearchParams({ prefix: q.prefix, name: q.name, state: qs.state, start: qs.start, count: PAGE })); } catch (e) {
    $("#queue-detail").replaceChildren(el("p", { class: "error", text: e.message }));
    return;
  }
  document.querySelectorAll("#queues tbody tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.queue === qkey(q)));
  const tabs = (page.states || Object.keys(page.counts)).map((st) => [st, page.counts[st]]).map(([st, n]) => {
    const b = el("button", { class: st === qs.state ? "active" : "", "data-state": st, text: `${st} (${n})` });
    b.onclick = () => { qs.state = st; qs.start = 0; loadQueue(); };
    return b;
  });
  const rows = page.jobs.map((j) => {
    const actions = [];
    if (qs.state === "failed") actions.push(button("Retry", (ev) => { ev.stopPropagation(); queueAction({ action: "retry", id: j.id, reset_attempts: true }, "retry"); }));
    if (qs.state === "delayed") actions.push(button("Promote", (ev) => { ev.stopPropagation(); queueAction({ action: "promote", id: j.id }, "promote"); }));
    const tr = el("tr", { "data-job": j.id, class: qs.job === j.id ? "selected" : "" },
      el("td", { class: "mono", text: j.id }), el("td", { text: j.name || "" }), el("td", { text: when(j.timestamp) }),
      el("td", { text: j.attemptsMade ?? "" }), el("td", { class: "mono", text: j.failedReason || (j.data || "").slice(0, 80) }),
      el("td", {}, ...actions));
    tr.onclick = () => openJob(j.id);
    return tr;
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "muted", colspan: "6", text: `no ${qs.state} jobs` })));
  const pager = el("div", { class: "row" });
  if (qs.start > 0) { const b = el("button", { text: "← Newer" }); b.onclick = () => { qs.start = Math.max(0, qs.start - PAGE); loadQueue(); }; pager.append(b); }
  if (qs.start + PAGE < page.total) { const b = el("button", { text: "Older →" }); b.onclick = () => { qs.start += PAGE; loadQueue(); }; pager.append(b); }
  pager.append(el("span", { class: "muted", text: `${page.total ? qs.start + 1 : 0}–${Math.min(qs.start + PAGE, page.total)} of ${page.total}` }));
  const tools = [];
  if (qs.state === "completed" || qs.state === "failed") {
    tools.push(writeRow(button(`Clean ${qs.state}`, () => {
      if (confirm(`Remove every ${qs.state} job of ${qkey(q)}?`)) queueAction({ action: "clean", state: qs.state }, "clean");
    }, "danger")));
  }
  $("#queue-detail").replaceChildren(
    el("h3", { class: "mono", text: `${qkey(q)} · ${page.kind}${page.paused ? " · paused" : ""}` }),
    el("div", { class: "states" }, ...tabs), ...tools,
    el("table", { id: "queue-jobs" }, el("thead", {}, el("tr", {}, ...["id", "name", "added", "attempts", "failed reason / data", ""].map((h) => el("th", { text: h })))),
      el("tbody", {}, ...rows)),
    pager);
}

async function openJob(id) {
  qs.job = id;
  const q = qs.queue;
  const d = $("#job-detail");
  let j;
  try { j = await api("queue/job?" + new URLSearchParams({ prefix: q.prefix, name: q.name, id })); } catch (e) {
    d.replaceChildren(el("p", { class: "error", text: e.message }));
    return;
  }
  document.querySelectorAll("#queue-jobs tbody tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.job === id));
  const f = j.fields;
  const show = (v) => (typeof v === "string" ? v : JSON.stringify(v, null, 2));
  const parts = [
    el("h2", { class: "mono", text: `${f.name || "job"} #${j.id}` }),
    el("div", { class: "muted", id: "job-meta", text: `${j.state || "no state"} · added ${when(f.timestamp)}${f.processedOn ? " · processed " + when(f.processedOn) : ""}${f.finishedOn ? " · finished " + when(f.finishedOn) : ""} · attempts ${f.atm ?? f.attemptsMade ?? 0}` }),
  ];
  const acts = [];
  if (j.state === "failed") acts.push(button("Retry", () => queueAction({ action: "retry", id, reset_attempts: true }, "retry").then(() => openJob(id))));
  if (j.state === "delayed") acts.push(button("Promote", () => queueAction({ action: "promote", id }, "promote").then(() => openJob(id))));
  if (acts.length) parts.push(writeRow(...acts));
  for (const [label, field] of [["Data", "data"], ["Options", "opts"], ["Return value", "returnvalue"], ["Failed reason", "failedReason"], ["Stack trace", "stacktrace"]]) {
    const v = f[field];
    if (v == null || v === "" || (Array.isArray(v) && !v.length)) continue;
    const text = field === "stacktrace" && Array.isArray(v) ? v.join("\n\n") : show(v);
    parts.push(el("h3", { text: label }), el("pre", { class: "job-json", "data-field": field, text }));
  }
  if (Array.isArray(j.logs) && j.logs.length) parts.push(el("h3", { text: "Logs" }), el("pre", { class: "job-json", text: j.logs.join("\n") }));
  d.replaceChildren(...parts);
}

// ---- primitives -----------------------------------------------------------
const ms = (n) => (n == null || n < 0 ? "–" : n >= 1000 ? (n / 1000).toFixed(1) + " s" : n + " ms");

function fill(sel, rows, cols, empty) {
  const body = rows.length ? rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c))))
    : [el("tr", {}, el("td", { class: "muted", colspan: String(cols), text: empty }))];
  $(sel + " tbody").replaceChildren(...body);
}

async function refreshPrimitives() {
  let p;
  try { p = await api("primitives"); } catch (e) { $("#prim-meta").textContent = e.message; return; }
  $("#prim-meta").textContent = `${p.sampled} string keys sampled${p.complete ? " (the whole keyspace)" : " (a sample)"} · ${p.throttles.count} throttle keys · ${p.locks.count} locks · ${p.idempotency.in_flight_count} idempotency keys in flight, ${p.idempotency.done_count} done · ${p.fills.count} fills in flight`;
  const mono = (t) => el("span", { class: "mono", text: t });
  fill("#prim-throttles", p.throttles.top.map((t) => [mono(t.key), t.kind, ms(t.reset_ms),
    t.tiers.filter((x) => x.tier).map((x) => `${x.tier}: ${ms(x.reset_ms)}`).join(", ")]), 4, "no throttle keys");
  fill("#prim-locks", p.locks.held.map((l) => [mono(l.key), mono(l.holder), String(l.fence), ms(l.ttl_ms), String(l.waiters)]), 5, "no locks held");
  fill("#prim-idem", p.idempotency.in_flight.map((i) => [mono(i.key), ms(i.age_ms), ms(i.ttl_ms), mono(i.fingerprint)]), 4, "none in flight");
  fill("#prim-fills", p.fills.in_flight.map((f) => [mono(f.key), ms(f.lease_ms), String(f.waiters)]), 3, "none in flight");
}

// ---- qstash ---------------------------------------------------------------

/** A button that runs a QStash action on `id`, then redraws the view. */
function qstashButton(label, action, id) {
  const b = el("button", { text: label });
  b.onclick = async () => {
    b.disabled = true;
    try { await api("qstash/action", { action, id }); } catch (e) { $("#qstash-meta").textContent = e.message; }
    refreshQstash();
  };
  return b;
}

async function refreshQstash() {
  let d;
  try { d = await api("qstash"); } catch (e) { $("#qstash-meta").textContent = e.message; return; }
  const c = d.counts;
  $("#qstash-meta").textContent = `${c.pending} pending · ${c.inFlight} being delivered · ${c.dlq} in the dead-letter queue · ${d.schedules.length} schedules`;
  const mono = (t) => el("span", { class: "mono", text: t == null ? "–" : String(t) });
  fill("#qstash-pending", d.pending.map((m) => [mono(m.messageId), mono(m.url), when(m.notBefore),
    `${m.retried} / ${m.maxRetries}`, m.queueName || m.flowControlKey || "–", qstashButton("Cancel", "cancel", m.messageId)]), 6, "nothing pending");
  fill("#qstash-dlq", d.dlq.map((l) => [mono(l.dlqId), mono(l.url), l.responseStatus == null ? "no answer" : String(l.responseStatus),
    mono(l.responseBody), el("span", {}, qstashButton("Retry", "retry", l.dlqId), qstashButton("Delete", "delete", l.dlqId))]), 5, "empty");
  fill("#qstash-schedules", d.schedules.map((s) => [mono(s.scheduleId), mono(s.cron), mono(s.destination),
    s.isPaused ? "–" : when(s.nextScheduleTime), s.isPaused ? "yes" : "no"]), 5, "no schedules");
  const lanes = d.queues.map((q) => ["queue", q]).concat(d.flows.map((f) => ["flow key", f]));
  fill("#qstash-lanes", lanes.map(([kind, l]) => [mono(l.name), kind, l.parallelism || "no limit",
    l.rate ? `${l.rate} / ${l.periodSecs} s` : "no limit", String(l.waiting), String(l.inFlight), l.paused ? "yes" : "no"]), 7, "none");
  fill("#qstash-events", d.events.map((e) => [when(e.time), e.state, mono(e.messageId), mono(e.url), mono(e.error || "")]), 5, "no events");
}
$("#qstash-refresh").onclick = refreshQstash;

// ---- memory ---------------------------------------------------------------
/** A bar `px` wide (set through the CSSOM: the CSP refuses inline style attributes). */
function bar(px) {
  const b = el("div", { class: "bar" });
  b.style.width = px + "px";
  return b;
}

async function refreshMemory() {
  const meta = $("#memory-meta");
  meta.textContent = "analysing…";
  let m;
  try { m = await api("memory?" + new URLSearchParams({ sample: $("#memory-sample").value, depth: $("#memory-depth").value })); } catch (e) { meta.textContent = e.message; return; }
  meta.textContent = m.complete
    ? `All ${m.sampled} keys analysed: ${bytes(m.sampled_bytes)} in ${m.total_prefixes} prefixes.`
    : `Sampled ${m.sampled} of ${m.dbsize} keys (${bytes(m.sampled_bytes)}); estimated total ${bytes(m.est_total_bytes)} (sample × ${m.factor.toFixed(2)}). ${m.total_prefixes} prefixes.`;
  const top = m.prefixes.length ? m.prefixes[0].share : 1;
  fill("#memory", m.prefixes.map((p) => [el("span", { class: "mono", text: p.prefix }), String(p.keys), bytes(p.bytes), (p.share * 100).toFixed(1) + " %",
    bar(Math.max(1, Math.round(120 * p.share / (top || 1)))), String(p.est_keys), bytes(p.est_bytes)]), 7, "no keys");
}
$("#memory-form").onsubmit = (ev) => { ev.preventDefault(); refreshMemory(); };

// ---- realtime keys and tokens -----------------------------------------------
async function refreshKeys() {
  let data;
  try { data = await api("realtime/keys"); } catch (e) { fill("#rt-keys", [], 4, e.message); return; }
  const rows = [];
  const options = [];
  for (const a of data.apps) {
    for (const k of a.keys) {
      rows.push([a.app, el("span", { class: "mono", text: k.name }), el("span", { class: "mono", text: JSON.stringify(k.capability) }), k.revocable ? "yes" : "no"]);
      options.push(el("option", { value: JSON.stringify({ app: a.app, key: k.name }), text: k.name }));
    }
  }
  fill("#rt-keys", rows, 4, "no keys configured");
  $("#mint-key").replaceChildren(...options);
}

$("#mint-form").onsubmit = async (ev) => {
  ev.preventDefault();
  const out = $("#mint-out");
  out.classList.remove("error");
  let pick;
  try { pick = JSON.parse($("#mint-key").value); } catch (_) { out.textContent = "pick a key"; return; }
  const body = { app: pick.app, key: pick.key, capability: $("#mint-capability").value, clientId: $("#mint-client").value };
  const ttl = parseInt($("#mint-ttl").value, 10);
  if (ttl > 0) body.ttl = ttl;
  try {
    const t = await api("realtime/token", body);
    out.textContent = JSON.stringify(t, null, 2);
  } catch (e) {
    out.classList.add("error");
    out.textContent = e.message;
  }
};

// ---- start ----------------------------------------------------------------
api("session").then((s) => { state.session = s; showApp(); }).catch(() => showLogin());
