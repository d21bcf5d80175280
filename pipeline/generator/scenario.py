"""Scenarios: the catalogue, audience and injected faults of a generated workload."""

from __future__ import annotations

import dataclasses
from typing import Optional

# 2026-11-01T18:00:00Z: a fixed origin keeps every seed reproducible.
ORIGIN_MS = 1_793_556_000_000
MINUTE = 60_000
SEGMENT_MS = 4_000

RENDITIONS = (("240p", 400_000), ("360p", 800_000), ("480p", 1_400_000),
              ("720p", 2_800_000), ("1080p", 5_000_000))
CDNS = (("cdn-a", 0.45), ("cdn-b", 0.35), ("cdn-c", 0.20))
COUNTRIES = (("US", 0.4), ("GB", 0.12), ("DE", 0.12), ("BR", 0.1), ("IN", 0.14), ("JP", 0.12))
BROWSERS = (("Chrome", 0.6), ("Safari", 0.22), ("Firefox", 0.1), ("Edge", 0.08))
OSES = {"Chrome": ("Windows", "macOS", "Android"), "Safari": ("macOS", "iOS"),
        "Firefox": ("Windows", "Linux"), "Edge": ("Windows",)}
PLAYERS = (("hls.js", "1.7.4"), ("dash.js", "5.2.1"), ("shaka", "5.2.12"), ("native", "18.1"))


@dataclasses.dataclass(frozen=True)
class Video:
    video_id: str
    duration_ms: int
    weight: float                      # popularity share among regular views
    live: bool = False


@dataclasses.dataclass(frozen=True)
class ContentFault:
    """A broken or slow segment: viewers reaching it stall with probability p."""

    video_id: str
    start_ms: int
    end_ms: int
    rendition: Optional[str]
    probability: float
    expect: str = "content"            # or "no_content" for the tiny title
    broken_from_ms: Optional[int] = None   # broken only from this (wall) time on; None: always
    # On a live event, start_ms/end_ms are program time (the stream's wall
    # clock, epoch ms): a packager or encoder fault.
    kind: str = "content_fault"


@dataclasses.dataclass(frozen=True)
class LiveEvent:
    """A live stream from start_ms to end_ms (wall clock = program time at the
    encoder). A share of the audience joins during it, each viewer 6-30 s
    behind the live edge with their own playhead origin, and watches until it
    ends or they leave; a stall puts them further behind."""

    video_id: str
    start_ms: int
    end_ms: int
    share: float


@dataclasses.dataclass(frozen=True)
class CdnOutage:
    cdn: str
    start_ms: int                      # wall clock
    end_ms: int
    stall_probability: float           # per 4 s segment while inside the window


@dataclasses.dataclass(frozen=True)
class Scenario:
    """Everything that shapes a workload; the seed picks one realisation."""

    name: str
    viewers: int
    span_ms: int
    videos: tuple[Video, ...]
    content_faults: tuple[ContentFault, ...]
    outages: tuple[CdnOutage, ...]
    premiere_video: Optional[str]
    premiere_start_ms: int
    premiere_share: float              # of viewers who join the premiere
    highlight: Optional[tuple[str, int]]   # (video, playhead) many viewers seek to
    highlight_share: float
    tiny_title: Optional[str]          # watched by exactly 3 viewers
    bad_wifi_share: float
    bad_wifi_video: Optional[str]      # a handful of bad-wifi viewers all watch it
    bad_wifi_handful: int
    base_stall_per_min: float
    bad_wifi_stall_per_min: float
    ebvs_rate: float
    startup_failure_rate: float
    midplay_failure_per_min: float
    business_error_rate: float
    mess: bool
    duplicate_rate: float = 0.01
    reorder_rate: float = 0.02
    skewed_viewer_rate: float = 0.01
    malformed_rate: float = 0.002
    files: int = 4
    origin_ms: int = ORIGIN_MS         # wall-clock start of the workload
    join_ms: Optional[int] = None      # views start within this of the origin (default: span - 10 min)
    long_pauses: bool = True           # a few pauses last 10-40 min (off for the live generator)
    live_events: tuple[LiveEvent, ...] = ()


def _catalogue() -> tuple[Video, ...]:
    fixed = (
        Video("v000", 40 * MINUTE, 0.16),
        Video("v001", 25 * MINUTE, 0.12),
        Video("v002", 30 * MINUTE, 0.10),
        Video("v003", 20 * MINUTE, 0.08),
        Video("v004", 12 * MINUTE, 0.06),
        Video("v005", 8 * MINUTE, 0.05),
    )
    tail = tuple(Video(f"v{i:03d}", (3 + (i * 7) % 50) * MINUTE, 0.43 / 24) for i in range(6, 30))
    return fixed + tail + (Video("premiere", 45 * MINUTE, 0.0, live=True),
                           Video("rare-title", 10 * MINUTE, 0.0))


def build(name: str, viewers: Optional[int] = None) -> Scenario:
    """A named scenario: ``demo`` (faults, hard negatives and mess), ``clean``
    (the same without mess), ``small`` (a quick one for tests), or the live
    events ``live-fault`` and ``live-outage`` (``live_event``)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    default_viewers, mess = SCENARIOS[name]
    if name in LIVE_SCENARIOS:
        return live_event(name, viewers if viewers is not None else default_viewers)
    premiere_start = ORIGIN_MS + 40 * MINUTE
    return Scenario(
        name=name,
        viewers=viewers if viewers is not None else default_viewers,
        span_ms=120 * MINUTE,
        videos=_catalogue(),
        content_faults=(
            ContentFault("v000", 12 * MINUTE, 12 * MINUTE + SEGMENT_MS, None, 0.55),
            ContentFault("v001", 7 * MINUTE + 20_000, 7 * MINUTE + 24_000, "1080p", 0.8),
            ContentFault("v003", 96_000, 100_000, None, 0.5),
            ContentFault("rare-title", 3 * MINUTE, 3 * MINUTE + SEGMENT_MS, None, 1.0,
                         expect="no_content"),
        ),
        outages=(CdnOutage("cdn-b", premiere_start + 10 * MINUTE,
                           premiere_start + 18 * MINUTE, 0.3),),
        premiere_video="premiere",
        premiere_start_ms=premiere_start,
        premiere_share=0.12,
        highlight=("v002", 17 * MINUTE + 40_000),
        highlight_share=0.45,
        tiny_title="rare-title",
        bad_wifi_share=0.015,
        bad_wifi_video="v004",
        bad_wifi_handful=5,
        base_stall_per_min=0.02,
        bad_wifi_stall_per_min=0.8,
        ebvs_rate=0.03,
        startup_failure_rate=0.008,
        midplay_failure_per_min=0.0005,
        business_error_rate=0.004,
        mess=mess,
    )


def live_event(name: str, viewers: int) -> Scenario:
    """A 45-minute live event (``live-news``) joined by 80 % of the audience over
    its first 25 minutes, three CDNs, on-demand traffic around it. Scenario
    ``live-fault``: at 20:00 into the event the packager breaks for 8 s of
    program time, and 70 % of those watching stall when they reach it, each at
    their own wall-clock time and playhead. ``live-outage``, the hard negative:
    no packager fault, but cdn-b fails for 4 minutes at the same point."""
    base = build("small", viewers)
    start = ORIGIN_MS + 5 * MINUTE
    event = LiveEvent("live-news", start, start + 45 * MINUTE, 0.8)
    fault_at = start + 20 * MINUTE
    faults, outages = (), ()
    if name == "live-fault":
        faults = (ContentFault("live-news", fault_at, fault_at + 2 * SEGMENT_MS, None, 0.7,
                               kind="packager_fault"),)
    else:
        outages = (CdnOutage("cdn-b", fault_at, fault_at + 4 * MINUTE, 0.3),)
    return dataclasses.replace(
        base, name=name, span_ms=60 * MINUTE, join_ms=50 * MINUTE,
        videos=_catalogue()[:30] + (Video(event.video_id, event.end_ms - event.start_ms, 0.0,
                                          live=True),),
        live_events=(event,), content_faults=faults, outages=outages, premiere_video=None,
        highlight=None, tiny_title=None, bad_wifi_video=None)


def live(origin_ms: int, viewers: int, join_ms: int, outage: bool = False) -> Scenario:
    """A short live audience for the stream generator: ``viewers`` join within
    ``join_ms`` of ``origin_ms`` (now) and watch 2-5 minute clips; a broken
    segment of clip-a at 1:00-1:04 stalls 60 % of those who reach it, so a
    content alert is due about a minute after the first viewers start.
    Beacons are not held back for minutes (no reordering) and pauses are
    short: the stream ends a few minutes after the last viewer joins.
    ``outage``: cdn-b also fails for 2 minutes from a minute after the last
    viewer joined (after most clip-a stalls)."""
    base = build("small", viewers)
    outages = ()
    if outage:
        start = origin_ms + join_ms + 60_000
        outages = (CdnOutage("cdn-b", start, start + 2 * MINUTE, 0.5),)
    return dataclasses.replace(
        base, name="live", span_ms=join_ms + 4 * MINUTE, origin_ms=origin_ms, join_ms=join_ms,
        reorder_rate=0.0, long_pauses=False,
        videos=(Video("clip-a", 2 * MINUTE, 0.6), Video("clip-b", 90_000, 0.25),
                Video("clip-c", 150_000, 0.15)),
        content_faults=(ContentFault("clip-a", MINUTE, MINUTE + SEGMENT_MS, None, 0.6),),
        outages=outages, premiere_video=None, highlight=None, tiny_title=None,
        bad_wifi_video=None, bad_wifi_share=0.01)


def soak(origin_ms: int, viewers: int, join_ms: int, faults: int) -> Scenario:
    """The live audience, joining for ``join_ms``, plus ``faults`` titles whose
    segment at 1:00-1:04 breaks at evenly spaced times during the run (an
    origin or cache going bad), so alert latency is sampled again and again
    under a steady load (bench/stream.py)."""
    base = live(origin_ms, viewers, join_ms)
    breaks = [origin_ms + join_ms * (i + 1) // (faults + 1) for i in range(faults)]
    titles = tuple(Video(f"soak-{i}", 2 * MINUTE, 0.4 / faults) for i in range(faults))
    return dataclasses.replace(
        base, name="soak",
        videos=(Video("clip-a", 2 * MINUTE, 0.35), Video("clip-b", 90_000, 0.15),
                Video("clip-c", 150_000, 0.1)) + titles,
        content_faults=tuple(ContentFault(t.video_id, MINUTE, MINUTE + SEGMENT_MS, None, 0.6,
                                          broken_from_ms=at) for t, at in zip(titles, breaks)))


# name -> (default viewers, mess)
SCENARIOS = {"demo": (1500, True), "clean": (1500, False), "small": (500, True),
             "live-fault": (600, True), "live-outage": (600, True)}
LIVE_SCENARIOS = ("live-fault", "live-outage")
