"""Human-readable summary of a finished run (what `stallwatch run` prints)."""

from __future__ import annotations

import datetime
from typing import Optional

from pipeline.results import outputs, report_data


def _clock(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%H:%M:%S")


def playhead_text(ms: int) -> str:
    return f"{ms // 60_000}:{ms % 60_000 / 1000:04.1f}"


def interval_text(a: dict) -> str:
    """A content alert's interval: playhead (on-demand) or program time (live, UTC)."""
    if a.get("timeline") == "program":
        return f"program {_clock(a['start_ms'])}-{_clock(a['end_ms'])} UTC"
    return f"playhead {playhead_text(a['start_ms'])}-{playhead_text(a['end_ms'])}"


def headline(output: str) -> Optional[dict]:
    """QoE headline metrics over all views of a run (None when no views)."""
    return report_data.qoe(outputs.views(output, report_data.QOE_COLUMNS))


def describe_alert(a: dict) -> str:
    if a["cause"] == "content":
        where = f"{a['video_id']}" + (f" [{a['rendition']}]" if a["rendition"] else "")
        return (f"content   {where:<18} {interval_text(a)}"
                f"  {a['affected_viewers']}/{a['exposed_viewers']} viewers stalled"
                f"  (baseline {a['baseline_rate']:.2%}, p={a['p_value']:.1e})")
    if a["cause"] == "delivery":
        where = f"{a['dimension']}={a['value']}"
        return (f"delivery  {where:<18} {_clock(a['start_ts'])}-{_clock(a['end_ts'])} UTC"
                f"  {a['affected_viewers']}/{a['exposed_viewers']} viewers stalled in the peak bucket"
                f"  (others {a['baseline_rate']:.1%}, p={a['p_value']:.1e})")
    return (f"viewer    {a['viewer_id']:<18} {a['stalls']} stalls, {a['observed_rate']:.2f}/min"
            f" vs {a['baseline_rate']:.3f}/min for everyone")


def render(summary: dict, output: str, alerts: list[dict], max_viewer_lines: int = 5) -> str:
    lines = []
    s = summary
    lines.append(f"stallwatch: {s['input_records']:,} records -> {s['parsed_events']:,} events, "
                 f"{s['dead_letters']:,} dead letters, {s['duplicates_dropped']:,} duplicates dropped "
                 f"({s['runner']}, {s['wall_time_s']:.1f} s)")
    if s["dead_letters_by_reason"]:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(s["dead_letters_by_reason"].items(),
                                                          key=lambda kv: -kv[1]))
        lines.append(f"  dead letters by reason: {reasons}")
    h = headline(output)
    if h:
        startup = (f"startup p50 {h['startup_p50_s']:.2f} s, p95 {h['startup_p95_s']:.2f} s"
                   if h["startup_p50_s"] is not None else "startup n/a")
        lines.append(f"views: {h['views']:,} by {h['viewers']:,} viewers, {h['watch_hours']:,.1f} h watched")
        lines.append(f"QoE:   {startup} | rebuffering {h['rebuffer_pct']:.2f}% of watch time, "
                     f"{h['rebuffer_per_min']:.3f}/min | EBVS {h['ebvs_pct']:.1f}% | "
                     f"playback failures {h['failure_pct']:.1f}%")
    counts = s["alerts"]
    lines.append(f"alerts: {counts['content']} content, {counts['delivery']} delivery, "
                 f"{counts['viewer']} viewer")
    order = {"content": 0, "delivery": 1, "viewer": 2}
    viewer_lines = 0
    for a in sorted(alerts, key=lambda a: (order[a["cause"]], -a["affected_viewers"], -a["stalls"])):
        if a["cause"] == "viewer":
            viewer_lines += 1
            if viewer_lines > max_viewer_lines:
                continue
        lines.append("  " + describe_alert(a))
    if viewer_lines > max_viewer_lines:
        lines.append(f"  ... and {viewer_lines - max_viewer_lines} more viewer alerts")
    sent = s.get("notifications")
    if sent is not None:
        notices = ", ".join(f"{n} {notice}" for notice, n in sent["by_notice"].items()) or "none"
        lines.append(f"notifications: {sent['sent']:,} sent ({notices}) for "
                     f"{sent['alert_versions']:,} alert versions, {sent['retries']:,} retries, "
                     f"{sent['dead_letters']:,} given up (dead letters)")
    lines.append(f"outputs in {output}/: views-*.parquet, metrics-*.parquet, responses-*.parquet, "
                 f"alerts.jsonl, dead_letter-*.jsonl, late_beacon-*.jsonl, "
                 + ("notifications.jsonl, " if sent is not None else "") + "run_summary.json")
    return "\n".join(lines)


def _share(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def render_score(result: dict) -> str:
    lines = ["injected faults vs alerts:"]
    for row in result["faults"]:
        mark = "ok  " if row["ok"] else "FAIL"
        lines.append(f"  {mark} {row['kind']:<24} {row['what']:<12} expect {row['expect']:<10} -> {row['found']}")
    for cause in ("content", "delivery", "viewer"):
        lines.append(f"{cause} alerts: precision {_share(result[cause + '_precision'])}, "
                     f"recall {_share(result[cause + '_recall'])}")
    for row in result.get("latency", []):
        where = row["video_id"] + (f" [{row['rendition']}]" if row["rendition"] else "")
        took = f"{row['latency_s']:.1f} s" if row["latency_s"] is not None else "n/a"
        lines.append(f"first content alert on {where}: {took} after the 5th affected viewer's stall "
                     "(event time)")
    return "\n".join(lines)
