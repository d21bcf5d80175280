"""The data behind every chart and table of the HTML report (pure, unit-tested)."""

from __future__ import annotations

import collections
import glob
import json
import os
from typing import Iterable, Optional

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.io import files
from transforms.metrics import percentile
from transforms.spans import add_span, coverage_at, merge_spans

BREAKDOWN_DIMENSIONS = ("cdn", "asn", "country", "browser", "rendition")
QOE_COLUMNS = ["watch_ms", "rebuffer_ms", "rebuffer_count", "startup_ms",
               "exited_before_start", "playback_failure", "viewer_id"]


def qoe(table: pa.Table) -> Optional[dict]:
    """Headline QoE over the views of a table (None when it has none)."""
    views = table.num_rows
    if not views:
        return None
    watch = pc.sum(table["watch_ms"]).as_py() or 0
    count = pc.sum(table["rebuffer_count"]).as_py() or 0
    startups = sorted(v for v in table["startup_ms"].to_pylist() if v is not None)
    p50, p95 = percentile(startups, 0.5), percentile(startups, 0.95)
    return {
        "views": views,
        "viewers": pc.count_distinct(table["viewer_id"]).as_py(),
        "watch_hours": watch / 3_600_000,
        "startup_p50_s": p50 / 1000 if p50 is not None else None,
        "startup_p95_s": p95 / 1000 if p95 is not None else None,
        "rebuffer_pct": 100.0 * (pc.sum(table["rebuffer_ms"]).as_py() or 0) / watch if watch else 0.0,
        "rebuffer_per_min": count * 60_000 / watch if watch else 0.0,
        "ebvs_pct": 100.0 * pc.sum(table["exited_before_start"]).as_py() / views,
        "failure_pct": 100.0 * pc.sum(table["playback_failure"]).as_py() / views,
    }


def breakdown_rows(table: pa.Table, dimension: str, top: int = 12) -> list[dict]:
    """QoE per value of a dimension, most views first; the tail summed as 'other'."""
    values = table[dimension].to_pylist()
    counts = collections.Counter("(unknown)" if v is None else str(v) for v in values)
    ranked = [v for v, _ in counts.most_common()]
    head, tail = ranked[:top], set(ranked[top:])
    rows = []
    keys = pa.array(["(unknown)" if v is None else str(v) for v in values])
    for value in head:
        row = qoe(table.filter(pc.equal(keys, value)))
        rows.append({"value": value, **row})
    if tail:
        row = qoe(table.filter(pc.is_in(keys, pa.array(sorted(tail)))))
        rows.append({"value": f"other ({len(tail)} values)", **row})
    return rows


def minute_series(metrics: Iterable[dict], dimension: str = "all",
                  values: Optional[Iterable[str]] = None) -> tuple[list[int], dict[str, dict[int, dict]]]:
    """(sorted minutes, {value: {minute: metric row}}) for one dimension."""
    wanted = set(values) if values is not None else None
    by_value: dict[str, dict[int, dict]] = collections.defaultdict(dict)
    minutes = set()
    for row in metrics:
        if row["dimension"] != dimension or (wanted is not None and row["value"] not in wanted):
            continue
        by_value[row["value"]][row["minute_ms"]] = row
        minutes.add(row["minute_ms"])
    return sorted(minutes), dict(by_value)


def main_range(metrics: Iterable[dict], share: float = 0.99,
               pad_ms: Optional[int] = None) -> tuple[int, int, int]:
    """(first, last) minute holding ``share`` of the views, padded (by default a
    quarter of its width, at least 5 min), and the number of views outside it:
    a device whose clock is days off must not squash everyone's time axis."""
    per_minute = sorted((r["minute_ms"], r["views"]) for r in metrics if r["dimension"] == "all")
    total = sum(v for _, v in per_minute)
    if not total:
        return 0, 0, 0
    cut = (1.0 - share) / 2 * total
    seen, lo, hi = 0, per_minute[0][0], per_minute[-1][0]
    for minute, views in per_minute:
        seen += views
        if seen > cut:
            lo = minute
            break
    seen = 0
    for minute, views in reversed(per_minute):
        seen += views
        if seen > cut:
            hi = minute
            break
    if pad_ms is None:
        pad_ms = max(5 * 60_000, (hi - lo) // 4)
    lo, hi = lo - pad_ms, hi + pad_ms
    outside = sum(v for m, v in per_minute if not lo <= m <= hi)
    return lo, hi, outside


def top_values(metrics: Iterable[dict], dimension: str, top: int) -> list[str]:
    views = collections.Counter()
    for row in metrics:
        if row["dimension"] == dimension:
            views[row["value"]] += row["views"]
    return [v for v, _ in views.most_common(top)]


def video_rows(views: pa.Table, video_id: str) -> list[dict]:
    """The views of one video as rows (read once per alert section), each with
    that video's stalls and played ranges only. An ad's are the views that
    showed it, with positions within the ad (never on program time)."""
    showed = pc.equal(views["video_id"], video_id)
    if "ad_breaks" in views.column_names:
        showed = pc.or_(showed, pc.greater(views["ad_breaks"], 0))
    rows = []
    for row in views.filter(showed).to_pylist():
        own = row["video_id"] == video_id
        mine = (lambda item: item.get("video_id") is None) if own else \
            (lambda item: item.get("video_id") == video_id)
        row["stalls"] = [s for s in row["stalls"] if mine(s)]
        row["played"] = [r for r in row["played"] if mine(r)]
        if not own:
            row["program_offset_ms"] = None
        if own or row["played"] or row["stalls"]:
            rows.append(row)
    return rows


def _shift(row: dict, program: bool) -> Optional[int]:
    """What moves a view's playhead onto the alert's timeline (None: not on it)."""
    if not program:
        return 0 if row.get("program_offset_ms") is None else None
    return row.get("program_offset_ms")


def position_range(rows: list[dict], program: bool) -> tuple[int, int]:
    """The first and last position the views of a video played, on the
    playhead timeline (from 0) or the program one (live views)."""
    ends = [(r["start_ms"] + at, r["end_ms"] + at) for row in rows
            if (at := _shift(row, program)) is not None for r in row["played"]]
    if not ends:
        return 0, 0
    return (min(a for a, _ in ends) if program else 0), max(b for _, b in ends)


def content_profile(rows: list[dict], alert: dict, bucket_ms: int,
                    lo_ms: int, hi_ms: int) -> dict:
    """Per position bucket in [lo_ms, hi_ms) of the alert's video (``rows``):
    distinct viewers whose stall started there, and distinct viewers who played
    through it (exposure). Positions are on the alert's timeline: playhead, or
    program time for a live alert. Limited to the alert's rendition when it has one."""
    rendition = alert.get("rendition")
    program = alert.get("timeline") == "program"
    first, last = lo_ms // bucket_ms, (hi_ms - 1) // bucket_ms
    stalled: dict[int, set] = collections.defaultdict(set)
    spans_by_viewer: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for row in rows:
        viewer = row["viewer_id"]
        at = _shift(row, program)
        if at is None:
            continue
        for s in row["stalls"]:
            if s["playhead_ms"] is not None and (rendition is None or s["rendition"] == rendition):
                stalled[(s["playhead_ms"] + at) // bucket_ms].add(viewer)
        for r in row["played"]:
            if rendition is None or r["rendition"] == rendition:
                spans_by_viewer[viewer].append(((r["start_ms"] + at) // bucket_ms,
                                                (r["end_ms"] + at) // bucket_ms))
    diff: dict[int, int] = {}
    for spans in spans_by_viewer.values():
        for a, b in merge_spans(spans):
            add_span(diff, a, b)
    buckets = list(range(first, last + 1))
    exposure = coverage_at(diff, buckets)
    return {"bucket_starts_ms": [b * bucket_ms for b in buckets],
            "stalls": [len(stalled.get(b, ())) for b in buckets],
            "exposure": [exposure[b] for b in buckets]}


def delivery_profile(views: pa.Table, alert: dict, pad_ms: int = 30 * 60_000,
                     top: int = 5) -> dict:
    """Stall starts per wall-clock minute around a delivery alert, split by the
    alert's dimension (its value, the biggest others, and the rest)."""
    dimension, lo, hi = alert["dimension"], alert["start_ts"] - pad_ms, alert["end_ts"] + pad_ms
    first, last = lo // 60_000, hi // 60_000
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    table = views.select([dimension, "stalls", "start_ms", "end_ms"])
    table = table.filter(pc.and_(pc.less_equal(table["start_ms"], hi),
                                 pc.greater_equal(table["end_ms"], lo)))
    for row in table.to_pylist():
        value = "(unknown)" if row[dimension] is None else str(row[dimension])
        for s in row["stalls"]:
            if lo <= s["start_ms"] < hi:
                counts[value][s["start_ms"] // 60_000] += 1
    totals = sorted(counts, key=lambda v: (v != alert["value"], -sum(counts[v].values()), v))
    shown, rest = totals[:top], totals[top:]
    minutes = list(range(first, last + 1))
    series = {v: [counts[v].get(m, 0) for m in minutes] for v in shown}
    if rest:
        series[f"other ({len(rest)})"] = [sum(counts[v].get(m, 0) for v in rest) for m in minutes]
    return {"minutes_ms": [m * 60_000 for m in minutes], "series": series}


def viewer_views(views: pa.Table, viewer_id: str, limit: int = 25) -> list[dict]:
    """The views of one viewer, oldest first, with their stall counts."""
    rows = views.filter(pc.equal(views["viewer_id"], viewer_id)).to_pylist()
    rows.sort(key=lambda r: r["start_ms"])
    return [{"video_id": r["video_id"], "start_ms": r["start_ms"],
             "watch_min": r["watch_ms"] / 60_000, "stalls": r["rebuffer_count"],
             "rebuffer_pct": r["rebuffer_pct"], "cdn": r["cdn"], "asn": r["asn"],
             "stall_positions_s": [s["playhead_ms"] // 1000 for s in r["stalls"]
                                   if s["playhead_ms"] is not None][:12]}
            for r in rows[:limit]]


def dead_letter_examples(output: str, per_reason: int = 3, max_lines: int = 200_000) -> dict[str, list[dict]]:
    """Up to ``per_reason`` example dead letters per reason (read lazily)."""
    examples: dict[str, list[dict]] = collections.defaultdict(list)
    read = 0
    for path in sorted(glob.glob(os.path.join(output, f"{files.DEAD_LETTERS}-*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                read += 1
                if read > max_lines:
                    return dict(examples)
                record = json.loads(line)
                bucket = examples[record["reason"]]
                if len(bucket) < per_reason:
                    bucket.append(record)
    return dict(examples)
