/* A small SVG time-series chart: a line of means, a band from min to max, anomalies marked.
   No library: the coordinator ships this file as is (no build step, nothing fetched). */
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, parent) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

/* Numbers for people: bytes as KB/MB/GB, otherwise three significant digits (``extra`` more). */
function formatValue(metric, v, extra = 0) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (/bytes/.test(metric)) {
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0, x = Math.abs(v);
    while (x >= 1000 && i < units.length - 1) { x /= 1000; i++; }
    return (v < 0 ? "-" : "") + x.toFixed((x >= 100 ? 0 : 1) + extra) + " " + units[i] + (/_s$/.test(metric) ? "/s" : "");
  }
  if (/percent/.test(metric)) return v.toFixed(1 + extra) + " %";
  if (/temp_c$/.test(metric)) return v.toFixed(1 + extra) + " °C";
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(2 + extra) + " M";
  if (a >= 1000) return v.toFixed(extra);
  if (a >= 10) return v.toFixed(1 + extra);
  return v.toPrecision(3 + extra);
}

function timeLabel(ms, spanMs) {
  const d = new Date(ms);
  if (spanMs > 2 * 86400e3) return d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " +
    d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: spanMs < 600e3 ? "2-digit" : undefined });
}

class TimeChart {
  /* host: an element; metric: for number formats. Data: {t, avg, min, max} columns; marks: anomalies. */
  constructor(host, metric) {
    this.host = host;
    this.metric = metric;
    this.t = []; this.avg = []; this.min = []; this.max = [];
    this.marks = [];
    this.since = 0; this.until = 0; this.follow = true;
    this.svg = svgEl("svg", { role: "img", "aria-label": metric + " chart" }, host);
    this.tip = document.createElement("div");
    this.tip.className = "tip"; this.tip.hidden = true;
    host.appendChild(this.tip);
    this.svg.addEventListener("mousemove", (e) => this.hover(e));
    this.svg.addEventListener("mouseleave", () => { this.tip.hidden = true; this.drawCursor(null); });
    this.pending = false;
  }

  setData(history) {
    this.t = history.t.slice(); this.avg = history.avg.slice();
    this.min = history.min.slice(); this.max = history.max.slice();
    this.since = history.since_ms; this.until = history.until_ms;
    this.span = this.until - this.since;
    this.marks = history.anomalies.slice();
    this.draw();
  }

  /* Live points: raw (min = max = value) or runs summarised by the feed (with min and max);
     the window slides when following "now". */
  addPoints(ts, vs, mins, maxs) {
    for (let i = 0; i < ts.length; i++) {
      if (this.t.length && ts[i] <= this.t[this.t.length - 1]) continue;
      this.t.push(ts[i]); this.avg.push(vs[i]);
      this.min.push(mins ? mins[i] : vs[i]); this.max.push(maxs ? maxs[i] : vs[i]);
    }
    if (this.follow && ts.length) {
      const last = ts[ts.length - 1];
      if (last >= this.until) { this.until = last + 1; this.since = this.until - this.span; }
      let drop = 0;
      while (drop < this.t.length && this.t[drop] < this.since) drop++;
      if (drop) { this.t.splice(0, drop); this.avg.splice(0, drop); this.min.splice(0, drop); this.max.splice(0, drop); }
    }
    this.schedule();
  }

  addMark(mark) { this.marks.push(mark); this.schedule(); }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }

  scales() {
    const w = Math.max(this.host.clientWidth - 24, 120), h = 150, left = 62, right = 6, top = 6, bottom = 20;
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < this.t.length; i++) {
      if (this.min[i] !== null && this.min[i] < lo) lo = this.min[i];
      if (this.max[i] !== null && this.max[i] > hi) hi = this.max[i];
    }
    for (const m of this.marks) if (m.value !== null && m.value !== undefined) { lo = Math.min(lo, m.value); hi = Math.max(hi, m.value); }
    if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
    if (hi === lo) { hi += Math.abs(hi) * 0.05 || 1; lo -= Math.abs(lo) * 0.05 || 1; }
    const pad = (hi - lo) * 0.08, floor = lo >= 0 ? 0 : -Infinity;
    lo = Math.max(lo - pad, floor); hi += pad;
    const x = (ms) => left + (ms - this.since) / (this.until - this.since) * (w - left - right);
    const y = (v) => top + (1 - (v - lo) / (hi - lo)) * (h - top - bottom);
    return { w, h, left, right, top, bottom, lo, hi, x, y };
  }

  draw() {
    const s = this.scales();
    this.s = s;
    const svg = this.svg;
    svg.setAttribute("viewBox", `0 0 ${s.w} ${s.h}`);
    svg.setAttribute("height", s.h);
    svg.replaceChildren();
    const grid = svgEl("g", { class: "grid" }, svg);
    const ticks = [0, 1, 2, 3].map((i) => s.lo + (s.hi - s.lo) * i / 3);
    let labels = ticks.map((v) => formatValue(this.metric, v));
    for (let extra = 1; extra <= 3 && new Set(labels).size < labels.length; extra++) {
      labels = ticks.map((v) => formatValue(this.metric, v, extra));  // a narrow range needs more digits
    }
    ticks.forEach((v, i) => {
      const yy = s.y(v);
      svgEl("line", { x1: s.left, x2: s.w - s.right, y1: yy, y2: yy }, grid);
      svgEl("text", { x: s.left - 6, y: yy + 3, "text-anchor": "end", class: "axis" }, svg).textContent = labels[i];
    });
    const steps = Math.max(1, Math.min(3, Math.floor((s.w - s.left) / 160)));  // labels that fit side by side
    for (let i = 0; i <= steps; i++) {
      const ms = this.since + (this.until - this.since) * i / steps;
      svgEl("text", { x: s.x(ms), y: s.h - 5, "text-anchor": i === 0 ? "start" : i === steps ? "end" : "middle", class: "axis" }, svg)
        .textContent = timeLabel(ms, this.until - this.since);
    }
    if (this.t.length) {
      let band = "", back = "", line = "", gapMs = this.gap();
      for (let i = 0; i < this.t.length; i++) {
        if (this.avg[i] === null) continue;
        const xx = s.x(this.t[i]).toFixed(1);
        const broken = i > 0 && this.t[i] - this.t[i - 1] > gapMs;
        line += (line === "" || broken ? "M" : "L") + xx + "," + s.y(this.avg[i]).toFixed(1);
        band += (band === "" ? "M" : "L") + xx + "," + s.y(this.max[i]).toFixed(1);
        back = "L" + xx + "," + s.y(this.min[i]).toFixed(1) + back;
      }
      if (band) svgEl("path", { class: "band", d: band + back + "Z" }, svg);
      if (line) svgEl("path", { class: "line", d: line }, svg);
    }
    const marks = svgEl("g", { class: "marks" }, svg);
    for (const m of this.marks) {
      if (m.time_ms < this.since || m.time_ms > this.until) continue;
      const g = svgEl("g", { class: "anomaly-mark", "data-anomaly": m.id ?? "", "data-time": m.time_ms }, marks);
      const xx = s.x(m.time_ms);
      svgEl("line", { x1: xx, x2: xx, y1: s.top, y2: s.h - s.bottom }, g);
      const yy = m.value === null || m.value === undefined ? s.top + 6 : s.y(m.value);
      svgEl("circle", { cx: xx, cy: yy, r: 4.5 }, g);
      svgEl("title", {}, g).textContent = `${new Date(m.time_ms).toLocaleString()}: ${m.explanation || m.kind}`;
    }
    this.cursor = svgEl("g", { class: "cursor" }, svg);
  }

  /* A break in the line where samples stop for much longer than they usually come. */
  gap() {
    if (this.t.length < 3) return Infinity;
    const d = [];
    for (let i = 1; i < this.t.length; i++) d.push(this.t[i] - this.t[i - 1]);
    d.sort((a, b) => a - b);
    return Math.max(d[Math.floor(d.length / 2)] * 5, 1);
  }

  drawCursor(i) {
    if (!this.cursor) return;
    this.cursor.replaceChildren();
    if (i === null) return;
    const s = this.s, xx = s.x(this.t[i]);
    svgEl("line", { x1: xx, x2: xx, y1: s.top, y2: s.h - s.bottom }, this.cursor);
  }

  hover(e) {
    if (!this.t.length || !this.s) return;
    const rect = this.svg.getBoundingClientRect();
    const px = (e.clientX - rect.left) * (this.s.w / rect.width);
    const ms = this.since + (px - this.s.left) / (this.s.w - this.s.left - this.s.right) * (this.until - this.since);
    let lo = 0, hi = this.t.length - 1;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (this.t[mid] < ms) lo = mid + 1; else hi = mid; }
    if (lo > 0 && Math.abs(this.t[lo - 1] - ms) < Math.abs(this.t[lo] - ms)) lo--;
    this.drawCursor(lo);
    const same = this.min[lo] === this.max[lo];
    this.tip.textContent = `${timeLabel(this.t[lo], 0)}  ${formatValue(this.metric, this.avg[lo])}` +
      (same ? "" : `  (${formatValue(this.metric, this.min[lo])} – ${formatValue(this.metric, this.max[lo])})`);
    this.tip.hidden = false;
    const x = Math.min(e.clientX - this.host.getBoundingClientRect().left + 10, this.host.clientWidth - this.tip.offsetWidth - 4);
    this.tip.style.left = Math.max(x, 4) + "px";
    this.tip.style.top = "34px";
  }
}

window.TimeChart = TimeChart;
window.formatValue = formatValue;
