"""Simulate an audience watching a catalogue: one event list per view.

Playback advances one 4-second segment at a time; at each segment the viewer
may stall (background, bad wifi, a broken segment, a CDN outage), pause, seek,
switch rendition or fail. Heartbeats go out every 10 s of wall time while not
paused. The model is documented in docs/generator.md.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import NamedTuple, Optional

from pipeline.generator.scenario import (BROWSERS, CDNS, COUNTRIES, MINUTE, OSES, PLAYERS, RENDITIONS, SEGMENT_MS, Scenario, Video)

HEARTBEAT_MS = 10_000
ASNS = tuple(f"AS{n}" for n in (7922, 3320, 2856, 8151, 4134, 9299, 16509, 12389, 3215, 6830,
                                701, 7018, 5089, 3269, 2497, 4766))


@dataclasses.dataclass
class Viewer:
    viewer_id: str
    cdn: str
    asn: str
    country: str
    browser: str
    os: str
    device: str
    player: tuple[str, str]
    max_rendition: int                 # index into RENDITIONS
    bad_wifi: bool
    clock_skew_ms: int = 0


@dataclasses.dataclass
class ViewTrace:
    """One simulated view: fields common to every event, and the events."""

    view_id: str
    flavour: str                       # "sdk" (rebufferstart/end, batched) or "html5"
    common: dict
    events: list[dict]
    viewer: Viewer


class LiveJoin(NamedTuple):
    """A view of a live event (its playhead starts at its own origin): how far
    behind the live edge it starts playing, and when the viewer leaves."""

    latency_ms: int
    until_ms: int


# What each player reports of a live position: hls.js (playingDate) and
# Shaka (getPlayheadTimeAsDate) the program time, dash.js
# (getCurrentLiveLatency) the latency; the native player neither.
_PROGRAM_TIME_PLAYERS = ("hls.js", "shaka")
_LATENCY_PLAYERS = ("dash.js",)
# A player measures latency from the live edge it sees: a segment is published
# once complete, so the edge trails the program clock by a segment, and the
# reported latency is that much short of (wall clock - program time).
PACKAGING_DELAY_MS = SEGMENT_MS


def _pick(rng: random.Random, weighted) -> str:
    names, weights = zip(*weighted)
    return rng.choices(names, weights)[0]


def make_viewers(rng: random.Random, s: Scenario) -> list[Viewer]:
    viewers = []
    for i in range(s.viewers):
        browser = _pick(rng, BROWSERS)
        os_name = rng.choice(OSES[browser])
        device = "mobile" if os_name in ("Android", "iOS") else rng.choice(("desktop", "desktop", "tv"))
        skew = 0
        if s.mess and rng.random() < s.skewed_viewer_rate:
            skew = rng.choice((-1, 1)) * int(rng.choice((5 * MINUTE, 2 * 3600_000, 3 * 86_400_000)))
        viewers.append(Viewer(
            viewer_id=f"u{i:05d}", cdn=_pick(rng, CDNS), asn=rng.choice(ASNS),
            country=_pick(rng, COUNTRIES), browser=browser, os=os_name, device=device,
            player=rng.choice(PLAYERS), max_rendition=rng.choice((2, 3, 3, 4, 4, 4)),
            bad_wifi=rng.random() < s.bad_wifi_share, clock_skew_ms=skew))
    return viewers


class _Player:
    """Emits the events of one view while tracking wall clock and playhead."""

    def __init__(self, rng: random.Random, s: Scenario, viewer: Viewer, video: Video,
                 view_id: str, flavour: str, start_ms: int) -> None:
        self.rng, self.s, self.viewer, self.video = rng, s, viewer, video
        self.flavour = flavour
        self.t = start_ms
        self.ph = 0
        self.events: list[dict] = []
        self.seq = 0
        self.view_id = view_id
        self.rendition = min(viewer.max_rendition, rng.choice((2, 3, 4, 4)))
        self.last_hb = start_ms
        self.stopped = False
        self.program_offset: Optional[int] = None   # live event: program time - playhead

    def position(self) -> int:
        """Where the media is: program time on a live event, else the playhead."""
        return self.ph + (self.program_offset or 0)

    def emit(self, event: str, **fields) -> None:
        record = {"event": event, "ts": self.t + self.viewer.clock_skew_ms, "seq": self.seq}
        if event not in ("viewstart", "playerready", "viewend"):
            record["playhead_ms"] = self.ph
            if self.program_offset is not None:
                if self.viewer.player[0] in _PROGRAM_TIME_PLAYERS:
                    record["program_time_ms"] = self.position()
                elif self.viewer.player[0] in _LATENCY_PLAYERS:
                    record["live_latency_ms"] = self.t - PACKAGING_DELAY_MS - self.position()
        if self.flavour == "sdk":
            record["event_id"] = f"{self.view_id}-{self.seq}"
        name, bitrate = RENDITIONS[self.rendition]
        if event in ("playing", "renditionchange", "heartbeat", "timeupdate"):
            record["rendition"], record["bitrate_bps"] = name, bitrate
        record.update(fields)
        self.events.append(record)
        self.seq += 1

    def wait(self, ms: int) -> None:
        self.t += max(0, int(ms))

    def heartbeat_due(self) -> None:
        while self.t - self.last_hb >= HEARTBEAT_MS:
            self.last_hb += HEARTBEAT_MS
            self.emit("heartbeat" if self.flavour == "sdk" else "timeupdate")

    def stall(self, duration_ms: int, exit_probability: float = 0.0) -> None:
        """Rebuffer for duration_ms (heartbeats keep coming), maybe give up."""
        self.emit("rebufferstart" if self.flavour == "sdk" else "waiting")
        end = self.t + duration_ms
        gives_up = self.rng.random() < exit_probability
        if gives_up:
            end = self.t + int(duration_ms * self.rng.uniform(0.3, 1.0))
        while self.t + HEARTBEAT_MS <= end:
            self.wait(HEARTBEAT_MS)
            self.last_hb = self.t
            self.emit("heartbeat" if self.flavour == "sdk" else "timeupdate")
        self.t = end
        if gives_up:
            self.stopped = True
            return
        self.emit("rebufferend" if self.flavour == "sdk" else "playing")

    def seek(self, target_ms: int, latency_ms: int) -> None:
        self.ph = max(0, min(target_ms, self.video.duration_ms - SEGMENT_MS))
        self.emit("seeking")
        if self.flavour == "html5":
            self.wait(30)
            self.emit("waiting")            # a seek wait: never a rebuffer
        self.wait(latency_ms)
        self.emit("seeked")
        self.wait(20)
        self.emit("playing")

    def switch(self, step: int) -> None:
        new = max(0, min(self.viewer.max_rendition, self.rendition + step))
        if new != self.rendition:
            self.rendition = new
            self.emit("renditionchange")


def simulate_view(rng: random.Random, s: Scenario, viewer: Viewer, video: Video, view_id: str,
                  start_ms: int, start_ph: int = 0, force_seek: Optional[int] = None,
                  live: Optional[LiveJoin] = None) -> ViewTrace:
    flavour = "sdk" if rng.random() < 0.5 else "html5"
    p = _Player(rng, s, viewer, video, view_id, flavour, start_ms)
    p.emit("viewstart")
    p.wait(rng.randint(50, 400))
    p.emit("playerready")
    p.ph = start_ph
    p.emit("play")
    if rng.random() < s.ebvs_rate:                      # gives up before the first frame
        p.wait(200)
        p.emit("waiting")
        p.wait(rng.uniform(1_500, 15_000))
        p.emit("viewend")
        return _trace(p)
    if rng.random() < s.startup_failure_rate:
        p.wait(rng.uniform(300, 4_000))
        p.emit("error", error_code="MEDIA_ERR_SRC_NOT_SUPPORTED",
               error_message="no supported source", fatal=True)
        p.emit("viewend")
        return _trace(p)
    if flavour == "html5" and rng.random() < 0.6:
        p.wait(100)
        p.emit("waiting")                               # startup wait: not a rebuffer
    startup = rng.lognormvariate(math.log(1_100), 0.45) * (2.0 if viewer.bad_wifi else 1.0)
    p.wait(startup)
    p.last_hb = p.t
    if live is not None:
        p.program_offset = p.t - live.latency_ms - p.ph
    p.emit("playing")
    _play(p, rng, s, viewer, video, force_seek, live)
    return _trace(p, live)


def _play(p: _Player, rng: random.Random, s: Scenario, viewer: Viewer, video: Video,
          force_seek: Optional[int], live: Optional[LiveJoin]) -> None:
    if live is not None:
        target_end = p.ph + max(0, live.until_ms - p.t)
    elif video.live or rng.random() < 0.4:
        target_end = video.duration_ms
    else:
        target_end = int(video.duration_ms * rng.uniform(0.05, 1.0))
    stall_per_min = s.bad_wifi_stall_per_min if viewer.bad_wifi else s.base_stall_per_min
    p_stall = stall_per_min * SEGMENT_MS / MINUTE
    p_fail = s.midplay_failure_per_min * SEGMENT_MS / MINUTE
    faults = [f for f in s.content_faults if f.video_id == video.video_id]
    seek_at = rng.uniform(10_000, 120_000) if force_seek is not None else None
    while p.ph < target_end and not p.stopped:
        if seek_at is not None and p.ph >= seek_at:
            p.seek(force_seek, rng.lognormvariate(math.log(1_800), 0.4))
            seek_at = None
            continue
        for f in faults:
            name = RENDITIONS[p.rendition][0]
            if (f.start_ms <= p.position() < f.end_ms and (f.rendition in (None, name))
                    and (f.broken_from_ms is None or p.t >= f.broken_from_ms)
                    and rng.random() < f.probability):
                p.ph = rng.randint(f.start_ms, f.end_ms - 1) - (p.program_offset or 0)
                p.stall(int(rng.lognormvariate(math.log(6_000), 0.5)), exit_probability=0.2)
        if p.stopped:
            break
        for o in s.outages:
            if viewer.cdn == o.cdn and o.start_ms <= p.t < o.end_ms and rng.random() < o.stall_probability:
                p.stall(int(rng.uniform(4_000, 20_000)), exit_probability=0.1)
        if not p.stopped and rng.random() < p_stall:
            # Stall part-way into the segment, then play the rest of it.
            offset = rng.randint(0, SEGMENT_MS - 1)
            p.ph += offset
            p.wait(offset)
            p.stall(int(rng.lognormvariate(math.log(2_500), 0.6)))
            p.ph -= offset
            p.t -= offset
        if p.stopped:
            break
        if rng.random() < p_fail:
            p.emit("error", error_code="NETWORK_ERROR", error_message="segment failed", fatal=True)
            p.emit("viewend")
            return
        _maybe_interact(p, rng, s, video)
        p.ph += SEGMENT_MS
        p.wait(SEGMENT_MS)
        p.heartbeat_due()
    if p.stopped:
        if rng.random() < 0.9:
            p.emit("viewend")                           # else the final beacon is lost
        return
    if live is None and p.ph >= video.duration_ms:
        p.ph = video.duration_ms
        p.emit("ended")
    if rng.random() < 0.3:
        p.emit("pause")
    if rng.random() < 0.9:
        p.emit("viewend")


def _maybe_interact(p: _Player, rng: random.Random, s: Scenario, video: Video) -> None:
    roll = rng.random()
    if roll < 0.002 and not video.live:
        p.emit("pause")
        long = rng.random() < 0.05 and s.long_pauses
        p.wait(rng.uniform(10 * MINUTE, 40 * MINUTE) if long else rng.lognormvariate(math.log(20_000), 0.8))
        p.emit("play")
        p.wait(rng.uniform(50, 300))
        p.last_hb = p.t
        p.emit("playing")
    elif roll < 0.003 and not video.live:
        p.seek(rng.randint(0, video.duration_ms), rng.lognormvariate(math.log(600), 0.5))
    elif roll < 0.012:
        p.switch(rng.choice((-1, 1)))
    elif roll < 0.012 + s.business_error_rate / 100:
        p.emit("error", error_code="CONCURRENT_STREAMS", error_message="too many streams",
               fatal=False, business_error=True)


def _trace(p: _Player, live: Optional[LiveJoin] = None) -> ViewTrace:
    v = p.viewer
    common = {"view_id": p.view_id, "video_id": p.video.video_id, "viewer_id": v.viewer_id,
              "cdn": v.cdn, "asn": v.asn, "country": v.country, "browser": v.browser,
              "os": v.os, "device": v.device, "player_name": v.player[0],
              "player_version": v.player[1],
              "stream_type": "live" if p.video.live else "on-demand",
              "video_duration_ms": None if live else p.video.duration_ms}
    return ViewTrace(p.view_id, p.flavour, common, p.events, v)
