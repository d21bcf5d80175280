"""Typed, frozen event model shared by every stallwatch transform.

Times are epoch milliseconds (``*_ms``) unless a name says otherwise; playhead
positions are milliseconds from the start of the media (``playhead_ms``).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Optional


class EventKind(str, enum.Enum):
    """The beacon v1 event vocabulary (see docs/beacons.md)."""

    VIEWSTART = "viewstart"
    PLAYERREADY = "playerready"
    PLAY = "play"
    PLAYING = "playing"
    PAUSE = "pause"
    SEEKING = "seeking"
    SEEKED = "seeked"
    WAITING = "waiting"
    STALLED = "stalled"
    REBUFFERSTART = "rebufferstart"
    REBUFFEREND = "rebufferend"
    TIMEUPDATE = "timeupdate"
    HEARTBEAT = "heartbeat"
    RENDITIONCHANGE = "renditionchange"
    ERROR = "error"
    ENDED = "ended"
    VIEWEND = "viewend"
    # Ads (Mux's names): a break holds one or more ads; ad time is not content
    # watch time and a break does not split the view (docs/beacons.md, "Ads").
    ADBREAKSTART = "adbreakstart"
    ADBREAKEND = "adbreakend"
    ADPLAY = "adplay"
    ADPLAYING = "adplaying"
    ADENDED = "adended"
    ADERROR = "aderror"


# Events that may omit playhead_ms; every other event requires it.
PLAYHEADLESS_KINDS = frozenset(
    {EventKind.VIEWSTART, EventKind.PLAYERREADY, EventKind.VIEWEND,
     EventKind.ADBREAKSTART, EventKind.ADBREAKEND, EventKind.ADPLAY, EventKind.ADPLAYING,
     EventKind.ADENDED, EventKind.ADERROR})
AD_KINDS = frozenset({EventKind.ADBREAKSTART, EventKind.ADBREAKEND, EventKind.ADPLAY,
                      EventKind.ADPLAYING, EventKind.ADENDED, EventKind.ADERROR})


class Cause(str, enum.Enum):
    """What a stall cluster is attributed to."""

    CONTENT = "content"
    DELIVERY = "delivery"
    VIEWER = "viewer"


class AlertStatus(str, enum.Enum):
    """Where an alert is in its life (docs/detection.md, "Streaming")."""

    OPEN = "open"            # the evidence holds and stalls are recent
    CLOSED = "closed"        # no new affected stall for the quiet period
    RETRACTED = "retracted"  # an earlier evaluation's finding no longer holds


@dataclasses.dataclass(frozen=True, slots=True)
class RawRecord:
    """One message as read from a source, before parsing.

    ``source`` names its position (``path:line`` for files, message id or
    shard/sequence for streams) so a dead letter can be traced back.
    """

    payload: bytes
    source: str
    arrival_ms: Optional[int] = None   # when the source received it (publish/arrival time)


@dataclasses.dataclass(frozen=True, slots=True)
class Beacon:
    """A validated player event.

    ``client_ms`` is the beacon's ``ts`` as the device sent it; ``event_ms`` is
    the event time the pipeline uses: ``client_ms`` if it lies within
    [arrival - max_lag, arrival + max_lead] of the arrival time, else the
    arrival time (see docs/beacons.md). Durations inside a view use ``client_ms`` (one device,
    one clock); placement on the shared timeline uses ``event_ms``.
    """

    view_id: str
    video_id: str
    kind: EventKind
    event_ms: int
    client_ms: Optional[int] = None   # None: same as event_ms (no arrival time known)
    playhead_ms: Optional[int] = None
    viewer_id: Optional[str] = None
    event_id: Optional[str] = None
    seq: Optional[int] = None
    rendition: Optional[str] = None
    bitrate_bps: Optional[int] = None
    cdn: Optional[str] = None
    asn: Optional[str] = None
    country: Optional[str] = None
    browser: Optional[str] = None
    os: Optional[str] = None
    device: Optional[str] = None
    player_name: Optional[str] = None
    player_version: Optional[str] = None
    stream_type: Optional[str] = None
    video_duration_ms: Optional[int] = None
    error_code: Optional[str] = None
    error_message: Optional[str] = None
    fatal: Optional[bool] = None
    business_error: bool = False
    source: str = ""
    # Where the event came from: "beacon" (beacon v1 JSON) or "cmcd" (a CMCD v2
    # event report; docs/cmcd.md). CMCD reports may lack playhead_ms: the view
    # state machine estimates it from the play-state timeline.
    protocol: str = "beacon"
    playhead_estimated: bool = False
    reported_startup_ms: Optional[int] = None   # CMCD msd (media start delay)
    reported_stall_ms: Optional[int] = None     # CMCD bsd (starvation durations, summed)
    # Live streams: the media's own wall clock at the playhead (HLS
    # EXT-X-PROGRAM-DATE-TIME, DASH availability time), or how far behind the
    # live edge the player is (hls.js latency, CMCD ltc). docs/detection.md, "Live".
    program_time_ms: Optional[int] = None
    live_latency_ms: Optional[int] = None
    # Ads: the ad an ad event (or a CMCD report inside an ad) is about.
    ad_id: Optional[str] = None
    # CMCD only (docs/cmcd.md): the report's event type ``e``; buffer
    # starvation since the previous report (``bs``) and the player's absolute
    # starvation count and duration (``bsa``, ``bsda``); ``nr``: the content
    # it reports on is not shown (an ad covers it).
    cmcd_event: Optional[str] = None
    starved: bool = False
    reported_stall_count: Optional[int] = None
    reported_stall_total_ms: Optional[int] = None
    not_rendered: bool = False
    # A response-received report (CMCD e=rr): what one media request got.
    response_code: Optional[int] = None
    ttfb_ms: Optional[int] = None
    ttlb_ms: Optional[int] = None
    url: Optional[str] = None
    host: Optional[str] = None


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input record that could not become a Beacon.

    ``reason`` is a stable code (``invalid_json``, ``missing_field:ts``, ...;
    the full list is in docs/beacons.md). ``payload`` is the original input,
    UTF-8 decoded with replacement characters where it was not valid UTF-8.
    """

    stage: str
    reason: str
    payload: str
    detail: str
    source: str


@dataclasses.dataclass(frozen=True, slots=True)
class Stall:
    """One rebuffering episode inside a view."""

    start_ms: int          # wall clock (client) when the stall began
    duration_ms: int
    playhead_ms: Optional[int]   # media position where playback stopped; None: unknown
    rendition: Optional[str]
    bitrate_bps: Optional[int]
    playhead_estimated: bool = False   # reconstructed from the play-state timeline (CMCD without pt)
    # The stall lies within playhead_ms ± this (a stall reported only by a
    # CMCD interval report: anywhere the view played between two reports).
    playhead_uncertainty_ms: int = 0
    video_id: Optional[str] = None     # an ad's id: the stall happened during that ad


@dataclasses.dataclass(frozen=True, slots=True)
class PlayedRange:
    """A playhead interval [start_ms, end_ms] a view played through."""

    start_ms: int
    end_ms: int
    rendition: Optional[str]
    video_id: Optional[str] = None     # an ad's id: positions within that ad


@dataclasses.dataclass(frozen=True, slots=True)
class View:
    """One playback attempt with its QoE metrics (Mux Data semantics).

    See docs/metrics.md for the definition of every field.
    """

    view_key: str                 # view_id@first client ms: unique per view
    view_id: str
    video_id: str
    viewer_id: str
    start_ms: int
    end_ms: int
    events: int
    duplicate_events: int
    watch_ms: int
    playing_ms: int
    play_requested: bool
    startup_ms: Optional[int]
    exited_before_start: bool
    playback_failure: bool
    startup_failure: bool
    business_error: bool
    error_code: Optional[str]
    rebuffer_count: int
    rebuffer_ms: int
    seek_count: int
    seek_ms: int
    max_playhead_ms: int
    avg_bitrate_bps: Optional[float]
    max_bitrate_bps: Optional[int]
    upshifts: int
    downshifts: int
    force_ended: bool             # cut after max_stall_s of continuous rebuffering
    stalls: tuple[Stall, ...]
    played: tuple[PlayedRange, ...]
    cdn: Optional[str] = None
    asn: Optional[str] = None
    country: Optional[str] = None
    browser: Optional[str] = None
    os: Optional[str] = None
    device: Optional[str] = None
    player_name: Optional[str] = None
    player_version: Optional[str] = None
    rendition: Optional[str] = None   # the rendition played longest
    stream_type: Optional[str] = None
    video_duration_ms: Optional[int] = None
    protocol: str = "beacon"          # "beacon" or "cmcd": what the view was computed from
    reported_startup_ms: Optional[int] = None   # the player's own figures (CMCD msd, sum of bsd),
    reported_rebuffer_ms: Optional[int] = None  # to cross-check the derived ones
    # Live views: program time = playhead + program_offset_ms, and how the
    # offset is known ("program_time" or "latency"; None: unknown, docs/detection.md).
    program_offset_ms: Optional[int] = None
    program_time_from: Optional[str] = None
    # Ads inside the view: breaks started, ads that played, time in breaks
    # (not in watch_ms); an ad's stalls and played ranges carry its video_id.
    ad_breaks: int = 0
    ads: int = 0
    ad_ms: int = 0
    version: int = 1                  # a re-emitted view_key with a higher version replaces it

    @property
    def rebuffer_pct(self) -> float:
        return 100.0 * self.rebuffer_ms / self.watch_ms if self.watch_ms else 0.0

    @property
    def rebuffer_per_min(self) -> float:
        return self.rebuffer_count * 60_000.0 / self.watch_ms if self.watch_ms else 0.0

    @property
    def seek_latency_ms(self) -> Optional[float]:
        return self.seek_ms / self.seek_count if self.seek_count else None


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    """A stall cluster attributed to a cause. Serialized as one JSON line.

    Fields that do not apply to a cause are None: ``start_ms``/``end_ms`` and
    ``rendition`` for content, ``dimension``/``value`` for delivery,
    ``viewer_id`` for viewer alerts.
    """

    alert_id: str
    cause: Cause
    video_id: Optional[str]
    rendition: Optional[str]
    start_ms: Optional[int]
    end_ms: Optional[int]
    dimension: Optional[str]
    value: Optional[str]
    viewer_id: Optional[str]
    start_ts: int
    end_ts: int
    affected_viewers: int
    exposed_viewers: int
    stalls: int
    baseline_rate: float
    observed_rate: float
    p_value: float
    breakdown: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]
    # Lifecycle: an alert_id is emitted again, with version + 1, whenever its
    # finding changes; the highest version is the current state.
    status: AlertStatus = AlertStatus.CLOSED
    version: int = 1
    as_of_ms: Optional[int] = None    # event time of the evaluation that produced it
    # Content alerts: what start_ms/end_ms measure, "playhead" (on-demand) or
    # "program" (live: the media's wall clock, epoch ms).
    timeline: Optional[str] = None


class Notice(str, enum.Enum):
    """An alert transition worth telling people about (docs/alerts.md)."""

    OPENED = "opened"        # first open version, or open again after closed
    WORSE = "worse"          # still open, affected viewers up by half since the last notice
    CLOSED = "closed"        # was notified open; now closed
    RETRACTED = "retracted"  # was notified open; the finding no longer holds


@dataclasses.dataclass(frozen=True, slots=True)
class Notification:
    """One notice a receiver accepted (2xx). Serialized as one JSON line.

    ``receiver`` is the format and host (never a path or query: those may
    hold tokens); ``attempts`` counts the requests it took.
    """

    receiver: str
    alert_id: str
    version: int
    cause: Cause
    notice: Notice
    http_status: int
    attempts: int
    sent_ms: int                      # wall clock when the receiver accepted it
    as_of_ms: Optional[int] = None    # the alert version's evaluation time (event time)


@dataclasses.dataclass(frozen=True, slots=True)
class MetricRow:
    """Per-minute QoE aggregate for one dimension value (views ending then)."""

    minute_ms: int
    dimension: str        # "all", "video_id", "cdn", "asn", ...
    value: str
    views: int
    watch_ms: int
    rebuffer_ms: int
    rebuffer_count: int
    startup_p50_ms: Optional[float]
    startup_p95_ms: Optional[float]
    rebuffer_pct: float
    rebuffer_per_min: float
    playback_failure_pct: float
    ebvs_pct: float
    version: int = 1      # a cell re-emitted with a higher version replaces it


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseRow:
    """Per-minute delivery evidence from response-received reports (CMCD
    ``e=rr``) for one dimension value ("all", "cdn" or "host")."""

    minute_ms: int
    dimension: str
    value: str
    requests: int
    http_errors: int                  # responses with status >= 400
    http_error_pct: float
    ttfb_p50_ms: Optional[float]
    ttfb_p95_ms: Optional[float]
    ttlb_p50_ms: Optional[float]
    version: int = 1                  # a cell re-emitted with a higher version replaces it
