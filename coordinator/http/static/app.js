/* edgebus dashboard: the fleet from the coordinator's REST API, kept live over its WebSocket feed.
   Views (by URL hash): #/ overview, #/device/ID, #/anomalies, #/events, #/coordination. */
"use strict";

const LIVE_METRICS = ["cpu_percent", "temp_c", "load1"];
const RANGES = [["15m", 15 * 60e3], ["1h", 3600e3], ["6h", 6 * 3600e3], ["24h", 86400e3], ["7d", 7 * 86400e3]];
const $ = (sel, root = document) => root.querySelector(sel);

const state = {
  ws: null, wsRetry: 500, wsSeries: [], view: null, timers: [], charts: new Map(),
  range: Number(localStorage.getItem("edgebus.range")) || 3600e3,
};

/* ---------- small helpers ---------- */

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

async function api(path, options) {
  const res = await fetch(path, options);
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
  if (!res.ok) throw new Error(body?.error?.message || `${res.status} ${res.statusText}`);
  return body;
}

function ago(ms) {
  if (!ms) return "–";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
  return `${(s / 86400).toFixed(1)} d ago`;
}

function clock(ms) {
  const d = new Date(ms), today = new Date().toDateString() === d.toDateString();
  return (today ? "" : d.toLocaleDateString([], { month: "short", day: "numeric" }) + " ") +
    d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function toast(text) {
  const t = $("#toast");
  t.textContent = text; t.hidden = false;
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { t.hidden = true; }, 3500);
}

function every(ms, fn) { state.timers.push(setInterval(fn, ms)); }

function flash(el) { el.classList.remove("flash"); void el.offsetWidth; el.classList.add("flash"); }

/* ---------- theme ---------- */

function applyTheme() {
  const t = localStorage.getItem("edgebus.theme") || "auto";
  if (t === "auto") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = t;
  $("#theme").title = `theme: ${t} (click to change)`;
}
$("#theme").addEventListener("click", () => {
  const order = ["auto", "dark", "light"];
  const next = order[(order.indexOf(localStorage.getItem("edgebus.theme") || "auto") + 1) % 3];
  localStorage.setItem("edgebus.theme", next);
  applyTheme();
});
applyTheme();

/* ---------- live feed ---------- */

function setLive(s, label) {
  const el = $("#live");
  el.dataset.state = s;
  $(".label", el).textContent = label;
}

function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/ws`);
  state.ws = ws;
  ws.onopen = () => { state.wsRetry = 500; setLive("open", "live"); sendSeries(); };
  ws.onclose = (e) => {
    setLive("closed", e.code === 1008 ? "too slow, reconnecting" : "reconnecting");
    state.ws = null;
    setTimeout(connect, state.wsRetry);
    state.wsRetry = Math.min(state.wsRetry * 2, 10000);
  };
  ws.onmessage = (e) => {
    let m;
    try { m = JSON.parse(e.data); } catch { return; }
    if (state.view && state.view.onLive) state.view.onLive(m);
    if (m.type === "anomaly") toast(`anomaly on ${m.device}: ${m.explanation}`);
  };
}

function follow(series) {
  state.wsSeries = series;
  sendSeries();
}

function sendSeries() {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify({ unsubscribe: state.sentSeries || [], subscribe: state.wsSeries }));
    state.sentSeries = state.wsSeries.slice();
  }
}

/* ---------- views ---------- */

function statusBadge(status) { return h("span", { class: `status ${status || ""}` }, status || "unknown"); }

function anomalyItem(a, onAck) {
  const ack = a.acknowledged_ms !== null && a.acknowledged_ms !== undefined;
  return h("li", { class: ack ? "acked" : "", dataset: { anomaly: a.id } },
    h("span", { class: "when" }, clock(a.time_ms)),
    h("span", { class: "what" },
      h("span", { class: `pill ${a.severity}` }, a.severity), " ",
      h("a", { href: `#/device/${encodeURIComponent(a.device)}` }, a.device), " · ", h("b", {}, a.metric), " ",
      h("span", { class: "muted" }, a.explanation)),
    ack ? h("span", { class: "muted", title: `by ${a.acknowledged_by}` }, "acknowledged")
      : h("button", { type: "button", onclick: (e) => onAck(a, e.target) }, "Acknowledge"));
}

async function acknowledge(a, button) {
  let token = localStorage.getItem("edgebus.token");
  if (!token) {
    token = prompt("Bearer token from the coordinator's [http] table:");
    if (!token) return;
  }
  button.disabled = true;
  try {
    await api(`/api/v1/anomalies/${a.id}/acknowledge`, {
      method: "POST", headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ by: localStorage.getItem("edgebus.user") || "dashboard" }),
    });
    localStorage.setItem("edgebus.token", token);
    const li = button.closest("li");
    li.classList.add("acked");
    button.replaceWith(h("span", { class: "muted" }, "acknowledged"));
  } catch (err) {
    if (/token|Bearer/.test(err.message)) localStorage.removeItem("edgebus.token");
    toast(err.message);
    button.disabled = false;
  }
}

function eventCard(e) {
  const ev = e.event || e;
  return h("div", { class: "event" },
    h("div", { class: "img" }, e.snapshot_url ? h("img", { src: e.snapshot_url, alt: `${ev.label} on ${e.camera}`, loading: "lazy" })
      : (ev.type === "start" ? "track started" : "no snapshot")),
    h("div", { class: "cap" }, h("b", {}, ev.label || "object"), ` · ${e.camera} · `,
      h("a", { href: `#/device/${encodeURIComponent(e.device)}` }, e.device), h("br"),
      h("span", { class: "muted" }, `${ev.type} ${clock(e.time_ms || ev.time_ms)}`,
        ev.duration_ms ? ` · ${(ev.duration_ms / 1000).toFixed(1)} s` : "")));
}

/* Overview: the cards, every device with live values, hot spots, anomalies, camera events. */
async function overview(root) {
  const cards = h("div", { class: "cards" });
  const table = h("tbody");
  const hot = h("tbody");
  const anomalies = h("ul", { class: "timeline" });
  const events = h("div", { class: "events" });
  root.append(cards,
    h("div", { class: "grid" },
      h("div", {},
        h("section", { class: "panel" }, h("div", { class: "head" }, h("h2", {}, "Devices"), h("span", { class: "muted", id: "rate" })),
          h("div", { style: "overflow-x:auto" }, h("table", { id: "devices" },
            h("thead", {}, h("tr", {}, h("th", {}, "device"), h("th", {}, "status"),
              ...LIVE_METRICS.map((m, i) => h("th", { class: i > 1 ? "r hide-sm" : "r" }, m)), h("th", { class: "r hide-sm" }, "samples/s"),
              h("th", { class: "r hide-sm" }, "missing"), h("th", { class: "r" }, "open"), h("th", { class: "r hide-sm" }, "last seen"))),
            table))),
        h("section", { class: "panel" }, h("h2", {}, "Camera events"), events)),
      h("div", {},
        h("section", { class: "panel" }, h("h2", {}, "Hot spots"), h("table", {}, hot)),
        h("section", { class: "panel" }, h("div", { class: "head" }, h("h2", {}, "Open anomalies"), h("a", { href: "#/anomalies" }, "all")), anomalies))));

  const rows = new Map();
  async function refresh() {
    const [fleet, devices, open, evs] = await Promise.all([api("/api/v1/fleet"), api("/api/v1/devices"),
      api("/api/v1/anomalies?state=open&limit=12"), api("/api/v1/events?limit=8")]);
    cards.replaceChildren(
      h("div", { class: "card" }, h("div", { class: "k" }, "devices"), h("div", { class: "v", id: "n-devices" }, fleet.devices)),
      h("div", { class: "card ok" }, h("div", { class: "k" }, "online"), h("div", { class: "v", id: "n-online" }, fleet.online)),
      h("div", { class: `card ${fleet.offline ? "bad" : ""}` }, h("div", { class: "k" }, "offline"), h("div", { class: "v", id: "n-offline" }, fleet.offline)),
      h("div", { class: `card ${fleet.open_anomalies ? "bad" : ""}` }, h("div", { class: "k" }, "open anomalies"), h("div", { class: "v", id: "n-anomalies" }, fleet.open_anomalies)),
      h("div", { class: "card" }, h("div", { class: "k" }, "samples / s"), h("div", { class: "v", id: "n-rate" }, fleet.ingest ? fleet.ingest.samples_per_s.toFixed(0) : "–")));
    for (const d of devices.items) {
      let tr = rows.get(d.id);
      if (!tr) {
        tr = h("tr", { dataset: { device: d.id } },
          h("td", {}, h("a", { href: `#/device/${encodeURIComponent(d.id)}` }, d.id)), h("td", { class: "st" }),
          ...LIVE_METRICS.map((m, i) => h("td", { class: i > 1 ? "r num hide-sm" : "r num", dataset: { metric: m } }, "–")),
          h("td", { class: "r num hide-sm rate" }), h("td", { class: "r num hide-sm missing" }),
          h("td", { class: "r num open" }), h("td", { class: "r muted hide-sm seen" }));
        rows.set(d.id, tr);
        table.append(tr);
      }
      $(".st", tr).replaceChildren(statusBadge(d.status));
      for (const m of LIVE_METRICS) if (m in d.last_values && !tr.dataset["seen_" + m]) $(`[data-metric="${m}"]`, tr).textContent = formatValue(m, d.last_values[m]);
      $(".rate", tr).textContent = d.samples_per_s === null ? "–" : d.samples_per_s.toFixed(1);
      $(".missing", tr).textContent = d.sequence ? d.sequence.missing : "–";
      $(".open", tr).textContent = d.open_anomalies;
      $(".seen", tr).textContent = ago(d.last_seen_ms);
    }
    if (!devices.items.length) table.replaceChildren(h("tr", {}, h("td", { colspan: 9, class: "empty" }, "No device has reported yet.")));
    hot.replaceChildren(...fleet.bottlenecks.map((b) => h("tr", {},
      h("td", {}, h("a", { href: `#/device/${encodeURIComponent(b.device)}` }, b.device)),
      h("td", { style: "width:45%" }, h("div", { class: `bar ${(b.values.cpu_percent || 0) > 80 ? "hot" : ""}` },
        h("i", { style: `width:${Math.min(100, b.values.cpu_percent || 0)}%` }))),
      h("td", { class: "r num" }, formatValue("cpu_percent", b.values.cpu_percent)),
      h("td", { class: "r num hide-sm" }, formatValue("temp_c", b.values.temp_c)))));
    if (!fleet.bottlenecks.length) hot.replaceChildren(h("tr", {}, h("td", { class: "empty" }, "No metrics yet.")));
    anomalies.replaceChildren(...open.items.map((a) => anomalyItem(a, acknowledge)));
    if (!open.items.length) anomalies.replaceChildren(h("li", { class: "empty" }, "Nothing open."));
    events.replaceChildren(...evs.items.map(eventCard));
    if (!evs.items.length) events.replaceChildren(h("div", { class: "empty" }, "No camera events yet."));
  }
  await refresh();
  every(5000, () => refresh().catch(() => {}));
  follow(LIVE_METRICS.map((m) => `*/${m}`));
  return {
    onLive(m) {
      if (m.type === "latest") {
        for (const [device, [, v]] of Object.entries(m.values)) {
          const tr = rows.get(device);
          const td = tr && $(`[data-metric="${m.metric}"]`, tr);
          if (td) { td.textContent = formatValue(m.metric, v); tr.dataset["seen_" + m.metric] = "1"; flash(td); }
        }
      } else if (m.type === "status" || m.type === "anomaly" || m.type === "birth" || m.type === "event") {
        refresh().catch(() => {});
      }
    },
  };
}

/* One device: identity, accounting, a live chart per metric with its anomalies marked, its anomalies and events. */
async function devicePage(root, id) {
  const d = await api(`/api/v1/devices/${encodeURIComponent(id)}`);
  const ranges = h("div", { class: "ranges", role: "group", "aria-label": "time range" },
    ...RANGES.map(([label, ms]) => h("button", { type: "button", class: ms === state.range ? "on" : "", onclick: () => {
      state.range = ms; localStorage.setItem("edgebus.range", ms); route();
    } }, label)));
  const birth = d.birth || {};
  const capacity = birth.capacity || {};
  root.append(
    h("div", { class: "crumbs" }, h("a", { href: "#/" }, "Fleet"), "›", h("h1", { id: "device-title" }, d.id), statusBadge(d.status),
      h("span", { style: "flex:1" }), ranges,
      h("a", { href: `/api/v1/export.csv?device=${encodeURIComponent(d.id)}&since=${Date.now() - state.range}`, download: "" }, "CSV")),
    h("div", { class: "grid" },
      h("div", {}, h("div", { class: "charts", id: "charts" })),
      h("div", {},
        h("section", { class: "panel" }, h("h2", {}, "Device"), h("dl", { class: "kv" },
          h("dt", {}, "agent"), h("dd", {}, d.agent_version || "–"),
          h("dt", {}, "last seen"), h("dd", {}, ago(d.last_seen_ms)),
          h("dt", {}, "first seen"), h("dd", {}, clock(d.first_seen_ms)),
          h("dt", {}, "received"), h("dd", { class: "num" }, d.sequence ? d.sequence.received : "–"),
          h("dt", {}, "missing"), h("dd", { class: "num" }, d.sequence ? d.sequence.missing : "–"),
          h("dt", {}, "duplicates"), h("dd", { class: "num" }, d.sequence ? d.sequence.duplicates : "–"),
          h("dt", {}, "epoch"), h("dd", { class: "mono" }, d.birth_epoch ?? "–"),
          capacity.cores ? [h("dt", {}, "capacity"), h("dd", {}, `${capacity.cores} cores, ${capacity.memory_mb} MB`)] : null,
          h("dt", {}, "capabilities"), h("dd", {}, h("div", { class: "tags" }, ...(birth.capabilities || []).map((c) => h("span", { class: "pill" }, c)))),
          h("dt", {}, "versions"), h("dd", { class: "mono" }, Object.entries(birth.versions || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "–"))),
        h("section", { class: "panel" }, h("h2", {}, "Anomalies"), h("ul", { class: "timeline", id: "device-anomalies" })),
        d.cameras.length ? h("section", { class: "panel" }, h("h2", {}, "Camera events"), h("div", { class: "events", id: "device-events" })) : null)));
  const chartsEl = $("#charts");
  state.charts = new Map();
  const now = Date.now();
  // A device that appeared a minute ago gets a minute of chart, not a line squeezed to the right edge.
  const since = Math.max(now - state.range, Math.min(d.first_seen_ms - 30e3, now - 5 * 60e3));
  const metrics = d.metrics.length ? d.metrics : Object.keys(d.last_values);
  await Promise.all(metrics.map(async (metric) => {
    const box = h("div", { class: "chart", dataset: { metric } },
      h("div", { class: "title" }, h("b", {}, metric), h("span", { class: "now num" }, formatValue(metric, d.last_values[metric]))));
    chartsEl.append(box);
    const chart = new TimeChart(box, metric);
    state.charts.set(metric, chart);
    const hist = await api(`/api/v1/devices/${encodeURIComponent(id)}/metrics/${encodeURIComponent(metric)}/history?since=${since}&until=${now + 1000}&points=400`);
    chart.setData(hist);
  }));
  [...chartsEl.children].sort((a, b) => a.dataset.metric.localeCompare(b.dataset.metric)).forEach((c) => chartsEl.append(c));
  const anomaliesEl = $("#device-anomalies");
  async function loadAnomalies() {
    const list = await api(`/api/v1/anomalies?device=${encodeURIComponent(id)}&limit=20`);
    anomaliesEl.replaceChildren(...list.items.map((a) => anomalyItem(a, acknowledge)));
    if (!list.items.length) anomaliesEl.replaceChildren(h("li", { class: "empty" }, "None."));
  }
  await loadAnomalies();
  if (d.cameras.length) {
    const evs = await api(`/api/v1/events?device=${encodeURIComponent(id)}&limit=12`);
    $("#device-events").replaceChildren(...evs.items.map(eventCard));
  }
  follow(metrics.map((m) => `${id}/${m}`));
  return {
    onLive(m) {
      if (m.type === "points" && m.device === id) {
        const chart = state.charts.get(m.metric);
        if (chart) {
          chart.addPoints(m.t, m.v, m.min, m.max);
          const now = $(`.chart[data-metric="${m.metric}"] .now`);
          if (now) now.textContent = formatValue(m.metric, m.v[m.v.length - 1]);
        }
      } else if (m.type === "anomaly" && m.device === id) {
        const chart = state.charts.get(m.metric);
        if (chart) chart.addMark({ time_ms: m.time_ms, value: m.value, explanation: m.explanation, kind: m.kind });
        loadAnomalies().catch(() => {});
      } else if (m.type === "status" && m.device === id) {
        $(".crumbs .status").replaceWith(statusBadge(m.status));
      }
    },
  };
}

/* The anomaly timeline: newest first, open or all, acknowledge in place, older pages on demand. */
async function anomaliesPage(root) {
  const which = localStorage.getItem("edgebus.anomalies") || "open";
  const list = h("ul", { class: "timeline", id: "anomaly-timeline" });
  const more = h("button", { type: "button", hidden: true }, "Older");
  root.append(h("div", { class: "crumbs" }, h("h1", {}, "Anomalies"), h("span", { style: "flex:1" }),
    h("div", { class: "ranges" }, ...["open", "all"].map((w) => h("button", { type: "button", class: w === which ? "on" : "",
      onclick: () => { localStorage.setItem("edgebus.anomalies", w); route(); } }, w)))),
  h("section", { class: "panel" }, list, more));
  let cursor = null, lastDay = "";
  async function page() {
    const body = await api(`/api/v1/anomalies?state=${which}&limit=50${cursor ? "&cursor=" + cursor : ""}`);
    for (const a of body.items) {
      const day = new Date(a.time_ms).toDateString();
      if (day !== lastDay) { list.append(h("li", {}, h("span", {}), h("h2", { style: "margin:8px 0 0" }, day))); lastDay = day; }
      list.append(anomalyItem(a, acknowledge));
    }
    if (!list.children.length) list.append(h("li", { class: "empty" }, which === "open" ? "Nothing open." : "No anomalies yet."));
    cursor = body.next_cursor;
    more.hidden = !cursor;
  }
  more.addEventListener("click", () => page());
  await page();
  follow([]);
  return { onLive(m) { if (m.type === "anomaly") { list.replaceChildren(); cursor = null; lastDay = ""; page(); } } };
}

async function eventsPage(root) {
  const grid = h("div", { class: "events", id: "event-grid" });
  const more = h("button", { type: "button", hidden: true, style: "margin-top:12px" }, "Older");
  root.append(h("div", { class: "crumbs" }, h("h1", {}, "Camera events")), h("section", { class: "panel" }, grid, more));
  let cursor = null;
  async function page() {
    const body = await api(`/api/v1/events?limit=48${cursor ? "&cursor=" + cursor : ""}`);
    grid.append(...body.items.map(eventCard));
    if (!grid.children.length) grid.append(h("div", { class: "empty" }, "No camera events yet."));
    cursor = body.next_cursor; more.hidden = !cursor;
  }
  more.addEventListener("click", () => page());
  await page();
  follow([]);
  return { onLive(m) { if (m.type === "event") { grid.prepend(eventCard({ ...m, time_ms: m.event.time_ms })); } } };
}

async function coordinationPage(root) {
  const body = h("div");
  root.append(h("div", { class: "crumbs" }, h("h1", {}, "Coordination")), body);
  async function refresh() {
    const c = await api("/api/v1/coordination");
    const raft = c.raft.map((g) => h("section", { class: "panel" },
      h("div", { class: "head" }, h("h2", {}, `Raft group ${g.group}`), h("span", {}, "leader ", h("b", {}, g.leader || "none"), ` · term ${g.term}`)),
      h("table", {}, h("thead", {}, h("tr", {}, ...["node", "role", "term", "commit", "applied", "open tx"].map((x) => h("th", {}, x)))),
        h("tbody", {}, ...g.nodes.map((n) => h("tr", {}, h("td", {}, n.node), h("td", {}, n.role), h("td", { class: "num" }, n.term),
          h("td", { class: "num" }, n.commit), h("td", { class: "num" }, n.applied), h("td", { class: "num" }, n.tx ? n.tx.open : "–")))))));
    const tx = c.transactions.map((g) => h("section", { class: "panel" }, h("h2", {}, `Transactions in ${g.group}`),
      h("p", { class: "muted" }, g.open ? `${g.open.open.length} open (${g.open.pending} undecided) as leader ${g.open.leader} saw them` : "no open list yet"),
      h("ul", { class: "timeline" }, ...g.events.slice(0, 20).map((e) => h("li", {}, h("span", { class: "when" }, clock(e.time_ms)),
        h("span", { class: "what mono" }, `${e.tx} ${e.event} ${e.outcome || ""} ${e.reason || ""}`), h("span"))))));
    const locks = c.locks.map((g) => h("section", { class: "panel" }, h("h2", {}, `Lock events in ${g.group}`),
      h("ul", { class: "timeline" }, ...g.events.slice(0, 20).map((e) => h("li", {}, h("span", { class: "when" }, clock(e.time_ms || 0)),
        h("span", { class: "what mono" }, JSON.stringify(e)), h("span"))))));
    body.replaceChildren(...raft, ...tx, ...locks);
    if (!raft.length && !tx.length && !locks.length) body.replaceChildren(h("section", { class: "panel" },
      h("p", { class: "empty" }, "No Raft group, transaction or lock traffic seen on this broker yet.")));
  }
  await refresh();
  every(3000, () => refresh().catch(() => {}));
  follow([]);
  return {};
}

/* ---------- routing ---------- */

async function route() {
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  state.view = null;
  const root = $("#view");
  root.replaceChildren();
  const hash = location.hash.replace(/^#\/?/, "");
  const [section, arg] = [hash.split("/")[0], decodeURIComponent(hash.split("/").slice(1).join("/"))];
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("on", a.dataset.nav === (section || "overview") || (section === "device" && a.dataset.nav === "overview"));
  try {
    if (section === "device" && arg) { document.title = `${arg} · edgebus`; state.view = await devicePage(root, arg); }
    else if (section === "anomalies") { document.title = "anomalies · edgebus"; state.view = await anomaliesPage(root); }
    else if (section === "events") { document.title = "cameras · edgebus"; state.view = await eventsPage(root); }
    else if (section === "coordination") { document.title = "coordination · edgebus"; state.view = await coordinationPage(root); }
    else { document.title = "edgebus fleet"; state.view = await overview(root); }
  } catch (err) {
    root.replaceChildren(h("section", { class: "panel" }, h("p", { class: "empty" }, `Cannot load this view: ${err.message}`),
      h("p", { class: "empty" }, h("a", { href: "#/" }, "Back to the fleet"))));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("resize", () => { for (const c of state.charts.values()) c.schedule(); });
setInterval(() => { $("#clock").textContent = new Date().toLocaleString(); }, 1000);
connect();
route();
