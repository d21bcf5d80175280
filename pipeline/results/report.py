"""stallwatch report: one self-contained HTML file (inline SVG, no scripts, no fetches)."""

from __future__ import annotations

import datetime
import html
import os
from typing import Optional

from pipeline.results import charts, outputs, report_data, summary
from pipeline.io import files

MAX_SECTIONS_PER_CAUSE = 12     # alerts drawn in detail; the table lists more
MAX_TABLE_ROWS = 150
ZOOM_MS = 120_000               # content zoom: +-2 min around the interval
ZOOM_BUCKET_MS = 2_000
CONTEXT_BUCKETS = 240
PAYLOAD_CHARS = 400

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1a1a1a;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:16px 24px 64px}
h1{font-size:22px;margin:12px 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:20px 0 6px}.muted{color:#555}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:120px}
.card b{display:block;font-size:20px}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;vertical-align:top}
th:first-child,td:first-child,td:nth-child(2){text-align:left}
figure{margin:8px 0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px}
figure svg{width:100%;height:auto}
figcaption{font-size:12px;color:#555}
pre{text-align:left;white-space:pre-wrap;word-break:break-all;background:#f1f1f1;padding:4px 6px;margin:2px 0;font-size:12px}
.content{color:#0072B2}.delivery{color:#D55E00}.viewer{color:#CC79A7}
nav a{margin-right:12px}
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _clock(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _num(value, fmt: str = "{:,.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def _figure(svg: str, caption: str) -> str:
    return f'<figure role="img" aria-label="{_e(caption)}">{svg}<figcaption>{_e(caption)}</figcaption></figure>'


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _where(a: dict) -> str:
    if a["cause"] == "content":
        rendition = f" [{a['rendition']}]" if a.get("rendition") else ""
        return f"{a['video_id']}{rendition} @ {summary.interval_text(a)}"
    if a["cause"] == "delivery":
        return f"{a['dimension']}={a['value']}"
    return f"viewer {a['viewer_id']}"


def _headline(q: Optional[dict], run: dict) -> str:
    if not q:
        return "<p>No views in this run.</p>"
    cards = [("views", f"{q['views']:,}"), ("viewers", f"{q['viewers']:,}"),
             ("watch time", f"{q['watch_hours']:,.1f} h"),
             ("startup p50", _num(q["startup_p50_s"], "{:.2f} s")),
             ("startup p95", _num(q["startup_p95_s"], "{:.2f} s")),
             ("rebuffer", f"{q['rebuffer_pct']:.2f} %"),
             ("rebuffer freq.", f"{q['rebuffer_per_min']:.3f} /min"),
             ("EBVS", f"{q['ebvs_pct']:.1f} %"), ("playback failures", f"{q['failure_pct']:.1f} %"),
             ("dead letters", f"{run.get('dead_letters', 0):,}")]
    return '<div class="cards">' + "".join(
        f'<div class="card"><span class="muted">{_e(k)}</span><b>{_e(v)}</b></div>' for k, v in cards) + "</div>"


def _breakdowns(views) -> str:
    parts = []
    for dimension in report_data.BREAKDOWN_DIMENSIONS:
        rows = report_data.breakdown_rows(views, dimension)
        parts.append(f"<h3>By {_e(dimension)}</h3>")
        parts.append(_table(
            [dimension, "views", "watch h", "startup p50 s", "startup p95 s", "rebuffer %",
             "rebuffers/min", "EBVS %", "failures %"],
            [[_e(r["value"]), f"{r['views']:,}", f"{r['watch_hours']:,.1f}", _num(r["startup_p50_s"]),
              _num(r["startup_p95_s"]), f"{r['rebuffer_pct']:.2f}", f"{r['rebuffer_per_min']:.3f}",
              f"{r['ebvs_pct']:.1f}", f"{r['failure_pct']:.1f}"] for r in rows]))
    return "".join(parts)


def _timeseries(metrics: list[dict]) -> str:
    present, overall = report_data.minute_series(metrics, "all")
    if not present:
        return "<p>No metrics.</p>"
    lo, hi, outside = report_data.main_range(metrics)
    step = min((b - a for a, b in zip(present, present[1:])), default=60_000)   # the bucket width
    minutes = list(range(lo - lo % step, hi + 1, step))
    note = (f"<p class='muted'>{outside:,} views ending outside {_e(_clock(lo))} – {_e(_clock(hi))} UTC "
            "(client clocks far off) are not drawn.</p>" if outside else "")
    rows = overall.get("all", {})
    pick = (lambda key: [rows[m][key] if m in rows else None for m in minutes])
    parts = [note,
        _figure(charts.lines_over_time(minutes, {"views ending": pick("views")}, "views",
                                       "Views per minute"), "Views ending per minute (all)"),
        _figure(charts.lines_over_time(minutes, {"p50": pick("startup_p50_ms"), "p95": pick("startup_p95_ms")},
                                       "startup (ms)", "Video startup time"), "Startup time p50 and p95 per minute"),
        _figure(charts.lines_over_time(minutes, {"failure %": pick("playback_failure_pct"), "EBVS %": pick("ebvs_pct")},
                                       "% of views", "Failures and exits before start"),
                "Playback failure % and EBVS % per minute"),
    ]
    cdns = report_data.top_values(metrics, "cdn", 6)
    cdn_minutes, by_cdn = report_data.minute_series(metrics, "cdn", cdns)
    series = {"all": pick("rebuffer_pct")}
    series.update({c: [by_cdn[c][m]["rebuffer_pct"] if m in by_cdn.get(c, {}) else None for m in minutes]
                   for c in cdns})
    parts.append(_figure(charts.lines_over_time(minutes, series, "rebuffer % of watch time",
                                                "Rebuffering, overall and by CDN"),
                         "Rebuffer percentage per minute, overall and by CDN"))
    return "".join(parts)


def _alerts_table(alerts: list[dict], drawn: set[str]) -> str:
    rows = []
    for a in alerts[:MAX_TABLE_ROWS]:
        link = f'<a href="#alert-{_e(a["alert_id"])}">{_e(_where(a))}</a>' if a["alert_id"] in drawn else _e(_where(a))
        rows.append([f'<span class="{_e(a["cause"])}">{_e(a["cause"])}</span>', f"<span class='l'>{link}</span>",
                     _e(f"{_clock(a['start_ts'])} – {_clock(a['end_ts'])[11:]}"),
                     f"{a['affected_viewers']:,} / {a['exposed_viewers']:,}",
                     _e(f"{a['p_value']:.1e}"), _e(f"{a['observed_rate']:.3f} vs {a['baseline_rate']:.3f}")])
    more = (f"<p class='muted'>{len(alerts) - MAX_TABLE_ROWS:,} more alerts in alerts.jsonl.</p>"
            if len(alerts) > MAX_TABLE_ROWS else "")
    return _table(["cause", "where", "when (UTC)", "affected / exposed", "p-value", "rate vs baseline"],
                  rows) + more


def _breakdown_lines(a: dict) -> str:
    return "".join(f"<p><b>{_e(name)}</b>: " + ", ".join(f"{_e(k)} {int(v):,}" for k, v in values.items()) + "</p>"
                   for name, values in (a.get("breakdown") or {}).items())


def _content_section(views, a: dict) -> str:
    rows = report_data.video_rows(views, a["video_id"])
    live = a.get("timeline") == "program"
    first, last = report_data.position_range(rows, live)
    lo = max(first, a["start_ms"] - ZOOM_MS)
    zoom = report_data.content_profile(rows, a, ZOOM_BUCKET_MS, lo, a["end_ms"] + ZOOM_MS)
    last = max(a["end_ms"] + ZOOM_MS, last)
    bucket = max(5_000, -(-(last - first) // CONTEXT_BUCKETS) // 1000 * 1000)
    whole = report_data.content_profile(rows, a, bucket, first, last + 1)
    scope = f"rendition {a['rendition']}" if a.get("rendition") else "all renditions"
    axis = "program time (the live stream's wall clock)" if live else "playhead"
    return "".join([
        _figure(charts.playhead_profile(zoom["bucket_starts_ms"], zoom["stalls"], zoom["exposure"],
                                        (a["start_ms"], a["end_ms"]), f"{a['video_id']} ({scope}): around the flagged interval",
                                        program=live),
                f"Viewers stalling per {ZOOM_BUCKET_MS // 1000} s of {axis} and viewers exposed, ±2 min"),
        _figure(charts.playhead_profile(whole["bucket_starts_ms"], whole["stalls"], whole["exposure"],
                                        (a["start_ms"], a["end_ms"]), f"{a['video_id']} ({scope}): "
                                        + ("whole event" if live else "whole video"), program=live),
                f"Viewers stalling per {bucket // 1000} s of {axis} over the whole "
                + ("event" if live else "video")),
        _breakdown_lines(a)])


def _delivery_section(views, a: dict) -> str:
    profile = report_data.delivery_profile(views, a)
    return _figure(charts.stacked_over_time(profile["minutes_ms"], profile["series"],
                                            (a["start_ts"], a["end_ts"]), "stall starts / min",
                                            f"Stalls by {a['dimension']}"),
                   f"Stall starts per minute by {a['dimension']}, flagged window shaded") + _breakdown_lines(a)


def _viewer_section(views, a: dict) -> str:
    rows = report_data.viewer_views(views, a["viewer_id"])
    labels = [f"{r['video_id']} {_clock(r['start_ms'])[11:16]}" for r in rows]
    chart = _figure(charts.bars(labels, [r["stalls"] for r in rows], "stalls",
                                f"Stalls per view of {a['viewer_id']}"), "Stalls in each of this viewer's views")
    table = _table(["video", "start (UTC)", "watch min", "stalls", "rebuffer %", "cdn", "asn", "stall positions (s)"],
                   [[_e(r["video_id"]), _e(_clock(r["start_ms"])), f"{r['watch_min']:.1f}", str(r["stalls"]),
                     f"{r['rebuffer_pct']:.2f}", _e(r["cdn"]), _e(r["asn"]),
                     _e(", ".join(map(str, r["stall_positions_s"])))] for r in rows])
    return chart + table


def _dead_letters(run: dict, output: str) -> str:
    by_reason = run.get("dead_letters_by_reason") or {}
    if not by_reason:
        return "<p>No dead letters: every record parsed.</p>"
    examples = report_data.dead_letter_examples(output)
    rows = []
    for reason, count in sorted(by_reason.items(), key=lambda kv: -kv[1]):
        samples = "".join(f"<pre>{_e(d['source'])}: {_e(d['payload'][:PAYLOAD_CHARS])}</pre>"
                          for d in examples.get(reason, []))
        rows.append([f"<span class='l'>{_e(reason)}</span>", f"{count:,}", samples])
    return _table(["reason", "records", "examples (escaped, cut at 400 characters)"], rows)


def build_html(output: str) -> str:
    run = outputs.summary(output) if os.path.exists(os.path.join(output, files.SUMMARY)) else {}
    views = outputs.views(output)
    metrics = outputs.metrics(output)
    order = {"content": 0, "delivery": 1, "viewer": 2}
    alerts = sorted(outputs.alerts(output),
                    key=lambda a: (order[a["cause"]], -a["affected_viewers"], -a["stalls"], a["alert_id"]))
    drawn: dict[str, list[dict]] = {c: [a for a in alerts if a["cause"] == c][:MAX_SECTIONS_PER_CAUSE] for c in order}
    drawn_ids = {a["alert_id"] for group in drawn.values() for a in group}
    sections = []
    for cause, render in (("content", _content_section), ("delivery", _delivery_section),
                          ("viewer", _viewer_section)):
        total = sum(1 for a in alerts if a["cause"] == cause)
        sections.append(f"<h2 id='{cause}'>{cause.title()} alerts ({total:,})</h2>")
        if total > len(drawn[cause]):
            sections.append(f"<p class='muted'>The {len(drawn[cause])} largest are drawn; all are in the table above.</p>")
        for a in drawn[cause]:
            sections.append(f"<h3 id='alert-{_e(a['alert_id'])}' class='{cause}'>{_e(_where(a))}</h3>"
                            f"<p class='muted'>{a['affected_viewers']:,} of {a['exposed_viewers']:,} viewers"
                            f"{' in its peak bucket' if cause == 'delivery' else ''}, "
                            f"{_e(_clock(a['start_ts']))} – {_e(_clock(a['end_ts']))} UTC, p = {a['p_value']:.1e}, "
                            f"alert_id {_e(a['alert_id'])}</p>" + render(views, a))
    title = f"stallwatch report: {os.path.basename(output.rstrip('/')) or output}"
    return "".join([
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">",
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{_e(title)}</h1><p class='muted'>{_e(run.get('input_records', 0))} records, "
        f"runner {_e(run.get('runner', '?'))}, source {_e(run.get('source', '?'))}</p>",
        "<nav><a href='#qoe'>QoE</a><a href='#time'>Over time</a><a href='#alerts'>Alerts</a>"
        "<a href='#content'>Content</a><a href='#delivery'>Delivery</a><a href='#viewer'>Viewers</a>"
        "<a href='#dead'>Dead letters</a></nav>",
        "<h2 id='qoe'>Headline QoE</h2>", _headline(report_data.qoe(views), run), _breakdowns(views),
        "<h2 id='time'>Over time</h2>", _timeseries(metrics),
        f"<h2 id='alerts'>Alerts ({len(alerts):,})</h2>", _alerts_table(alerts, drawn_ids),
        *sections,
        "<h2 id='dead'>Dead letters</h2>", _dead_letters(run, output),
        "</main></body></html>"])


def write_report(output: str) -> str:
    """Write OUTPUT/report.html and return its path."""
    path = os.path.join(output, "report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(build_html(output))
    return path

