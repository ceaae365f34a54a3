"""One case as a self-contained HTML report: the case, its audit trail, each linked alert with its evidence drawn as
inline SVG (price and score around the event, onset and alert marked). No scripts, no external fetches: the file
opens the same offline, in a mail client or in an archive years later."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any

import orjson

from service.api.cases import AuditRecord, Case
from service.evidence.builder import Evidence

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 760, 170, 64, 12, 10, 26
_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)


def utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + " UTC"


def _hms(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ms / 1000))


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _path(points: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(points))


def line_chart_svg(
    title: str,
    series: Sequence[tuple[str, str, Sequence[tuple[int, float]], bool]],
    t0: int,
    t1: int,
    marks: Sequence[tuple[int, str, str]] = (),
) -> str:
    """An SVG line chart on a UTC time axis: series are (label, colour, points, dashed); marks (t, label, colour)."""
    t1 = max(t1, t0 + 1)
    vals = [v for _, _, pts, _ in series for _, v in pts]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if hi == lo:
        hi = lo + (abs(lo) * 0.01 or 1.0)

    def x(t: int) -> float:
        return PAD_L + (W - PAD_L - PAD_R) * (t - t0) / (t1 - t0)

    def y(v: float) -> float:
        return PAD_T + (H - PAD_T - PAD_B) * (1 - (v - lo) / (hi - lo))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" aria-label="{_e(title)}">']
    parts.append(f'<rect width="{W}" height="{H}" fill="#fff"/>')
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        parts.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{PAD_L - 4}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">{v:.4g}</text>')
    step = next((s * 1000 for s in _STEPS_S if (t1 - t0) / (s * 1000) <= 7), _STEPS_S[-1] * 1000)
    t = -(-t0 // step) * step
    while t <= t1:
        label = _hms(t)
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{PAD_T}" y2="{H - PAD_B}" stroke="#f0f0f0"/>')
        parts.append(f'<text x="{x(t):.1f}" y="{H - 10}" font-size="10" text-anchor="middle">{label}</text>')
        t += step
    parts.append(f'<text x="4" y="{H - 10}" font-size="10">UTC</text>')
    if len(marks) == 2 and marks[0][0] == marks[1][0]:  # onset = alert: one line, one label
        marks = [(marks[1][0], f"onset = {marks[1][1]}", marks[1][2])]
    for row, (t, label, colour) in enumerate(marks):
        parts.append(
            f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{PAD_T}" y2="{H - PAD_B}" stroke="{colour}" '
            f'stroke-dasharray="4 3"/><text x="{x(t) + 3:.1f}" y="{PAD_T + 10 + 12 * row}" font-size="10" '
            f'fill="{colour}">{_e(label)}</text>'
        )
    for label, colour, pts, dashed in series:
        if pts:
            dash = ' stroke-dasharray="6 4"' if dashed else ""
            d = _path([(x(t), y(v)) for t, v in pts])
            parts.append(
                f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.5"{dash}>'
                f"<title>{_e(label)}</title></path>"
            )
    parts.append(f'<text x="{PAD_L + 4}" y="{PAD_T + 22}" font-size="11" font-weight="bold">{_e(title)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def evidence_svgs(ev: Evidence) -> str:
    t0, t1 = ev.start_ms, max([ev.end_ms] + [b.t for b in ev.bars[-1:]])
    if ev.bars:
        t1 = min(t1, max(ev.bars[-1].t, ev.alert_ms) + ev.bar_ms)
    marks = [
        (ev.onset_ms, f"onset {_hms(ev.onset_ms)}", "#b26b00"),
        (ev.alert_ms, f"alert {_hms(ev.alert_ms)}", "#c62828"),
    ]
    price = line_chart_svg(
        f"{ev.key} price (close)", [("close", "#1f6feb", [(b.t, b.c) for b in ev.bars], False)], t0, t1, marks
    )
    score = line_chart_svg(
        "fused risk score and threshold",
        [
            ("score", "#2e7d32", [(s.t, s.fused) for s in ev.scores], False),
            ("threshold", "#c62828", [(s.t, s.threshold) for s in ev.scores], True),
        ],
        t0,
        t1,
        marks,
    )
    return price + score


def render_case_report(
    case: Case, audit: Sequence[AuditRecord], alerts: Sequence[dict[str, Any]], evidence: dict[str, Evidence]
) -> str:
    rows = "".join(
        f"<tr><td>{_e(utc(r.time_ms))}</td><td>{_e(r.key_id)}</td><td>{_e(r.action)}</td>"
        f"<td><code>{_e(orjson.dumps(r.detail).decode())}</code></td></tr>"
        for r in audit
    )
    notes = "".join(f"<li><b>{_e(utc(n.time_ms))}</b> · {_e(n.key_id)}: {_e(n.text)}</li>" for n in case.notes)
    blocks = []
    for a in alerts:
        ev = evidence.get(str(a["id"]))
        feats = "".join(
            f"<tr><td>{_e(f['name'])}</td><td>{float(f['value']):.6g}</td><td>{float(f['normal']):.6g}</td></tr>"
            for f in a.get("top_features", [])
        )
        blocks.append(
            f"<section><h3>{_e(a['key'])} · {_e(str(a['anomaly_type']).replace('_', ' '))} · {_e(a['severity'])}</h3>"
            f"<p>{_e(a['explanation'])}</p><p>window end {_e(utc(int(a['window_end_ms'])))} · score "
            f"{float(a['score']):.4g} / threshold {float(a['threshold']):.4g} · model {_e(a['model_name'])} "
            f"{_e(a['model_version'])} · alert id <code>{_e(a['id'])}</code></p>"
            + (evidence_svgs(ev) if ev is not None else "<p><i>no evidence was stored for this alert</i></p>")
            + (
                "<p>branches: "
                + " · ".join(
                    f"{_e(b['label'])} {float(b['score']):.3g} (weight {float(b['weight']):.2f})" for b in ev.branches
                )
                + "</p>"
                if ev is not None and ev.branches
                else ""
            )
            + (f"<table><tr><th>feature</th><th>value</th><th>normal</th></tr>{feats}</table>" if feats else "")
            + "</section>"
        )
    status = case.status.value + (f" ({case.disposition.value.replace('_', ' ')})" if case.disposition else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Case {_e(case.id)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:900px}}
table{{border-collapse:collapse;margin:8px 0}}
td,th{{border:1px solid #ddd;padding:3px 6px;font-size:12px;text-align:left}}
code{{font-size:11px}}section{{border-top:1px solid #ccc;margin-top:16px}}</style></head>
<body><h1>Case {_e(case.id)}: {_e(case.title)}</h1>
<p>status <b>{_e(status)}</b> · assignee {_e(case.assignee or "nobody")} · opened {_e(utc(case.created_ms))} by
{_e(case.created_by)} · last change {_e(utc(case.updated_ms))} · report made {_e(utc(int(time.time() * 1000)))}</p>
<h2>Notes</h2><ul>{notes or "<li>none</li>"}</ul>
<h2>Alerts ({len(alerts)})</h2>{"".join(blocks)}
<h2>Audit trail</h2><table><tr><th>when</th><th>key id</th><th>action</th><th>detail</th></tr>{rows}</table>
</body></html>
"""
