"""Turn a scenario into NDJSON beacon files plus truth.json (what should be found)."""

from __future__ import annotations

import datetime
import json
import os
import random
import zlib
from typing import NamedTuple, Optional

from pipeline.generator import simulate
from pipeline.generator.scenario import MINUTE, ORIGIN_MS, Scenario, Video
from pipeline.generator.simulate import ViewTrace

BATCH_MS = 10_000          # SDK-style beacons batch 10 s of events (like mux-embed)
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def _iso(ms: int) -> str:
    stamp = _EPOCH + datetime.timedelta(milliseconds=ms)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


class _Planned(NamedTuple):
    """One view to simulate."""

    viewer: simulate.Viewer
    video: Video
    start_ms: int
    start_ph: int = 0
    seek: Optional[int] = None                 # a forced seek's target playhead
    live: Optional[simulate.LiveJoin] = None   # a view of a live event


class _Plan:
    """Which views happen (``_Planned``)."""

    def __init__(self, rng: random.Random, s: Scenario) -> None:
        self.viewers = simulate.make_viewers(rng, s)
        videos = {v.video_id: v for v in s.videos}
        regular = [v for v in s.videos if v.weight > 0]
        weights = [v.weight for v in regular]
        self.views: list[_Planned] = []
        origin = s.origin_ms
        end = origin + (s.join_ms if s.join_ms is not None else s.span_ms - 10 * MINUTE)
        normal = [v for v in self.viewers if not v.bad_wifi]
        for viewer in self.viewers:
            count = 1 + _poisson(rng, 0.8)
            for _ in range(count):
                video = rng.choices(regular, weights)[0]
                seek = None
                if s.highlight and video.video_id == s.highlight[0] and rng.random() < s.highlight_share:
                    seek = s.highlight[1]
                self.views.append(_Planned(viewer, video, rng.randint(origin, end), 0, seek))
        if s.premiere_video:
            premiere = videos[s.premiere_video]
            for viewer in rng.sample(normal, int(len(normal) * s.premiere_share)):
                join = s.premiere_start_ms + rng.randint(0, 3 * MINUTE)
                self.views.append(_Planned(viewer, premiere, join, join - s.premiere_start_ms))
        for event in s.live_events:
            video = videos[event.video_id]
            for viewer in rng.sample(normal, int(len(normal) * event.share)):
                join = rng.randint(event.start_ms, event.start_ms + (event.end_ms - event.start_ms) * 5 // 9)
                until = event.end_ms if rng.random() < 0.5 else min(
                    event.end_ms, join + int(rng.expovariate(1 / (15 * MINUTE))))
                origin_ph = rng.randint(0, 7_200) * 1_000      # each player's own origin
                live = simulate.LiveJoin(rng.randint(6_000, 30_000), until)
                self.views.append(_Planned(viewer, video, join, origin_ph, live=live))
        if s.tiny_title:
            for viewer in rng.sample(normal, 3):
                self.views.append(_Planned(viewer, videos[s.tiny_title], rng.randint(origin, end)))
        self.bad_wifi_handful: list[str] = []
        if s.bad_wifi_video:
            for viewer in rng.sample(normal, s.bad_wifi_handful):
                viewer.bad_wifi = True
                self.bad_wifi_handful.append(viewer.viewer_id)
                for _ in range(2):
                    self.views.append(_Planned(viewer, videos[s.bad_wifi_video],
                                               rng.randint(origin, end)))


def _poisson(rng: random.Random, lam: float) -> int:
    k, p, threshold = 0, 1.0, pow(2.718281828459045, -lam)
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


def _stamped(message, received_ms: int) -> bytes:
    """The line a collector writes: the message with its receive time (epoch ms)."""
    if isinstance(message, list):
        return _dumps([{**m, "received_ms": received_ms} for m in message])
    return _dumps({**message, "received_ms": received_ms})


def _lines_of(trace: ViewTrace, rng: random.Random) -> list[tuple[int, object, int]]:
    """(server send ms, message, records) for one view, in its client's format."""
    batches: list[list[dict]] = []
    for event in trace.events:
        if batches and event["ts"] - batches[-1][0]["ts"] < BATCH_MS:
            batches[-1].append(event)
        else:
            batches.append([event])
    skew = trace.viewer.clock_skew_ms
    out = []
    if trace.flavour == "sdk":
        for batch in batches:
            out.append((batch[-1]["ts"] - skew, {**trace.common, "events": batch}, len(batch)))
        return out
    iso = rng.random() < 0.1
    as_arrays = rng.random() < 0.4
    full = [{**trace.common, **e, **({"ts": _iso(e["ts"])} if iso else {})} for e in trace.events]
    if as_arrays:
        i = 0
        for batch in batches:
            chunk = full[i:i + len(batch)]
            i += len(batch)
            out.append((batch[-1]["ts"] - skew, chunk, len(chunk)))
        return out
    return [(e["ts"] - skew, f, 1) for e, f in zip(trace.events, full)]


# Malformed records: (expected dead-letter reason, how to make one from a real event).
def _malformed(rng: random.Random, event: dict) -> tuple[str, bytes]:
    kind = rng.randrange(9)
    if kind == 0:
        text = _dumps(event)
        return "invalid_json", text[: max(1, len(text) // 2)]
    if kind == 1:
        return "not_utf8", b'{"view_id": "\xff\xfe", "event": "play"}'
    if kind == 2:
        return "unknown_event", _dumps({**event, "event": "buffering"})
    if kind == 3:
        return "missing_field:view_id", _dumps({k: v for k, v in event.items() if k != "view_id"})
    if kind == 4:
        return "wrong_type:playhead_ms", _dumps({**event, "event": "heartbeat", "playhead_ms": "12s"})
    if kind == 5:
        ts = event["ts"] if isinstance(event["ts"], int) else ORIGIN_MS
        return "out_of_range:ts", _dumps({**event, "ts": ts // 1000})
    if kind == 6:
        return "not_an_object", rng.choice((b"42", b'"hello"', b"null", b"true"))
    if kind == 7:
        return "empty_batch", rng.choice((b"[]", b'{"view_id": "x", "events": []}'))
    return "missing_field:ts", _dumps({k: v for k, v in event.items() if k != "ts"})


class Message(NamedTuple):
    """One message as a player sends it, and when the collector receives it."""

    arrival_ms: int
    shard: int            # file it goes to (a hash of the view)
    key: str              # view_id: the partition key that keeps a view in order
    body: object          # an event dict, a list of them, or raw bytes (malformed)
    stamp_ms: Optional[int] = None   # a duplicate repeats the original's bytes and stamp

    def payload(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else _dumps(self.body)

    def line(self) -> bytes:
        """As a collector writes it to a file: stamped with its receive time."""
        if isinstance(self.body, bytes):
            return self.body
        return _stamped(self.body, self.stamp_ms or self.arrival_ms)


def generate(s: Scenario, seed: int, out_dir: str) -> dict:
    """Write ``out_dir/beacons-*.ndjson`` and ``out_dir/truth.json``; return the truth."""
    messages, truth = simulate_messages(s, seed)
    _write(out_dir, s.files, [(m.arrival_ms, m.shard, m.line()) for m in messages])
    with open(os.path.join(out_dir, "truth.json"), "w", encoding="utf-8") as f:
        json.dump(truth, f, indent=2, sort_keys=True)
    return truth


def simulate_messages(s: Scenario, seed: int) -> tuple[list[Message], dict]:
    """Every message of the workload (in no particular order) and its truth."""
    rng = random.Random(seed)
    plan = _Plan(rng, s)
    lines: list[Message] = []
    stats = {"views": 0, "events": 0, "duplicate_events": 0, "records": 0, "lines": 0}
    dead: dict[str, int] = {}
    sample_events: list[dict] = []
    for index, v in enumerate(plan.views):
        view_rng = random.Random(f"{seed}:{index}")
        trace = simulate.simulate_view(view_rng, s, v.viewer, v.video, f"w{seed}-{index:06d}",
                                       v.start_ms, v.start_ph, v.seek, v.live)
        stats["views"] += 1
        stats["events"] += len(trace.events)
        shard = zlib.crc32(trace.view_id.encode()) % s.files
        if len(sample_events) < 200 and trace.flavour == "html5":
            sample_events.append({**trace.common, **trace.events[len(trace.events) // 2]})
        for arrival, message, records in _lines_of(trace, view_rng):
            arrival += view_rng.randint(50, 2_000)
            if s.mess and view_rng.random() < s.reorder_rate:
                arrival += view_rng.randint(30_000, 270_000)
            lines.append(Message(arrival, shard, trace.view_id, message))
            stats["records"] += records
            if s.mess and view_rng.random() < s.duplicate_rate:
                lines.append(Message(arrival + view_rng.randint(1_000, 60_000), shard,
                                     trace.view_id, message, arrival))
                stats["records"] += records
                stats["duplicate_events"] += records
    if s.mess and sample_events:
        for _ in range(max(9, int(len(lines) * s.malformed_rate))):
            reason, line = _malformed(rng, rng.choice(sample_events))
            arrival = rng.randint(s.origin_ms, s.origin_ms + s.span_ms)
            lines.append(Message(arrival, rng.randrange(s.files), f"malformed-{len(lines)}", line))
            dead[reason] = dead.get(reason, 0) + 1
            stats["records"] += 1
    stats["lines"] = len(lines)
    return lines, _truth(s, seed, plan, stats, dead)


def _write(out_dir: str, files: int, lines: list[tuple[int, int, bytes]]) -> None:
    os.makedirs(out_dir, exist_ok=True)
    lines.sort(key=lambda x: (x[0], x[1]))
    handles = [open(os.path.join(out_dir, f"beacons-{i:05d}-of-{files:05d}.ndjson"), "wb")
               for i in range(files)]
    try:
        for _, shard, line in lines:
            handles[shard].write(line + b"\n")
    finally:
        for h in handles:
            h.close()


def _truth(s: Scenario, seed: int, plan: _Plan, stats: dict, dead: dict[str, int]) -> dict:
    faults: list[dict] = []
    for f in s.content_faults:
        live = any(e.video_id == f.video_id for e in s.live_events)
        faults.append({"kind": f.kind if f.expect == "content" else "tiny_title",
                       "expect": f.expect, "video_id": f.video_id, "rendition": f.rendition,
                       "start_ms": f.start_ms, "end_ms": f.end_ms, "probability": f.probability,
                       "broken_from_ms": f.broken_from_ms,
                       "timeline": "program" if live else "playhead"})
    for o in s.outages:
        faults.append({"kind": "cdn_outage", "expect": "delivery", "dimension": "cdn",
                       "value": o.cdn, "start_ts": o.start_ms, "end_ts": o.end_ms})
    for e in s.live_events:
        if not any(f.video_id == e.video_id for f in s.content_faults):
            faults.append({"kind": "live_event_during_outage" if s.outages else "live_event",
                           "expect": "no_content", "video_id": e.video_id,
                           "start_ts": e.start_ms, "end_ts": e.end_ms})
    if s.premiere_video:
        faults.append({"kind": "premiere_during_outage", "expect": "no_content",
                       "video_id": s.premiere_video, "start_ts": s.premiere_start_ms})
    if s.highlight:
        faults.append({"kind": "seek_highlight", "expect": "no_content",
                       "video_id": s.highlight[0], "start_ms": s.highlight[1] - 10_000,
                       "end_ms": s.highlight[1] + 10_000})
    if s.bad_wifi_video:
        faults.append({"kind": "bad_wifi_handful", "expect": "no_content",
                       "video_id": s.bad_wifi_video, "viewer_ids": plan.bad_wifi_handful})
    bad = sorted(v.viewer_id for v in plan.viewers if v.bad_wifi)
    faults.append({"kind": "bad_wifi_viewers", "expect": "viewer", "viewer_ids": bad})
    skewed = sorted(v.viewer_id for v in plan.viewers if v.clock_skew_ms)
    return {
        "scenario": s.name, "seed": seed, "viewers": s.viewers,
        "views": stats["views"], "lines": stats["lines"],
        "input_records": stats["records"],
        "parsed_events": stats["events"] + stats["duplicate_events"],
        "duplicate_events": stats["duplicate_events"],
        "dead_letters": sum(dead.values()),
        "dead_letters_by_reason": dict(sorted(dead.items())),
        "skewed_viewers": skewed,
        "faults": faults,
    }

