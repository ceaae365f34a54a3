// rmad-crypto analyst desk: plain JS and canvas, no build step. Talks to the /v1 API with the key in the box
// (kept in localStorage; `#key=...` in the URL fills it; in development the server fills in its dev key).
// Every time shown is UTC and says so. The URL carries the symbol (#symbol=venue:SYMBOL) and an open alert.
"use strict";

const $ = (id) => document.getElementById(id);
const SEV_RANK = { low: 0, medium: 1, high: 2, critical: 3 };
const MIN = 60_000;
const state = {
  key: "",
  symbol: "",          // venue:symbol shown on the charts
  userPicked: false,   // the user chose a symbol: new alerts do not switch it
  alerts: [],          // newest first: {seq, alert, feedback}
  seen: new Set(),
  lastSeq: null,
  tape: new Map(),     // t -> bar, for the shown symbol
  scores: new Map(),   // window_end_ms -> score
  loadedFor: "",
  view: { end: null, span: 10 * MIN },  // end null: follow the newest data
  labels: [],          // simulator labels (all keys), from the scoreboard
  cases: [],
  ev: null,            // the evidence shown, and its alert record
  evAlert: null,
  evCase: null,
  ws: null,
};
window.rmadDashboard = state;

// ---------------------------------------------------------------- time (always UTC)
const pad2 = (n) => String(n).padStart(2, "0");
function hms(ms) {
  const d = new Date(ms);
  return `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())}`;
}
function utc(ms) { return `${hms(ms)} UTC`; }
function utcDate(ms) {
  const d = new Date(ms);
  return `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())} ${hms(ms)} UTC`;
}
// prices span 1e-8 (small caps quoted in BTC) to 1e5: short labels that fit the axis either way
function fmtPrice(v) {
  const a = Math.abs(v);
  return a !== 0 && (a < 0.01 || a >= 1e6) ? v.toExponential(4) : v.toPrecision(6);
}
function fmtDur(s) {
  if (s === null || s === undefined) return "n/a";
  s = Math.max(0, s);
  return s < 1 ? `${(s * 1000).toFixed(0)} ms` : s < 120 ? `${s.toFixed(1)} s` : s < 7200 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`;
}

// ---------------------------------------------------------------- URL, key, API
function hashParams() { return new URLSearchParams(location.hash.slice(1)); }
function writeHash() {
  const q = new URLSearchParams();
  if (state.symbol) q.set("symbol", state.symbol);
  if (state.evAlert) q.set("alert", state.evAlert.id);
  history.replaceState(null, "", `#${q}`);
}

function initKey() {
  const fromHash = hashParams().get("key");
  const dev = document.body.dataset.devKey;
  state.key = fromHash || localStorage.getItem("rmad_api_key") || (dev && !dev.startsWith("__") ? dev : "");
  if (fromHash) localStorage.setItem("rmad_api_key", fromHash);
  $("apikey").value = state.key;
  $("keyhelp").hidden = !!state.key;
  $("apikey").addEventListener("change", () => {
    state.key = $("apikey").value.trim();
    localStorage.setItem("rmad_api_key", state.key);
    $("keyhelp").hidden = !!state.key;
    connect();
    refreshAll();
  });
}

async function api(path, opts = {}) {
  const headers = Object.assign({ "X-API-Key": state.key }, opts.headers || {});
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  if (!r.ok) {
    let msg = await r.text();
    try { const j = JSON.parse(msg); msg = j.message || j.detail || msg; } catch (e) { /* plain text */ }
    throw new Error(`${r.status}: ${typeof msg === "string" ? msg : JSON.stringify(msg)}`);
  }
  return r.status === 204 ? null : r.json();
}
const post = (path, body, method = "POST") =>
  api(path, { method, headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

// ---------------------------------------------------------------- symbols
function severityByKey() {
  const out = new Map();
  const since = Date.now() - 60 * MIN;
  for (const rec of state.alerts) {
    const a = rec.alert;
    const cur = out.get(a.key) || { rank: -1, last: 0, n: 0 };
    if (a.created_ms >= since) cur.rank = Math.max(cur.rank, SEV_RANK[a.severity] ?? 0);
    cur.last = Math.max(cur.last, a.window_end_ms);
    cur.n += 1;
    out.set(a.key, cur);
  }
  return out;
}

async function refreshSymbols() {
  let keys = [];
  try { keys = (await api("/v1/symbols")).keys; } catch (e) { return; }
  for (const a of state.alerts) if (!keys.includes(a.alert.key)) keys.push(a.alert.key);
  const sev = severityByKey();
  const order = new Map(keys.map((k, i) => [k, i]));
  keys.sort((a, b) => {
    const sa = sev.get(a) || { rank: -1, last: 0 }, sb = sev.get(b) || { rank: -1, last: 0 };
    return sb.rank - sa.rank || sb.last - sa.last || order.get(a) - order.get(b);
  });
  const sel = $("symbol");
  const label = (k) => {
    const s = sev.get(k);
    return s ? `${k} · ${s.n} alert${s.n > 1 ? "s" : ""}${s.rank >= 0 ? ", " + Object.keys(SEV_RANK)[s.rank] : ""}` : k;
  };
  const current = Array.from(sel.options).map((o) => `${o.value}|${o.text}`);
  const wanted = keys.map((k) => `${k}|${label(k)}`);
  if (keys.length && (wanted.length !== current.length || wanted.some((w, i) => w !== current[i]))) {
    sel.innerHTML = "";
    for (const k of keys) sel.add(new Option(label(k), k));
  }
  if (!state.symbol && keys.length) selectSymbol(keys[0], false);
  if (state.symbol && !keys.includes(state.symbol)) sel.add(new Option(state.symbol, state.symbol));
  sel.value = state.symbol;
}

function selectSymbol(key, byUser) {
  if (!key) return;
  if (byUser) state.userPicked = true;
  if (key !== state.symbol) {
    state.symbol = key;
    state.tape = new Map();
    state.scores = new Map();
    state.loadedFor = "";
  }
  const sel = $("symbol");
  if (!Array.from(sel.options).some((o) => o.value === key)) sel.add(new Option(key, key));
  sel.value = key;
  writeHash();
  refreshCharts();
}

// ---------------------------------------------------------------- data for the charts
function keyPath(key) {
  const [venue, ...rest] = key.split(":");
  return `${encodeURIComponent(venue)}/${encodeURIComponent(rest.join(":"))}`;
}

async function refreshCharts() {
  if (!state.symbol) { drawCharts(); return; }
  const sym = state.symbol;
  const full = state.loadedFor !== sym;  // the first load takes everything stored; then only the newest
  try {
    const [tape, scores] = await Promise.all([
      api(`/v1/tape/${keyPath(sym)}?limit=${full ? 5000 : 120}`),
      api(`/v1/scores/${keyPath(sym)}?limit=${full ? 5000 : 60}`),
    ]);
    if (sym !== state.symbol) return;
    if (full) fitLatestAlert(sym, tape.bars, scores.items);
    for (const b of tape.bars) state.tape.set(b.t, b);
    for (const s of scores.items) state.scores.set(s.window_end_ms, s);
    state.loadedFor = sym;
    trim(state.tape, 20000);
    trim(state.scores, 5000);
  } catch (e) { /* keep the last picture */ }
  drawCharts();
}

// on opening a market, widen the live window (up to an hour) so its latest alert is in view: after a backfill or
// a quiet spell the alert may lie well before the last ten minutes
function fitLatestAlert(sym, bars, scores) {
  const latest = state.alerts.find((r) => r.alert.key === sym);
  if (!latest || state.view.end !== null) return;
  const newest = Math.max(0, ...bars.map((b) => b.t), ...scores.map((s) => s.window_end_ms));
  const need = newest - latest.alert.window_end_ms + 2 * MIN;
  if (need > state.view.span) state.view.span = Math.min(60 * MIN, need);
}

function trim(map, most) {
  if (map.size <= most) return;
  const ks = Array.from(map.keys()).sort((a, b) => a - b);
  for (const k of ks.slice(0, ks.length - most)) map.delete(k);
}

function sortedValues(map) { return Array.from(map.values()).sort((a, b) => (a.t ?? a.window_end_ms) - (b.t ?? b.window_end_ms)); }

function dataEnd() {
  let hi = 0;
  for (const t of state.tape.keys()) hi = Math.max(hi, t);
  for (const t of state.scores.keys()) hi = Math.max(hi, t);
  return hi || Date.now();
}

function viewRange() {
  const end = state.view.end ?? dataEnd() + 5000;
  return [end - state.view.span, end];
}

// ---------------------------------------------------------------- drawing
function setupCanvas(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  ctx.setLineDash([]);
  return ctx;
}

const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400].map((s) => s * 1000);

function drawTimeAxis(ctx, x, t0, t1, top, bottom, left, right) {
  const step = STEPS.find((s) => (t1 - t0) / s <= 8) || STEPS[STEPS.length - 1];
  ctx.strokeStyle = "#222b35"; ctx.fillStyle = "#8b98a8";
  ctx.textAlign = "center";
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
    const px = x(t);
    if (px < left || px > right) continue;
    ctx.beginPath(); ctx.moveTo(px, top); ctx.lineTo(px, bottom); ctx.stroke();
    ctx.fillText(step >= 60000 && t % 3600000 === 0 ? `${hms(t).slice(0, 5)}` : hms(t), px, bottom + 13);
  }
  ctx.textAlign = "right";
  ctx.fillText("time (UTC)", right, bottom + 26);
  ctx.textAlign = "left";
}

function drawValueAxis(ctx, y, lo, hi, left, right, fmt) {
  ctx.strokeStyle = "#2a3440"; ctx.fillStyle = "#8b98a8";
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4;
    ctx.beginPath(); ctx.moveTo(left, y(v)); ctx.lineTo(right, y(v)); ctx.stroke();
    ctx.textAlign = "right"; ctx.fillText(fmt(v), left - 4, y(v) + 4);
  }
  ctx.textAlign = "left";
}

function labelsFor(key) { return state.labels.filter((l) => l.key === key); }

function drawSpans(ctx, x, labels, top, bottom, withText) {
  let n = 0;
  for (const l of labels) {
    const a = x(l.start_ms), b = x(l.end_ms);
    ctx.fillStyle = "rgba(210, 153, 34, 0.13)";
    ctx.fillRect(a, top, Math.max(2, b - a), bottom - top);
    ctx.strokeStyle = "rgba(210, 153, 34, 0.7)"; ctx.setLineDash([3, 3]);
    ctx.beginPath(); ctx.moveTo(x(l.onset_ms), top); ctx.lineTo(x(l.onset_ms), bottom); ctx.stroke(); ctx.setLineDash([]);
    if (withText) {
      ctx.fillStyle = "#d29922";
      ctx.fillText(`injected: ${l.type.replaceAll("_", " ")}`, Math.max(a, 120) + 3, top + 12);
    }
    n++;
  }
  return n;
}

function sevColor(sev) { return sev === "critical" || sev === "high" ? "#f85149" : sev === "medium" ? "#d29922" : "#8b98a8"; }

function drawCharts() { drawPrice(); drawScore(); }

function drawPrice() {
  const c = $("price");
  const ctx = setupCanvas(c);
  const w = c.width, h = c.height, pad = { l: 72, r: 12, t: 10, b: 32 };
  const [t0, t1] = viewRange();
  const x = (t) => pad.l + (w - pad.l - pad.r) * (t - t0) / (t1 - t0);
  const bars = sortedValues(state.tape).filter((b) => b.t >= t0 - 2000 && b.t <= t1);
  const markers = [];
  const plotH = (h - pad.t - pad.b) * 0.74;
  if (!bars.length) {
    ctx.fillStyle = "#8b98a8";
    ctx.fillText(state.symbol ? "no market data in this time window (drag or press live)" : "waiting for market data", pad.l, h / 2);
  }
  drawTimeAxis(ctx, x, t0, t1, pad.t, h - pad.b, pad.l, w - pad.r);
  const spans = state.symbol ? drawSpans(ctx, x, labelsFor(state.symbol).filter((l) => l.end_ms >= t0 && l.start_ms <= t1), pad.t, h - pad.b, true) : 0;
  if (bars.length) {
    let lo = Math.min(...bars.map((b) => b.l)), hi = Math.max(...bars.map((b) => b.h));
    const span = hi - lo || hi * 0.01 || 1;
    lo -= span * 0.05; hi += span * 0.05;
    const y = (p) => pad.t + plotH * (1 - (p - lo) / (hi - lo));
    drawValueAxis(ctx, y, lo, hi, pad.l, w - pad.r, fmtPrice);
    const vmax = Math.max(...bars.map((b) => b.v)) || 1;
    const volTop = pad.t + plotH + 6, volH = h - pad.b - volTop;
    const bw = Math.max(1, (w - pad.l - pad.r) * 1000 / (t1 - t0) - 1);
    ctx.fillStyle = "#2f4b66";
    for (const b of bars) { const vh = volH * b.v / vmax; ctx.fillRect(x(b.t) - bw / 2, volTop + volH - vh, bw, vh); }
    ctx.strokeStyle = "#58a6ff"; ctx.lineWidth = 1.5; ctx.beginPath();
    bars.forEach((b, i) => (i ? ctx.lineTo(x(b.t), y(b.c)) : ctx.moveTo(x(b.t), y(b.c))));
    ctx.stroke(); ctx.lineWidth = 1;
    // alerts of this symbol, marked where they happened (their window end), whether live or older
    for (const rec of state.alerts) {
      const a = rec.alert;
      if (a.key !== state.symbol || a.window_end_ms < t0 || a.window_end_ms > t1) continue;
      let near = bars[0];
      for (const b of bars) if (Math.abs(b.t - a.window_end_ms) < Math.abs(near.t - a.window_end_ms)) near = b;
      const px = x(a.window_end_ms), py = Math.max(pad.t + 12, y(near.h) - 6);
      ctx.fillStyle = sevColor(a.severity);
      ctx.beginPath(); ctx.moveTo(px, py); ctx.lineTo(px - 6, py - 10); ctx.lineTo(px + 6, py - 10); ctx.closePath(); ctx.fill();
      ctx.strokeStyle = ctx.fillStyle; ctx.setLineDash([2, 3]);
      ctx.beginPath(); ctx.moveTo(px, pad.t); ctx.lineTo(px, pad.t + plotH); ctx.stroke(); ctx.setLineDash([]);
      markers.push({ id: a.id, x: px, y: py });
    }
    const last = bars[bars.length - 1];
    $("price-legend").textContent = `${state.symbol} · last ${fmtPrice(last.c)} at ${utc(last.t)} · ${markers.length} alert${markers.length === 1 ? "" : "s"} in view`;
  } else {
    $("price-legend").textContent = state.symbol;
  }
  c.dataset.markers = String(markers.length);
  c.dataset.spans = String(spans);
  state.markers = markers;
}

function drawScore() {
  const c = $("score");
  const ctx = setupCanvas(c);
  const w = c.width, h = c.height, pad = { l: 72, r: 12, t: 10, b: 32 };
  const [t0, t1] = viewRange();
  const x = (t) => pad.l + (w - pad.l - pad.r) * (t - t0) / (t1 - t0);
  const s = sortedValues(state.scores).filter((p) => p.window_end_ms >= t0 && p.window_end_ms <= t1);
  drawTimeAxis(ctx, x, t0, t1, pad.t, h - pad.b, pad.l, w - pad.r);
  if (state.symbol) drawSpans(ctx, x, labelsFor(state.symbol).filter((l) => l.end_ms >= t0 && l.start_ms <= t1), pad.t, h - pad.b, false);
  if (!s.length) {
    ctx.fillStyle = "#8b98a8";
    ctx.fillText("no scores in this time window (the worker scores once its windows are full)", pad.l + 4, h / 2);
    $("score-legend").textContent = "";
    return;
  }
  const hi = Math.max(...s.map((p) => Math.max(p.fused, p.threshold))) * 1.1 || 1;
  const lo = Math.min(0, ...s.map((p) => p.fused));
  const y = (v) => pad.t + (h - pad.t - pad.b) * (1 - (v - lo) / (hi - lo));
  drawValueAxis(ctx, y, lo, hi, pad.l, w - pad.r, (v) => v.toPrecision(3));
  ctx.strokeStyle = "#f85149"; ctx.setLineDash([6, 4]); ctx.beginPath();
  s.forEach((p, i) => (i ? ctx.lineTo(x(p.window_end_ms), y(p.threshold)) : ctx.moveTo(x(p.window_end_ms), y(p.threshold))));
  ctx.stroke(); ctx.setLineDash([]);
  ctx.strokeStyle = "#3fb950"; ctx.lineWidth = 1.5; ctx.beginPath();
  s.forEach((p, i) => (i ? ctx.lineTo(x(p.window_end_ms), y(p.fused)) : ctx.moveTo(x(p.window_end_ms), y(p.fused))));
  ctx.stroke(); ctx.lineWidth = 1;
  for (const rec of state.alerts) {
    const a = rec.alert;
    if (a.key !== state.symbol || a.window_end_ms < t0 || a.window_end_ms > t1) continue;
    ctx.strokeStyle = sevColor(a.severity); ctx.setLineDash([2, 3]);
    ctx.beginPath(); ctx.moveTo(x(a.window_end_ms), pad.t); ctx.lineTo(x(a.window_end_ms), h - pad.b); ctx.stroke(); ctx.setLineDash([]);
  }
  const last = s[s.length - 1];
  $("score-legend").textContent = `score ${last.fused.toPrecision(3)} · threshold ${last.threshold.toPrecision(3)} (dashed) · ${last.model_name} ${last.model_version} · ${utc(last.window_end_ms)}`;
}

// ---------------------------------------------------------------- zoom and pan (both charts share one window)
function setView(end, span) {
  state.view.span = Math.min(Math.max(span, 20_000), 24 * 60 * MIN);
  const newest = dataEnd() + 5000;
  state.view.end = end === null || end >= newest ? null : end;
  $("live").classList.toggle("on", state.view.end === null);
  drawCharts();
}
function zoom(factor, anchorFrac = 1) {
  const [t0, t1] = viewRange();
  const anchor = t0 + (t1 - t0) * anchorFrac;
  const span = state.view.span * factor;
  setView(anchor + (t1 - anchor) * (span / state.view.span), span);
}
function pan(frac) { const [, t1] = viewRange(); setView(t1 + state.view.span * frac, state.view.span); }

function wireChart(canvas) {
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = canvas.getBoundingClientRect();
    const frac = Math.min(1, Math.max(0, (e.clientX - r.left - 72 * r.width / canvas.width) / (r.width * (1 - 84 / canvas.width))));
    zoom(e.deltaY > 0 ? 1.25 : 0.8, frac);
  }, { passive: false });
  let drag = null;
  canvas.addEventListener("mousedown", (e) => { drag = { x: e.clientX, end: viewRange()[1] }; });
  window.addEventListener("mouseup", () => { drag = null; });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    const r = canvas.getBoundingClientRect();
    const dt = (e.clientX - drag.x) / r.width * state.view.span;
    setView(drag.end - dt, state.view.span);
  });
}

// ---------------------------------------------------------------- alerts
function addAlert(rec, live) {
  if (state.seen.has(rec.alert.id)) return;
  state.seen.add(rec.alert.id);
  state.alerts.unshift(rec);
  state.alerts.sort((a, b) => cmpSeq(b.seq, a.seq));
  if (state.alerts.length > 500) state.alerts.length = 500;
  if (!state.lastSeq || cmpSeq(rec.seq, state.lastSeq) > 0) state.lastSeq = rec.seq;
  if (live && !state.userPicked) selectSymbol(rec.alert.key, false);
  renderAlerts();
  drawCharts();
}

function cmpSeq(a, b) {
  const [am, as] = a.split("-").map(Number), [bm, bs] = b.split("-").map(Number);
  return am - bm || as - bs;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function caseOfAlert(id) { return state.cases.find((c) => c.alert_ids.includes(id)); }

function renderAlerts() {
  const ol = $("alerts");
  ol.innerHTML = "";
  for (const rec of state.alerts) {
    const a = rec.alert;
    const li = el("li", `alert-item sev-${a.severity}`);
    li.dataset.alertId = a.id;
    const head = el("div", "head");
    head.title = "open the evidence";
    head.append(el("strong", "", `${a.key} · ${a.anomaly_type.replaceAll("_", " ")}`));
    head.append(el("span", "muted", `${a.severity} · ${utc(a.window_end_ms)}`));
    head.addEventListener("click", () => { selectSymbol(a.key, true); openEvidence(rec); });
    li.append(head);
    li.append(el("div", "explanation", a.explanation));
    const actions = el("div", "actions");
    const fb = el("span", "fb", rec.feedback ? `feedback: ${rec.feedback.verdict}` : "");
    const ev = el("button", "open-ev", "evidence");
    ev.addEventListener("click", () => { selectSymbol(a.key, true); openEvidence(rec); });
    actions.append(ev);
    for (const verdict of ["confirm", "dismiss"]) {
      const b = el("button", `fb-${verdict}`, verdict);
      b.addEventListener("click", async () => {
        const note = verdict === "dismiss" ? "dismissed from the dashboard" : "confirmed from the dashboard";
        try {
          rec.feedback = await post(`/v1/alerts/${a.id}/feedback`, { verdict, note });
          fb.textContent = `feedback: ${verdict}`;
        } catch (e) { fb.textContent = `feedback failed: ${e.message.slice(0, 80)}`; }
      });
      actions.append(b);
    }
    actions.append(el("span", "muted", `score ${a.score.toPrecision(3)} / ${a.threshold.toPrecision(3)}`));
    const c = caseOfAlert(a.id);
    if (c) actions.append(el("span", "pill case", `case ${c.status}`));
    actions.append(fb);
    li.append(actions);
    ol.append(li);
  }
  $("alert-count").textContent = String(state.alerts.length);
}

async function loadAlerts() {
  try {
    const page = await api("/v1/alerts?limit=200");
    for (const rec of page.items.slice().reverse()) addAlert(rec, false);
  } catch (e) { /* shown by the connection pill */ }
}

function connect() {
  if (state.ws) { state.ws.onclose = null; state.ws.close(); }
  if (!state.key) return;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const q = new URLSearchParams();
  if (state.lastSeq) q.set("last_id", state.lastSeq);
  // the key travels as a subprotocol (browsers cannot set headers on a WebSocket), never in the URL
  const ws = new WebSocket(`${proto}://${location.host}/v1/alerts/stream?${q}`, [`rmad-key.${state.key}`]);
  state.ws = ws;
  ws.onopen = () => setConn("live", "ok");
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "alert") addAlert({ seq: msg.seq, alert: msg.alert, feedback: null }, true);
    else if (msg.type === "error") setConn(msg.reason, "bad");
  };
  ws.onclose = (ev) => {
    setConn(ev.reason ? `disconnected: ${ev.reason}` : "reconnecting", "bad");
    setTimeout(connect, 1500);  // resume from the last seen alert: nothing is missed
  };
}

function setConn(text, cls) {
  const p = $("conn");
  p.textContent = text;
  p.className = `pill ${cls}`;
}

// ---------------------------------------------------------------- cases
async function refreshCases() {
  try {
    const page = await api("/v1/cases?limit=100");
    state.cases = page.items;
  } catch (e) { return; }
  const open = state.cases.filter((c) => c.status !== "closed");
  const ol = $("cases");
  ol.innerHTML = "";
  for (const c of state.cases.slice(0, 30)) {
    const li = el("li", `case-item st-${c.status}`);
    li.dataset.caseId = c.id;
    const head = el("div", "head");
    head.append(el("strong", "", c.title));
    head.append(el("span", `pill st-${c.status}`, c.status + (c.disposition ? `: ${c.disposition.replaceAll("_", " ")}` : "")));
    li.append(head);
    li.append(el("div", "muted", `${c.assignee || "unassigned"} · ${c.alert_ids.length} alert${c.alert_ids.length > 1 ? "s" : ""} · changed ${utc(c.updated_ms)}`));
    li.addEventListener("click", async () => {
      const rec = state.alerts.find((r) => r.alert.id === c.alert_ids[0]) || (await api(`/v1/alerts/${c.alert_ids[0]}`).catch(() => null));
      if (rec) { selectSymbol(rec.alert.key, true); openEvidence(rec); }
    });
    ol.append(li);
  }
  if (!state.cases.length) ol.append(el("li", "muted", "no cases yet: open one from an alert's evidence"));
  $("case-count").textContent = `${open.length} open · ${state.cases.length - open.length} closed`;
  renderAlerts();
}

// ---------------------------------------------------------------- evidence view
async function openEvidence(rec) {
  state.evAlert = rec.alert;
  state.ev = null;
  state.evCase = null;
  writeHash();
  $("evidence").hidden = false;
  $("ev-title").textContent = `${rec.alert.key} · ${rec.alert.anomaly_type.replaceAll("_", " ")} · ${rec.alert.severity} · ${utcDate(rec.alert.window_end_ms)}`;
  $("ev-summary").textContent = "loading the evidence...";
  $("case-msg").textContent = "";
  await loadEvidence();
}

function closeEvidence() {
  $("evidence").hidden = true;
  state.evAlert = null;
  state.ev = null;
  writeHash();
}

async function loadEvidence(withCase = true) {
  const a = state.evAlert;
  if (!a) return;
  try {
    const ev = await api(`/v1/alerts/${a.id}/evidence`);
    if (!state.evAlert || state.evAlert.id !== a.id) return;
    state.ev = ev;
  } catch (e) { $("ev-summary").textContent = `evidence not available: ${e.message.slice(0, 120)}`; return; }
  renderEvidence();
  if (withCase) await loadCase();
}

function renderEvidence() {
  const ev = state.ev;
  const a = state.evAlert;
  const run = (ev.alert_ms - ev.onset_ms) / 1000;
  const when = run > 0
    ? `onset ${utc(ev.onset_ms)}, alert ${utc(ev.alert_ms)}: ${run.toFixed(0)} s above the threshold before it fired`
    : `onset = alert ${utc(ev.alert_ms)}: the first window above the threshold fired`;
  $("ev-summary").textContent = `${a.explanation} · ${when} · model ${ev.model}${ev.complete ? "" : " · what followed is still being recorded"}`;
  drawEvidence();
  const bt = $("ev-branches");
  bt.innerHTML = "<tr><th>branch</th><th>score</th><th>weight</th></tr>";
  for (const b of ev.branches) {
    const tr = el("tr");
    tr.append(el("td", "", b.label), el("td", "", Number(b.score).toPrecision(3)), el("td", "", Number(b.weight).toFixed(2)));
    bt.append(tr);
  }
  const ft = $("ev-features");
  ft.innerHTML = "<tr><th>feature</th><th>value</th><th>normal</th></tr>";
  for (const f of ev.top_features) {
    const tr = el("tr");
    tr.append(el("td", "", f.name), el("td", "", Number(f.value).toPrecision(4)), el("td", "", Number(f.normal).toPrecision(4)));
    ft.append(tr);
  }
  const tr = ev.trades;
  if (tr.length) {
    const buys = tr.filter((t) => t.side === "buy");
    const vol = tr.reduce((s, t) => s + t.size, 0), bvol = buys.reduce((s, t) => s + t.size, 0);
    const px = tr.map((t) => t.price);
    $("ev-trades").textContent = `${tr.length} trades from ${utc(tr[0].t)} to ${utc(tr[tr.length - 1].t)}; ${(100 * bvol / (vol || 1)).toFixed(0)} % of the volume bought by takers; price ${fmtPrice(Math.min(...px))} to ${fmtPrice(Math.max(...px))}`;
  } else {
    $("ev-trades").textContent = ev.books.length ? `${ev.books.length} book snapshots` : "no trades recorded for this alert";
  }
}

function drawEvidence() {
  const ev = state.ev;
  const c = $("ev-chart");
  const ctx = setupCanvas(c);
  const w = c.width, h = c.height, pad = { l: 72, r: 14, t: 18, b: 32 };
  const lastT = Math.max(ev.alert_ms, ...ev.bars.map((b) => b.t), ...ev.scores.map((s) => s.t));
  const t0 = ev.start_ms, t1 = Math.max(lastT + ev.bar_ms, ev.alert_ms + 30_000);
  const x = (t) => pad.l + (w - pad.l - pad.r) * (t - t0) / (t1 - t0);
  const split = pad.t + (h - pad.t - pad.b) * 0.58;
  drawTimeAxis(ctx, x, t0, t1, pad.t, h - pad.b, pad.l, w - pad.r);
  // the event: onset to alert, shaded; the injected span (simulator) under it
  drawSpans(ctx, x, labelsFor(ev.key).filter((l) => l.end_ms >= t0 && l.start_ms <= t1), pad.t, h - pad.b, true);
  ctx.fillStyle = "rgba(248, 81, 73, 0.10)";
  ctx.fillRect(x(ev.onset_ms), pad.t, Math.max(3, x(ev.alert_ms) - x(ev.onset_ms)), h - pad.t - pad.b);
  // price
  if (ev.bars.length) {
    let lo = Math.min(...ev.bars.map((b) => b.l)), hi = Math.max(...ev.bars.map((b) => b.h));
    const sp = hi - lo || hi * 0.01 || 1; lo -= sp * 0.05; hi += sp * 0.05;
    const y = (p) => pad.t + (split - pad.t - 8) * (1 - (p - lo) / (hi - lo));
    drawValueAxis(ctx, y, lo, hi, pad.l, w - pad.r, fmtPrice);
    ctx.strokeStyle = "#58a6ff"; ctx.lineWidth = 1.5; ctx.beginPath();
    ev.bars.forEach((b, i) => (i ? ctx.lineTo(x(b.t), y(b.c)) : ctx.moveTo(x(b.t), y(b.c))));
    ctx.stroke(); ctx.lineWidth = 1;
    for (const t of ev.trades) { ctx.fillStyle = t.side === "buy" ? "rgba(63,185,80,0.7)" : "rgba(248,81,73,0.7)"; ctx.fillRect(x(t.t) - 1, y(t.price) - 1, 3, 3); }
  }
  // score and threshold
  if (ev.scores.length) {
    const hi = Math.max(...ev.scores.map((s) => Math.max(s.fused, s.threshold))) * 1.1 || 1;
    const lo = Math.min(0, ...ev.scores.map((s) => s.fused));
    const y = (v) => split + 8 + (h - pad.b - split - 8) * (1 - (v - lo) / (hi - lo));
    drawValueAxis(ctx, y, lo, hi, pad.l, w - pad.r, (v) => v.toPrecision(3));
    ctx.strokeStyle = "#f85149"; ctx.setLineDash([6, 4]); ctx.beginPath();
    ev.scores.forEach((s, i) => (i ? ctx.lineTo(x(s.t), y(s.threshold)) : ctx.moveTo(x(s.t), y(s.threshold))));
    ctx.stroke(); ctx.setLineDash([]);
    ctx.strokeStyle = "#3fb950"; ctx.lineWidth = 1.5; ctx.beginPath();
    ev.scores.forEach((s, i) => (i ? ctx.lineTo(x(s.t), y(s.fused)) : ctx.moveTo(x(s.t), y(s.fused))));
    ctx.stroke(); ctx.lineWidth = 1;
  }
  // onset and alert, marked and labelled
  const mark = (t, label, colour, row) => {
    ctx.strokeStyle = colour; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.moveTo(x(t), pad.t); ctx.lineTo(x(t), h - pad.b); ctx.stroke(); ctx.lineWidth = 1;
    ctx.fillStyle = colour; ctx.font = "bold 12px system-ui, sans-serif";
    const tx = x(t) + 4 + ctx.measureText(label).width > w - pad.r ? x(t) - 4 - ctx.measureText(label).width : x(t) + 4;
    ctx.fillText(label, tx, pad.t - 4 + row * 14);
    ctx.font = "11px system-ui, sans-serif";
  };
  mark(ev.onset_ms, `onset ${hms(ev.onset_ms)}`, "#e3b341", 1);
  mark(ev.alert_ms, `alert ${hms(ev.alert_ms)}`, "#f85149", 2);
  ctx.fillStyle = "#c9d1d9"; ctx.font = "bold 11px system-ui, sans-serif";
  ctx.fillText("price", pad.l + 6, pad.t + 12);
  ctx.fillText("score", pad.l + 6, split + 22);
  ctx.font = "11px system-ui, sans-serif";
  c.dataset.onset = String(ev.onset_ms);
  c.dataset.alert = String(ev.alert_ms);
}

async function loadCase() {
  const ev = state.ev;
  const id = ev && ev.case_id;
  $("case-none").hidden = !!id;
  $("case-open").hidden = !id;
  if (!id) {
    $("case-id").textContent = "";
    $("case-status").textContent = "none";
    $("case-status").className = "pill";
    const sel = $("join-case");
    sel.innerHTML = "";
    for (const c of state.cases.filter((c) => c.status !== "closed")) sel.add(new Option(`${c.title} (${c.status})`, c.id));
    $("join-case-btn").disabled = !sel.options.length;
    return;
  }
  try { state.evCase = await api(`/v1/cases/${id}`); } catch (e) { $("case-msg").textContent = e.message; return; }
  renderCase();
}

function renderCase() {
  const c = state.evCase;
  $("case-id").textContent = `${c.id} · ${c.title}`;
  const st = $("case-status");
  st.textContent = c.status + (c.disposition ? `: ${c.disposition.replaceAll("_", " ")}` : "");
  st.className = `pill st-${c.status}`;
  if (c.status !== "closed") $("case-set-status").value = c.status;
  $("case-assignee").value = c.assignee;
  const closed = c.status === "closed";
  $("case-edit").hidden = closed;  // a closed case is read, exported or reopened; not edited in place
  $("reopen-case").hidden = !closed;
  const ol = $("case-audit");
  ol.innerHTML = "";
  for (const r of (c.audit || []).slice().reverse()) {
    const d = r.detail || {};
    let what = r.action.replaceAll("_", " ");
    if (d.note) what += `: "${d.note}"`;
    if (d.status) what += `: ${d.status.from} → ${d.status.to}`;
    if (d.disposition && typeof d.disposition === "string") what += ` (${d.disposition.replaceAll("_", " ")})`;
    if (d.assignee && d.assignee.to !== undefined) what += `; assignee ${d.assignee.to || "nobody"}`;
    if (d.verdict) what += `: ${d.verdict} on ${d.alert_id}`;
    ol.append(el("li", "", `${utc(r.time_ms)} · key ${r.key_id} · ${what}`));
  }
}

async function caseAction(fn, okText) {
  $("case-msg").textContent = "";
  try {
    await fn();
    $("case-msg").textContent = okText;
  } catch (e) { $("case-msg").textContent = `refused: ${e.message.slice(0, 200)}`; }
  await refreshCases();
  if (state.ev) {
    state.ev.case_id = state.ev.case_id || (caseOfAlert(state.evAlert.id) || {}).id || null;
    await loadCase();
  }
}

function wireCase() {
  $("open-case").addEventListener("click", () => caseAction(async () => {
    const c = await post("/v1/cases", { alert_ids: [state.evAlert.id] });
    state.ev.case_id = c.id;
  }, "case opened"));
  $("join-case-btn").addEventListener("click", () => caseAction(async () => {
    const id = $("join-case").value;
    await post(`/v1/cases/${id}/alerts`, { alert_ids: [state.evAlert.id] });
    state.ev.case_id = id;
  }, "alert joined the case"));
  $("add-note").addEventListener("click", () => caseAction(async () => {
    const text = $("case-note").value.trim();
    if (!text) throw new Error("write a note first");
    await post(`/v1/cases/${state.evCase.id}/notes`, { text });
    $("case-note").value = "";
  }, "note added"));
  $("case-save").addEventListener("click", () => caseAction(
    () => post(`/v1/cases/${state.evCase.id}`, { status: $("case-set-status").value, assignee: $("case-assignee").value.trim() }, "PATCH"),
    "saved"));
  $("close-case").addEventListener("click", () => caseAction(
    () => post(`/v1/cases/${state.evCase.id}`, { status: "closed", disposition: $("case-disposition").value }, "PATCH"),
    "case closed"));
  $("reopen-case").addEventListener("click", () => caseAction(
    () => post(`/v1/cases/${state.evCase.id}`, { status: "open" }, "PATCH"), "case reopened"));
  $("case-report").addEventListener("click", async () => {
    try {
      const r = await fetch(`/v1/cases/${state.evCase.id}/report`, { headers: { "X-API-Key": state.key } });
      if (!r.ok) throw new Error(`${r.status}`);
      const url = URL.createObjectURL(await r.blob());
      const a = el("a"); a.href = url; a.download = `${state.evCase.id}.html`; a.click();
      setTimeout(() => URL.revokeObjectURL(url), 5000);
    } catch (e) { $("case-msg").textContent = `report failed: ${e.message}`; }
  });
}

// ---------------------------------------------------------------- health: named for what an operator knows
function tile(box, name, level, text) {
  const d = el("div", `tile ${level}`);
  d.append(el("span", `pill ${level}`, name), el("span", "tile-text", text));
  box.append(d);
}

async function refreshHealth() {
  let st;
  try { st = await api("/v1/status"); } catch (e) { setConn(`API: ${e.message.slice(0, 60)}`, "bad"); return; }
  const box = $("health");
  box.innerHTML = "";
  const parts = Object.entries(st.parts);
  const failing = (pred) => parts.filter(([n, p]) => pred(n) && !p.ok).map(([n, p]) => `${n}: ${p.detail}`);
  // ingest: data is flowing; a large event-time lag with fresh data is history being replayed, not a fault
  const ingestBad = failing((n) => n.startsWith("ingest"));
  if (ingestBad.length) tile(box, "ingest", "bad", ingestBad.join("; "));
  else if (st.market_age_s === null) tile(box, "ingest", "warn", "waiting for the first market data");
  else if (st.market_age_s > 30) tile(box, "ingest", "bad", `no market data for ${fmtDur(st.market_age_s)}`);
  else if (st.ingest_lag_s !== null && st.ingest_lag_s > 30) tile(box, "ingest", "info", `catching up: events ${fmtDur(st.ingest_lag_s)} behind now (backfill or replay)`);
  else tile(box, "ingest", "ok", `live · events reach the bus ${fmtDur(st.ingest_lag_s)} after they happen`);
  // broker lag: how far this API's readers of the topics are behind
  const lags = Object.values(st.consumer_lag_s).map((v) => Math.max(0, v));
  const lag = lags.length ? Math.max(...lags) : null;
  if (lag === null) tile(box, "broker lag", "warn", "no topic read yet");
  else tile(box, "broker lag", lag < 5 ? "ok" : lag < 30 ? "warn" : "bad", `${fmtDur(lag)} behind the newest record`);
  // worker: scores keep coming
  const workerBad = failing((n) => n.startsWith("worker"));
  if (workerBad.length) tile(box, "worker", "bad", workerBad.join("; "));
  else if (st.score_age_s === null) tile(box, "worker", "warn", "no scores yet (windows fill first)");
  else {
    const lvl = st.score_age_s < 30 ? "ok" : st.score_age_s < 120 ? "warn" : "bad";
    tile(box, "worker", lvl, `last score ${fmtDur(st.score_age_s)} ago${st.score_lag_s !== null ? ` · scored ${fmtDur(st.score_lag_s)} after its last event` : ""}`);
  }
  tile(box, "model version", st.model_version ? "ok" : "warn", st.model_version ? `${st.model_name} ${st.model_version}` : "no market model loaded");
  const apiBad = failing((n) => n.startsWith("api"));
  tile(box, "API", apiBad.length ? "bad" : "ok", apiBad.length ? apiBad.join("; ") : `${st.alerts_logged} alerts logged · ${st.subscribers} live subscriber${st.subscribers === 1 ? "" : "s"}`);
}

// ---------------------------------------------------------------- simulator truth
async function refreshScoreboard() {
  let b;
  try { b = await api("/v1/simulator/scoreboard"); } catch (e) { return; }
  state.labels = b.labels;
  $("scoreboard-panel").hidden = b.injected === 0;
  if (!b.injected) return;
  const box = $("scoreboard");
  box.innerHTML = "";
  const sum = el("div", "board-sum");
  sum.textContent = `injected ${b.injected} · detected ${b.detected} · missed ${b.missed} · pending ${b.pending} · false alarms ${b.false_alarms} · median delay ${b.median_delay_s === null ? "n/a" : fmtDur(b.median_delay_s)}`;
  box.append(sum);
  const t = el("table", "board");
  t.innerHTML = "<tr><th>injected (UTC)</th><th>key</th><th>type</th><th>outcome</th><th>delay from onset</th></tr>";
  for (const l of b.labels.slice(-8).reverse()) {
    const tr = el("tr", `lab-${l.status}`);
    tr.append(el("td", "", utc(l.onset_ms)), el("td", "", l.key), el("td", "", l.type.replaceAll("_", " ")),
      el("td", "", l.status + (l.alert_type ? ` (${l.alert_type.replaceAll("_", " ")})` : "")), el("td", "", l.delay_s === null ? "" : fmtDur(l.delay_s)));
    tr.addEventListener("click", () => { selectSymbol(l.key, true); setView(l.end_ms + 2 * MIN, Math.max(5 * MIN, l.end_ms - l.start_ms + 4 * MIN)); });
    t.append(tr);
  }
  box.append(t);
  drawCharts();
}

function refreshAll() {
  refreshSymbols();
  refreshCharts();
  refreshHealth();
  refreshCases();
  refreshScoreboard();
}

function tickClock() { $("clock").textContent = utcDate(Date.now()); }

initKey();
$("symbol").addEventListener("change", (e) => selectSymbol(e.target.value, true));
$("zoom-in").addEventListener("click", () => zoom(0.5));
$("zoom-out").addEventListener("click", () => zoom(2));
$("pan-back").addEventListener("click", () => pan(-0.5));
$("pan-fwd").addEventListener("click", () => pan(0.5));
$("live").addEventListener("click", () => setView(null, state.view.span));
$("ev-close").addEventListener("click", closeEvidence);
document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !$("evidence").hidden) closeEvidence(); });
wireChart($("price"));
wireChart($("score"));
wireCase();
const wantAlert = hashParams().get("alert");  // read before anything rewrites the URL
{
  const sym = hashParams().get("symbol");
  if (sym) selectSymbol(sym, true);
}
loadAlerts().then(async () => {
  connect();
  await refreshSymbols();
  let rec = wantAlert && state.alerts.find((r) => r.alert.id === wantAlert);
  if (wantAlert && !rec) rec = await api(`/v1/alerts/${encodeURIComponent(wantAlert)}`).catch(() => null);
  if (rec) { selectSymbol(rec.alert.key, true); openEvidence(rec); }
});
refreshAll();
tickClock();
setInterval(tickClock, 1000);
setInterval(refreshSymbols, 5000);
setInterval(refreshCharts, 1000);
setInterval(refreshHealth, 3000);
setInterval(refreshCases, 5000);
setInterval(refreshScoreboard, 5000);
setInterval(() => { if (state.ev && !state.ev.complete) loadEvidence(false); }, 4000);
