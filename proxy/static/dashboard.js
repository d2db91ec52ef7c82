// Vidurai Proxy dashboard: polls /metrics.json and /health, draws tables and two SVG bar charts.
// No library and no network beyond this proxy (the page's Content-Security-Policy enforces it).
"use strict";

const DASH = "–";
const SVG = "http://www.w3.org/2000/svg";
const params = new URLSearchParams(location.search);
const REFRESH_S = Math.max(1, Number(params.get("refresh")) || 5);
const RECENT_ROWS = 25;
let last = null; // the latest /metrics.json, redrawn on resize

// Number formats, the same as the terminal dashboard's (proxy/ui/panels.py).
function grouped(text) {
  const [whole, fraction] = text.split(".");
  const sign = whole.startsWith("-") ? "-" : "";
  const digits = whole.replace("-", "").replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return sign + digits + (fraction === undefined ? "" : "." + fraction);
}
const fmtInt = (v) => (v == null ? DASH : grouped(Math.round(v).toFixed(0)));
const fmtUsd = (v) => (v == null ? DASH : "$" + grouped(v.toFixed(Math.abs(v) < 1 ? 4 : 2)));
const fmtPct = (v) => (v == null ? DASH : v.toFixed(1) + "%");
const fmtMs = (v) => (v == null ? DASH : v < 1000 ? v.toFixed(0) + " ms" : (v / 1000).toFixed(2) + " s");
const pad2 = (n) => String(n).padStart(2, "0");
function fmtClock(unix) {
  if (unix == null) return DASH;
  const d = new Date(unix * 1000);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}
function fmtAge(unix, now) {
  const s = Math.max(0, Math.round(now - unix));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}
function fmtUptime(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min` : m ? `${m} min` : `${Math.floor(s)} s`;
}
// Axis labels: 12k, 1.5M, $0.012.
function fmtShort(v, usd) {
  if (usd) return v === 0 ? "$0" : "$" + (v < 0.01 ? v.toPrecision(2) : v < 1 ? v.toFixed(3) : v.toFixed(2));
  if (v >= 1e6) return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + "k";
  return String(Math.round(v));
}
const failed = (r) => Boolean(r.error) || (r.status || 0) >= 400;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = text; // textContent only: models and errors come from clients
  if (cls) node.className = cls;
  return node;
}

// One table row: cells are [column, text, class?]; column names match /metrics.json keys.
function row(cells, attrs) {
  const tr = document.createElement("tr");
  for (const [key, value] of Object.entries(attrs || {})) tr.dataset[key] = value;
  for (const [col, text, cls] of cells) {
    const td = el("td", text, cls);
    td.dataset.col = col;
    tr.append(td);
  }
  return tr;
}

function fill(tableId, rows, emptyText) {
  const body = document.querySelector(`#${tableId} tbody`);
  const width = document.querySelectorAll(`#${tableId} thead th`).length;
  if (!rows.length) {
    const td = el("td", emptyText, "muted empty");
    td.colSpan = width;
    const tr = document.createElement("tr");
    tr.append(td);
    rows = [tr];
  }
  body.replaceChildren(...rows);
}

function aggregateCells(a) {
  return [
    ["requests", fmtInt(a.requests), "num"],
    ["errors", fmtInt(a.errors), a.errors ? "num bad" : "num"],
    ["input_tokens", fmtInt(a.input_tokens), "num"],
    ["output_tokens", fmtInt(a.output_tokens), "num"],
    ["tokens_saved", fmtInt(a.tokens_saved), "num good"],
    ["savings_pct", fmtPct(a.savings_pct), "num good"],
    ["cost_usd", fmtUsd(a.cost_usd), "num"],
    ["cost_saved_usd", fmtUsd(a.cost_saved_usd), "num good"],
  ];
}

function drawTotals(t) {
  const formats = {
    cost_usd: fmtUsd, cost_saved_usd: fmtUsd, savings_pct: fmtPct,
    avg_duration_ms: fmtMs, avg_overhead_ms: fmtMs,
  };
  for (const node of document.querySelectorAll("[data-total]")) {
    const key = node.dataset.total;
    node.textContent = (formats[key] || fmtInt)(t[key]);
  }
}

function drawTables(m) {
  fill("by-provider", m.by_provider.map((p) => row(
    [["provider", p.provider], ...aggregateCells(p), ["avg_duration_ms", fmtMs(p.avg_duration_ms), "num"]],
    { provider: p.provider })), "no requests yet");
  fill("by-model", m.by_model.map((p) => row(
    [["model", `${p.model || DASH} (${p.provider})`], ...aggregateCells(p),
     ["unpriced_requests", fmtInt(p.unpriced_requests), p.unpriced_requests ? "num warn" : "num"]],
    { provider: p.provider, model: p.model || "" })), "no requests yet");
  fill("by-tag", m.by_tag.map((t) => row([["tag", t.tag, "mono"], ...aggregateCells(t)], { tag: t.tag })),
    "no tagged requests yet (send X-Vidurai-Tags: team=payments)");
  const limits = m.limits || { subjects: [] };
  const against = (l, name, fmt) => {
    const got = l.limits[name];
    return got ? `${fmt(got.used)} / ${fmt(got.limit)}` : DASH;
  };
  fill("limits", limits.subjects.map((l) => {
    const refused = Object.entries(l.rejections_this_month).map(([k, n]) => `${k} ${fmtInt(n)}`).join(", ");
    return row([
      ["key", l.key || l.tenant.slice(0, 8), l.key ? "" : "mono"],
      ["requests_per_minute", against(l, "requests_per_minute", fmtInt), "num"],
      ["tokens_per_minute", against(l, "tokens_per_minute", fmtInt), "num"],
      ["budget_usd_per_day", against(l, "budget_usd_per_day", fmtUsd), "num"],
      ["budget_usd_per_month", against(l, "budget_usd_per_month", fmtUsd), "num"],
      ["rejections", refused, refused ? "bad" : "muted"],
    ], { tenant: l.tenant });
  }), "no limits set ([limits] in vidurai.ini, or vidurai-proxy keys create)");
  fill("sessions", m.top_sessions.map((s) => row([
    // The client's X-Vidurai-Session name when it sent one, else the start of the hashed id.
    ["session", s.label || s.id.slice(0, 12), s.label ? "" : "mono"],
    ["tenant", (s.tenant || "").slice(0, 8), "mono"],
    ["state", s.expired_at == null ? "active" : "expired", s.expired_at == null ? "good" : "muted"],
    ["requests", fmtInt(s.requests), "num"], ["messages", fmtInt(s.messages), "num"],
    ["input_tokens", fmtInt(s.input_tokens), "num"], ["tokens_saved", fmtInt(s.tokens_saved), "num good"],
    ["savings_pct", fmtPct(s.savings_pct), "num good"], ["cost_usd", fmtUsd(s.cost_usd), "num"],
    ["cost_saved_usd", fmtUsd(s.cost_saved_usd), "num good"],
    // Model-written summaries (summarizer = model): their calls and cost, already in Cost and
    // taken off Cost saved.
    ["summary_calls", fmtInt(s.summary_calls || 0), "num"],
    ["summary_cost_usd", s.summary_calls ? fmtUsd(s.summary_cost_usd) : DASH, "num"],
    ["last_seen_at", fmtAge(s.last_seen_at, m.generated_at), "muted"],
  ], { id: s.id })), "no sessions yet");
  fill("requests", m.recent_requests.slice(0, RECENT_ROWS).map((r) => row([
    ["created_at", fmtClock(r.created_at), "mono"], ["provider", r.provider],
    ["endpoint", r.endpoint + (r.stream ? " · stream" : "")], ["model", r.model || DASH],
    ["status", r.status == null ? DASH : String(r.status), failed(r) ? "num bad" : "num"],
    ["tokens_original_est", r.tokens_original_est == null ? DASH
      : `${fmtInt(r.tokens_original_est)} → ${fmtInt(r.tokens_forwarded_est)}`, "num"],
    ["tokens_saved", fmtInt(r.tokens_saved), "num good"],
    ["input_tokens", `${fmtInt(r.input_tokens)} / ${fmtInt(r.output_tokens)}`, "num"],
    ["cost_usd", fmtUsd(r.cost_usd), "num"], ["duration_ms", fmtMs(r.duration_ms), "num"],
    ["overhead_ms", fmtMs(r.overhead_ms), "num"], ["error", r.error || "", "bad clip"],
  ], { id: r.id })), "no requests yet");
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text != null) node.textContent = text;
  return node;
}

// Stacked bars, one per minute: `bottom` (paid / forwarded) under `top` (saved).
function barChart(container, points, bottom, top, usd) {
  const width = Math.max(container.clientWidth, 300), height = 190;
  const left = 52, right = 8, up = 10, down = 22;
  const plotW = width - left - right, plotH = height - up - down;
  // A model-written summary's cost is a negative saving: a minute can have paid more than it saved.
  const totals = points.map((p) => Math.max(p[bottom] || 0, (p[bottom] || 0) + (p[top] || 0)));
  const max = Math.max(...totals, 0) || (usd ? 0.01 : 10);
  const y = (v) => up + plotH - (v / max) * plotH;
  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "bars" });
  for (const f of [0, 0.5, 1]) {
    chart.append(svg("line", { x1: left, x2: width - right, y1: y(max * f), y2: y(max * f), class: "grid" }));
    chart.append(svg("text", { x: left - 6, y: y(max * f) + 4, class: "axis", "text-anchor": "end" },
                     fmtShort(max * f, usd)));
  }
  const step = plotW / Math.max(points.length, 1);
  points.forEach((p, i) => {
    const x = left + i * step + step * 0.12, w = Math.max(step * 0.76, 1);
    const b = p[bottom] || 0, t = p[top] || 0;
    if (b > 0 || t > 0) {  // a minute whose summary calls cost what it saved still drew its cost
      const group = svg("g", { class: "bar", "data-minute": p.minute });
      const fmt = usd ? fmtUsd : fmtInt;
      group.append(svg("title", {}, `${fmtClock(p.minute).slice(0, 5)}: ${fmt(b)} ${usd ? "paid" : "forwarded"}, `
                                     + `${fmt(t)} saved, ${fmtInt(p.requests)} requests`));
      group.append(svg("rect", { x, width: w, y: y(b), height: Math.max(y(0) - y(b), 0), class: "fwd" }));
      group.append(svg("rect", { x, width: w, y: y(b + t), height: Math.max(y(b) - y(b + t), 0), class: "saved" }));
      chart.append(group);
    }
    if (i % 15 === 0 || i === points.length - 1) {
      const end = i === points.length - 1; // the last label ends at the right edge, not past it
      chart.append(svg("text", { x: end ? width - right : left + i * step + step / 2, y: height - 6,
                                 class: "axis", "text-anchor": end ? "end" : "middle" },
                       fmtClock(p.minute).slice(0, 5)));
    }
  });
  container.replaceChildren(chart);
}

function drawCharts(m) {
  barChart(document.getElementById("chart-tokens"), m.per_minute, "tokens_forwarded_est", "tokens_saved", false);
  barChart(document.getElementById("chart-cost"), m.per_minute, "cost_usd", "cost_saved_usd", true);
}

function drawHealth(h) {
  const pill = document.getElementById("health");
  if (!h) {
    pill.dataset.state = "down";
    pill.textContent = "proxy unreachable";
    return;
  }
  document.getElementById("logout").hidden = !h.admin_locked;
  pill.dataset.state = h.status === "ok" && !h.database_error ? "ok" : "down";
  const parts = [h.status, `v${h.version}`, `up ${fmtUptime(h.uptime_s)}`,
                 `${h.active_sessions} sessions in memory`];
  if (h.database_error) parts.push(`database: ${h.database_error}`);
  pill.textContent = parts.join(" · ");
}

function showProblem(text) {
  const node = document.getElementById("problem");
  node.hidden = !text;
  node.textContent = text || "";
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (response.status === 401) window.location.assign("dashboard/login"); // logged out elsewhere
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function refresh() {
  // Relative paths: the page works wherever the proxy is mounted.
  const [metrics, health] = await Promise.allSettled([getJson("metrics.json"), getJson("health")]);
  drawHealth(health.status === "fulfilled" ? health.value : null);
  if (metrics.status === "fulfilled") {
    last = metrics.value;
    drawTotals(last.totals);
    drawTables(last);
    drawCharts(last);
    document.getElementById("updated").textContent = `updated ${fmtClock(last.generated_at)}`;
    document.body.dataset.generatedAt = last.generated_at;
    showProblem("");
  } else {
    showProblem(`cannot read metrics: ${metrics.reason.message}`);
  }
}

async function loop() {
  try {
    if (!document.hidden) await refresh();
  } catch (err) { // a drawing bug must not stop the refreshes
    showProblem(`dashboard error: ${err.message}`);
  }
  setTimeout(loop, REFRESH_S * 1000);
}

document.getElementById("interval").textContent = String(REFRESH_S);
let resizeTimer = 0;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => last && drawCharts(last), 150);
});
loop();
