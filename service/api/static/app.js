// rmad-crypto dashboard: plain JS and canvas, no build step. Talks to the /v1 API with the key in the box
// (kept in localStorage; `#key=...` in the URL fills it; in development the server fills in its dev key).
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  key: "",
  symbol: "",          // venue:symbol shown on the charts
  userPicked: false,   // the user chose a symbol: new alerts do not switch it
  alerts: [],          // newest first: {seq, alert, feedback}
  seen: new Set(),
  lastSeq: null,
  tape: [],
  scores: [],
  ws: null,
};
window.rmadDashboard = state;

function initKey() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("key");
  const dev = document.body.dataset.devKey;
  state.key = fromHash || localStorage.getItem("rmad_api_key") || (dev && !dev.startsWith("__") ? dev : "");
  if (fromHash) localStorage.setItem("rmad_api_key", fromHash);
  $("apikey").value = state.key;
  $("apikey").addEventListener("change", () => {
    state.key = $("apikey").value.trim();
    localStorage.setItem("rmad_api_key", state.key);
    connect();
    refreshAll();
  });
}

async function api(path, opts = {}) {
  const headers = Object.assign({ "X-API-Key": state.key }, opts.headers || {});
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
  return r.status === 204 ? null : r.json();
}

// ---------------------------------------------------------------- symbols
async function refreshSymbols() {
  let keys = [];
  try { keys = (await api("/v1/symbols")).keys; } catch (e) { return; }
  for (const a of state.alerts) if (!keys.includes(a.alert.key)) keys.push(a.alert.key);
  const sel = $("symbol");
  const current = Array.from(sel.options).map((o) => o.value).filter(Boolean);
  if (keys.length && (keys.length !== current.length || keys.some((k, i) => k !== current[i]))) {
    sel.innerHTML = "";
    for (const k of keys) sel.add(new Option(k, k));
  }
  if (!state.symbol && keys.length) selectSymbol(keys[0], false);
  sel.value = state.symbol;
}

function selectSymbol(key, byUser) {
  if (!key) return;
  if (byUser) state.userPicked = true;
  state.symbol = key;
  const sel = $("symbol");
  if (!Array.from(sel.options).some((o) => o.value === key)) sel.add(new Option(key, key));
  sel.value = key;
  refreshCharts();
}

// ---------------------------------------------------------------- charts
async function refreshCharts() {
  if (!state.symbol) return;
  const [venue, ...rest] = state.symbol.split(":");
  const symbol = rest.join(":");
  const path = `${encodeURIComponent(venue)}/${encodeURIComponent(symbol)}`;
  try {
    const [tape, scores] = await Promise.all([
      api(`/v1/tape/${path}?limit=300`),
      api(`/v1/scores/${path}?limit=300`),
    ]);
    state.tape = tape.bars;
    state.scores = scores.items.slice().reverse();
  } catch (e) { /* keep the last picture */ }
  drawPrice();
  drawScore();
}

function setupCanvas(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "11px system-ui, sans-serif";
  return ctx;
}

function timeRange() {
  const ts = state.tape.map((b) => b.t).concat(state.scores.map((s) => s.window_end_ms));
  if (!ts.length) return null;
  let lo = Math.min(...ts), hi = Math.max(...ts);
  if (hi === lo) hi = lo + 1000;
  return [lo, hi];
}

function drawAxes(ctx, w, h, pad, lo, hi, fmt) {
  ctx.strokeStyle = "#2a3440";
  ctx.fillStyle = "#7d8a99";
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + (h - pad.t - pad.b) * i / 4;
    ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(w - pad.r, y); ctx.stroke();
    ctx.fillText(fmt(hi - (hi - lo) * i / 4), 4, y + 4);
  }
}

function drawPrice() {
  const c = $("price");
  const ctx = setupCanvas(c);
  const w = c.width, h = c.height, pad = { l: 70, r: 10, t: 10, b: 20 };
  const bars = state.tape;
  const range = timeRange();
  const markers = [];
  if (!bars.length || !range) {
    ctx.fillStyle = "#7d8a99";
    ctx.fillText(state.symbol ? "no market data for this symbol yet" : "waiting for market data", pad.l, h / 2);
  } else {
    const [t0, t1] = range;
    const x = (t) => pad.l + (w - pad.l - pad.r) * (t - t0) / (t1 - t0);
    const lo = Math.min(...bars.map((b) => b.l)), hi = Math.max(...bars.map((b) => b.h));
    const span = hi - lo || hi * 0.01 || 1;
    const plotH = (h - pad.t - pad.b) * 0.75;
    const y = (p) => pad.t + plotH * (1 - (p - lo) / span);
    drawAxes(ctx, w, pad.t + plotH + pad.b, pad, lo, hi, (v) => v.toPrecision(6));
    // volume bars along the bottom quarter
    const vmax = Math.max(...bars.map((b) => b.v)) || 1;
    const volTop = pad.t + plotH + 4, volH = h - pad.b - volTop;
    const bw = Math.max(1, (w - pad.l - pad.r) / Math.max(bars.length, 1) - 1);
    ctx.fillStyle = "#2f4b66";
    for (const b of bars) {
      const vh = volH * b.v / vmax;
      ctx.fillRect(x(b.t) - bw / 2, volTop + volH - vh, bw, vh);
    }
    // price line (close)
    ctx.strokeStyle = "#58a6ff"; ctx.lineWidth = 1.5; ctx.beginPath();
    bars.forEach((b, i) => (i ? ctx.lineTo(x(b.t), y(b.c)) : ctx.moveTo(x(b.t), y(b.c))));
    ctx.stroke(); ctx.lineWidth = 1;
    // alerts of this symbol, marked where they happened
    for (const rec of state.alerts) {
      const a = rec.alert;
      if (a.key !== state.symbol) continue;
      const t = Math.min(Math.max(a.window_end_ms, t0), t1);
      let near = bars[0];
      for (const b of bars) if (Math.abs(b.t - t) < Math.abs(near.t - t)) near = b;
      const px = x(t), py = y(near.h) - 6;
      ctx.fillStyle = a.severity === "critical" || a.severity === "high" ? "#f85149" : "#d29922";
      ctx.beginPath(); ctx.moveTo(px, py); ctx.lineTo(px - 6, py - 10); ctx.lineTo(px + 6, py - 10); ctx.closePath(); ctx.fill();
      ctx.strokeStyle = ctx.fillStyle; ctx.setLineDash([2, 3]);
      ctx.beginPath(); ctx.moveTo(px, pad.t); ctx.lineTo(px, pad.t + plotH); ctx.stroke(); ctx.setLineDash([]);
      markers.push({ id: a.id, x: px, y: py });
    }
    const last = bars[bars.length - 1];
    $("price-legend").textContent = `${state.symbol} last ${last.c.toPrecision(6)} · ${bars.length} bars · ${markers.length} alerts`;
  }
  c.dataset.markers = String(markers.length);
  state.markers = markers;
}

function drawScore() {
  const c = $("score");
  const ctx = setupCanvas(c);
  const w = c.width, h = c.height, pad = { l: 70, r: 10, t: 10, b: 20 };
  const s = state.scores;
  const range = timeRange();
  if (!s.length || !range) {
    ctx.fillStyle = "#7d8a99";
    ctx.fillText("no scores for this symbol yet", pad.l, h / 2);
    $("score-legend").textContent = "";
    return;
  }
  const [t0, t1] = range;
  const x = (t) => pad.l + (w - pad.l - pad.r) * (t - t0) / (t1 - t0);
  const hi = Math.max(...s.map((p) => Math.max(p.fused, p.threshold))) * 1.1 || 1;
  const lo = Math.min(0, ...s.map((p) => p.fused));
  const y = (v) => pad.t + (h - pad.t - pad.b) * (1 - (v - lo) / (hi - lo));
  drawAxes(ctx, w, h, pad, lo, hi, (v) => v.toPrecision(3));
  ctx.strokeStyle = "#f85149"; ctx.setLineDash([6, 4]); ctx.beginPath();
  s.forEach((p, i) => (i ? ctx.lineTo(x(p.window_end_ms), y(p.threshold)) : ctx.moveTo(x(p.window_end_ms), y(p.threshold))));
  ctx.stroke(); ctx.setLineDash([]);
  ctx.strokeStyle = "#3fb950"; ctx.lineWidth = 1.5; ctx.beginPath();
  s.forEach((p, i) => (i ? ctx.lineTo(x(p.window_end_ms), y(p.fused)) : ctx.moveTo(x(p.window_end_ms), y(p.fused))));
  ctx.stroke(); ctx.lineWidth = 1;
  const last = s[s.length - 1];
  $("score-legend").textContent = `fused ${last.fused.toPrecision(3)} · threshold ${last.threshold.toPrecision(3)} · ${last.model_name} ${last.model_version}`;
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
  drawPrice();
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

function renderAlerts() {
  const ol = $("alerts");
  ol.innerHTML = "";
  for (const rec of state.alerts) {
    const a = rec.alert;
    const li = el("li", `alert-item sev-${a.severity}`);
    li.dataset.alertId = a.id;
    const head = el("div", "head");
    head.append(el("strong", "", `${a.key} · ${a.anomaly_type.replaceAll("_", " ")}`));
    head.append(el("span", "muted", `${a.severity} · ${new Date(a.window_end_ms).toLocaleTimeString()}`));
    head.addEventListener("click", () => selectSymbol(a.key, true));
    li.append(head);
    li.append(el("div", "explanation", a.explanation));
    const actions = el("div", "actions");
    const fb = el("span", "fb", rec.feedback ? `feedback: ${rec.feedback.verdict}` : "");
    for (const verdict of ["confirm", "dismiss"]) {
      const b = el("button", `fb-${verdict}`, verdict);
      b.addEventListener("click", async () => {
        const note = verdict === "dismiss" ? "dismissed from the dashboard" : "confirmed from the dashboard";
        try {
          rec.feedback = await api(`/v1/alerts/${a.id}/feedback`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ verdict, note }),
          });
          fb.textContent = `feedback: ${verdict}`;
        } catch (e) { fb.textContent = `feedback failed: ${e.message.slice(0, 80)}`; }
      });
      actions.append(b);
    }
    actions.append(el("span", "muted", `score ${a.score.toPrecision(3)} / ${a.threshold.toPrecision(3)}`));
    actions.append(fb);
    li.append(actions);
    ol.append(li);
  }
  $("alert-count").textContent = String(state.alerts.length);
}

async function loadAlerts() {
  try {
    const page = await api("/v1/alerts?limit=100");
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

// ---------------------------------------------------------------- health
function fmtAge(s) {
  if (s === null || s === undefined) return "n/a";
  return s < 1 ? `${(s * 1000).toFixed(0)} ms` : s < 120 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`;
}

async function refreshHealth() {
  let st;
  try { st = await api("/v1/status"); } catch (e) { setConn(`API: ${e.message.slice(0, 60)}`, "bad"); return; }
  const box = $("health");
  box.innerHTML = "";
  const card = (label, value, ok) => {
    const d = el("div");
    d.append(el("span", `pill ${ok === undefined ? "" : ok ? "ok" : "bad"}`, label), document.createTextNode(" " + value));
    box.append(d);
  };
  for (const [name, p] of Object.entries(st.parts)) card(name, p.detail.slice(0, 60), p.ok);
  card("ingest lag", fmtAge(st.ingest_lag_s), st.ingest_lag_s === null || st.ingest_lag_s < 5);
  card("market data age", fmtAge(st.market_age_s), st.market_age_s === null || st.market_age_s < 30);
  card("worker: score age", fmtAge(st.score_age_s), st.score_age_s === null || st.score_age_s < 60);
  card("worker: score lag", fmtAge(st.score_lag_s), st.score_lag_s === null || st.score_lag_s < 10);
  for (const [k, v] of Object.entries(st.consumer_lag_s)) card(`consumer lag ${k}`, fmtAge(v), v < 30);
  card("model", st.model_version ? `${st.model_name} ${st.model_version}` : "not loaded", !!st.model_version);
  card("alerts logged", String(st.alerts_logged));
  card("stream subscribers", String(st.subscribers));
}

function refreshAll() {
  refreshSymbols();
  refreshCharts();
  refreshHealth();
}

initKey();
$("symbol").addEventListener("change", (e) => selectSymbol(e.target.value, true));
loadAlerts().then(connect);
refreshAll();
setInterval(refreshSymbols, 5000);
setInterval(refreshCharts, 1000);
setInterval(refreshHealth, 3000);
