"""Pure per-view QoE computation: a playback state machine over one view's beacons.

No Beam here: ``summarize_views`` takes the beacons of one view_id (any order,
duplicates allowed) and returns one or more Views (more than one when the
video changes or a stall force-ends the view). docs/metrics.md defines every
metric; this module is the executable form of that document.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from typing import Iterable, Optional

from transforms import cmcd
from transforms.model import AD_KINDS, Beacon, EventKind, PlayedRange, Stall, View

K = EventKind

# Tie-break for events with the same timestamp and no seq: the order a player
# emits them in.
_RANK = {k: i for i, k in enumerate((
    K.VIEWSTART, K.PLAYERREADY, K.ADENDED, K.ADERROR, K.ADBREAKEND, K.PLAY, K.SEEKING,
    K.SEEKED, K.WAITING, K.STALLED, K.REBUFFERSTART, K.REBUFFEREND, K.PLAYING,
    K.RENDITIONCHANGE, K.TIMEUPDATE, K.HEARTBEAT, K.PAUSE, K.ERROR, K.ENDED,
    K.ADBREAKSTART, K.ADPLAY, K.ADPLAYING, K.VIEWEND))}
# (Ads: an ad ends before what follows it at the same ms starts, and one
# starts after what preceded it ended: back-to-back ads, a pre-roll's end and
# the content's first frame, the content's end and a post-roll.)

# A playhead may advance this much faster than wall clock between two events
# (2x playback) plus this slack, else the jump was an unreported seek.
_MAX_RATE = 2.0
_JUMP_SLACK_MS = 15_000
# A heartbeat whose playhead moved this far past the stall position ends it.
_RESUME_MS = 250

# The video_id of a stall during an ad that reported no id.
UNKNOWN_AD = "(ad)"

# A live view's program offset is the median of its first this many estimates.
_OFFSET_SAMPLES = 5

_DIMENSIONS = ("cdn", "asn", "country", "browser", "os", "device",
               "player_name", "player_version", "stream_type", "video_duration_ms")


def clock(b: Beacon) -> int:
    """The device's own time of a beacon: consistent within a view, maybe not with the world."""
    return b.client_ms if b.client_ms is not None else b.event_ms


class _S(enum.Enum):
    INIT = 0       # loaded, no play intent yet
    STARTUP = 1    # play requested, no first frame yet
    PLAYING = 2
    PAUSED = 3
    SEEKING = 4
    STALLED = 5
    ENDED = 6


def dedupe(beacons: list[Beacon]) -> tuple[list[Beacon], int]:
    """Drop redelivered beacons: same event_id, same seq, or identical content.

    Returns the unique beacons (first occurrence kept) and how many were dropped.
    """
    seen: set = set()
    out: list[Beacon] = []
    for b in beacons:
        if b.event_id is not None:
            key = ("id", b.event_id)
        elif b.seq is not None:
            key = ("seq", b.seq)
        else:
            key = ("raw", b.kind, clock(b), b.playhead_ms)
        if key in seen:
            continue
        seen.add(key)
        out.append(b)
    return out, len(beacons) - len(out)


def order(beacons: list[Beacon]) -> list[Beacon]:
    """Sort by seq when every beacon has one (clocks jump, seq does not), else by ts."""
    if beacons and all(b.seq is not None for b in beacons):
        return sorted(beacons, key=lambda b: (b.seq, clock(b)))
    return sorted(beacons, key=lambda b: (clock(b), b.seq if b.seq is not None else -1,
                                          _RANK[b.kind]))


CMCD = cmcd.PROTOCOL


def prefer_beacons(beacons: list[Beacon]) -> tuple[list[Beacon], int]:
    """A view reported both as beacon v1 and as CMCD (same view_id = sid) is
    computed from its beacons alone, so no stall counts twice; its CMCD
    reports are counted as duplicates. Returns (beacons kept, reports dropped)."""
    kept = [b for b in beacons if b.protocol != CMCD]
    if not kept or len(kept) == len(beacons):
        return beacons, 0
    return kept, len(beacons) - len(kept)


def estimate_playheads(events: list[Beacon]) -> list[Beacon]:
    """Fill in the playhead of CMCD reports that carry no ``pt``.

    Walks the ordered reports of one view: the playhead starts at 0 (on-demand)
    and advances with the device clock only while the state is playing;
    startup, stalls, pauses and seeks do not advance it. A reported ``pt``
    resets it. After a seek whose target is unknown (no ``pt``) nothing is
    estimated until a report carries ``pt`` again (a seek in the first second
    of playback is the player's own initial positioning and keeps the
    estimate), and a live stream is never
    estimated (its start position is unknown). Estimated events are marked
    ``playhead_estimated``; events whose playhead stays unknown keep None.
    """
    out: list[Beacon] = []
    known = not any(b.stream_type == "live" for b in events)
    position, playing, last = 0, False, None
    ads = _AdTracker()
    for b in events:
        now = clock(b)
        before = ads.content_id
        ad = ads.is_ad(b)
        if not ad and before is not None and b.video_id != before:
            # Another video in the same player: its own timeline from 0 (the
            # view machine starts a new view here).
            ads = _AdTracker()
            ads.is_ad(b)
            position, playing, last = 0, False, None
            known = not any(x.stream_type == "live" for x in events)
        if ad:                         # the content's playhead stands still through a break
            if playing and last is not None:
                position += max(0, now - last)
            playing = False
            last = now
            out.append(b)
            continue
        if b.playhead_ms is not None:
            position, known = b.playhead_ms, True
        elif known:
            if playing and last is not None:
                position += max(0, now - last)
            b = dataclasses.replace(b, playhead_ms=position, playhead_estimated=True)
        kind = b.kind
        if kind is K.SEEKING:
            playing = False
            if b.playhead_estimated and b.playhead_ms > _INITIAL_SEEK_MS:
                known = False          # the seek's target is unknown
        elif kind is K.PLAYING:
            playing = True
        elif kind in _STOPS_PLAYHEAD or (kind is K.ERROR and b.fatal):
            playing = False            # a recoverable error (e=e without sta=f) plays on
        last = now
        out.append(b)
    return out


class _AdTracker:
    """Which reports of a view are about ads rather than its content.

    Ad events are; so is everything between an ad break's start (or an ad
    starting outside one) and its end, except a CMCD report of the content's
    own ``cid`` that is shown (no ``nr``): a player that never sent ``abe``
    is back on the content. A report with ``nr`` is about content the viewer
    does not see: it never drives the content's playback.
    """

    def __init__(self) -> None:
        self.content_id: Optional[str] = None
        self.ad_id: Optional[str] = None
        self.in_break = False
        self.implicit = False          # opened by an ad, not by a break start: closes with it

    def is_ad(self, b: Beacon) -> bool:
        kind = b.kind
        if kind in AD_KINDS:
            if kind is K.ADBREAKSTART:
                self.in_break, self.implicit = True, False
                self.content_id = self.content_id or b.video_id
            elif kind is K.ADBREAKEND:
                self.in_break = False
                self.content_id = self.content_id or b.video_id
            elif kind is K.ADPLAY or kind is K.ADPLAYING:
                if not self.in_break:
                    self.in_break, self.implicit = True, True
                self.ad_id = b.ad_id
            elif self.implicit:        # ADENDED, ADERROR of an ad that opened its own break
                self.in_break = False
            return True
        if b.not_rendered:
            return True
        if self.in_break and (kind is K.VIEWSTART or (b.protocol == CMCD and b.video_id != self.ad_id)):
            self.in_break = False      # a new view, or a shown report not of the ad: the break's end was not reported
        if not self.in_break:
            self.content_id = self.content_id or b.video_id
        return self.in_break


def sampled(b: Beacon) -> bool:
    """Whether a report samples the state (a CMCD interval, response or other
    report) rather than reporting a transition as it happened (``e=ps``, beacon v1)."""
    return b.protocol == CMCD and b.cmcd_event != "ps"


# bsa may grow by more between two reports, but at most this many stalls are
# added per report: more is not believed (and a report cannot make a view hold
# an unbounded number of stalls).
_MAX_STALLS_PER_REPORT = 10


# A seek this early is the player positioning itself at the start (Shaka
# reports sta=k right after its first frame), not a viewer's seek: the
# estimate goes on.
_INITIAL_SEEK_MS = 1_000

_STOPS_PLAYHEAD = frozenset({K.PLAY, K.PAUSE, K.WAITING, K.STALLED, K.REBUFFERSTART,
                             K.ENDED, K.VIEWEND, K.PLAYERREADY, K.VIEWSTART})


def summarize_views(view_id: str, beacons: Iterable[Beacon],
                    max_stall_ms: int = 300_000, inactivity_ms: int = 3_600_000) -> list[View]:
    """All Views in the beacons of one view_id.

    Args:
      view_id: the key.
      beacons: its beacons, in any order, possibly with duplicates.
      max_stall_ms: continuous rebuffering that force-ends a view.
      inactivity_ms: a gap this long between beacons starts a new view.
    """
    unique, dropped = dedupe(list(beacons))
    unique, redundant = prefer_beacons(unique)
    dropped += redundant
    events = order(unique)
    if events and events[0].protocol == CMCD:
        events = estimate_playheads(events)
    views: list[View] = []
    start = 0
    while start < len(events):
        machine = _ViewMachine(view_id, max_stall_ms, inactivity_ms)
        consumed = machine.run(events, start)
        views.append(machine.finish(dropped if not views else 0))
        start = consumed
    return views


class _ViewMachine:
    """Walks events in order; each interval between events is charged to the state."""

    def __init__(self, view_id: str, max_stall_ms: int, inactivity_ms: int) -> None:
        self.view_id = view_id
        self.max_stall_ms = max_stall_ms
        self.inactivity_ms = inactivity_ms
        self.state = _S.INIT
        self.first: Optional[Beacon] = None
        self.last_ms = 0
        self.count = 0
        self.dims: dict = {}
        self.viewer_id: Optional[str] = None
        self.play_ms: Optional[int] = None
        self.first_frame = False
        self.startup_ms: Optional[int] = None
        self.failure = self.startup_failure = self.business = False
        self.error_code: Optional[str] = None
        self.watch_ms = self.playing_ms = 0
        self.stalls: list[Stall] = []
        # (wall ms, playhead, rendition, bitrate, estimated) at the start of the open stall
        self.stall_start: Optional[tuple[int, Optional[int], Optional[str], Optional[int], bool]] = None
        self.stall_ms = 0
        self.seek_count = self.seek_ms = 0
        self.seek_started = 0
        self.seek_from_pause = False
        self.seek_target: Optional[int] = None
        self.playhead: Optional[int] = None
        self.playhead_estimated = False
        self.max_playhead = 0
        self.protocol = "beacon"
        self.reported_startup_ms: Optional[int] = None
        self.reported_stall_ms: Optional[int] = None
        self.rendition: Optional[str] = None
        self.bitrate: Optional[int] = None
        self.max_bitrate: Optional[int] = None
        self.up = self.down = 0
        self.time_at_rendition: collections.Counter = collections.Counter()
        self.bitrate_ms = 0.0
        self.bitrate_time = 0
        self.ranges: list[PlayedRange] = []
        self.force_ended = False
        self.end_ms: Optional[int] = None
        self.offsets: list[int] = []     # event_ms - client_ms of each beacon
        # Live: the first estimates of program time - playhead, from reported
        # program times and from reported latencies (device clock).
        self.program_offsets: list[int] = []
        self.latency_offsets: list[int] = []
        # Ads: which reports are about them, and the ad now playing.
        self.ads = _AdTracker()
        self.content_state = _S.INIT       # the content's state when its break began
        self.ad_breaks = self.ads_played = self.ad_ms = 0
        self.startup_ad_ms = 0             # break time between play and first frame
        self.ad: Optional[str] = None      # the ad playing (its id; None: unknown or none)
        self.ad_state: Optional[str] = None     # None, "loading", "playing", "stalled", "paused"
        self.ad_position = 0
        self.ad_started = False            # the current ad has played (counted in ads_played)
        self.ad_stall: Optional[tuple[int, int]] = None    # (wall ms, ad position)
        self.ad_ranges: list[PlayedRange] = []
        # CMCD: whether startup was seen only on interval reports (so msd is
        # the better figure), the last report of each event type, and when
        # the last stall seen through play states ended.
        self.play_sampled = self.startup_sampled = False
        self.startup_charged = 0            # watch time charged to the startup state
        self.report_clock: dict[Optional[str], int] = {}
        self.observed_stall_end: Optional[int] = None
        # (bsa, bsda, stalls, stall ms) at the last report with bsa: the
        # counters are the session's, so only their growth since is news.
        self.absolute: Optional[tuple[int, Optional[int], int, int]] = None

    # -- driving ---------------------------------------------------------
    def run(self, events: list[Beacon], start: int) -> int:
        """Consume events from ``start``; return the index where the next view begins."""
        for i in range(start, len(events)):
            b = events[i]
            was_in_break = self.ads.in_break
            content_before = self.ads.content_id
            ad = self.ads.is_ad(b)
            if self.first is None:
                self.first = b
                self.last_ms = clock(b)
                self.protocol = b.protocol
            elif not ad and content_before is not None and b.video_id != content_before:
                return i                      # a new video in the same player: new view
            elif clock(b) - self.last_ms > self.inactivity_ms:
                return i                      # idle too long: the view was final
            if (self.state is _S.STALLED and self.stall_start is not None
                    and clock(b) - self.stall_start[0] > self.max_stall_ms):
                cut = self.stall_start[0] + self.max_stall_ms
                self._advance(cut, None)
                self._close_stall(cut)
                self.force_ended = True
                self.end_ms = cut
                return i
            if ad or was_in_break:
                self._advance_ad(b, was_in_break)
                ad = self._apply_ad(b, was_in_break, ad)
            if not ad:
                self._advance(clock(b), b.playhead_ms)
                stalls, open_before = len(self.stalls), self.stall_start is not None
                started = self.first_frame
                self._apply(b)
                if not started and self.first_frame and sampled(b):
                    self.startup_sampled = True    # the first frame seen on an interval report
                if b.protocol == CMCD:
                    self._note_starvation(b, len(self.stalls) > stalls,
                                          self.stall_start is not None and not open_before)
                self._note_program(b)
            self.count += 1
            self.offsets.append(b.event_ms - clock(b))
        return len(events)

    def _advance(self, now_ms: int, playhead: Optional[int]) -> None:
        """Charge [last_ms, now_ms) to the current state and track the playhead."""
        elapsed = max(0, now_ms - self.last_ms)
        state = self.state
        if state in (_S.STARTUP, _S.PLAYING, _S.STALLED, _S.SEEKING):
            self.watch_ms += elapsed
        if state is _S.STARTUP:
            self.startup_charged += elapsed
        if state is _S.PLAYING:
            self.playing_ms += elapsed
            if self.rendition is not None:
                self.time_at_rendition[self.rendition] += elapsed
            if self.bitrate is not None:
                self.bitrate_ms += self.bitrate * elapsed
                self.bitrate_time += elapsed
            if playhead is not None and self.playhead is not None:
                moved = playhead - self.playhead
                if 0 < moved <= elapsed * _MAX_RATE + _JUMP_SLACK_MS:
                    self._played(self.playhead, playhead)
        self.last_ms = max(self.last_ms, now_ms)

    def _played(self, start: int, end: int) -> None:
        self.ranges.append(PlayedRange(start, end, self.rendition))

    # -- ads ---------------------------------------------------------------
    def _advance_ad(self, b: Beacon, was_in_break: bool) -> None:
        """Charge [last_ms, now_ms) to the break (ad time, not watch time), or
        to the content when the break begins with this event: up to the
        content's position then (reported, else where playing has taken it)."""
        now_ms = clock(b)
        if self.viewer_id is None and b.viewer_id is not None:
            self.viewer_id = b.viewer_id
        for name in _DIMENSIONS:
            if name not in self.dims and getattr(b, name) is not None:
                self.dims[name] = getattr(b, name)
        if not was_in_break:
            ph = b.playhead_ms if b.ad_id is None else None
            if ph is None and self.state is _S.PLAYING and self.playhead is not None:
                ph = self.playhead + max(0, now_ms - self.last_ms)
            self._advance(now_ms, ph)
            if ph is not None and self.state is _S.PLAYING:
                self.playhead = ph
            return
        elapsed = max(0, now_ms - self.last_ms)
        self.ad_ms += elapsed
        if self.content_state is _S.STARTUP:
            self.startup_ad_ms += elapsed      # a pre-roll is not startup time
        if self.ad_state == "playing":
            if self.ad is not None and elapsed:
                self.ad_ranges.append(PlayedRange(self.ad_position, self.ad_position + elapsed,
                                                  None, self.ad))
            self.ad_position += elapsed
        self.last_ms = max(self.last_ms, now_ms)

    def _apply_ad(self, b: Beacon, was_in_break: bool, ad: bool) -> bool:
        """Apply an ad-side event; False when it is the content's after all
        (the viewer quit or the player failed during a break)."""
        now, kind = clock(b), b.kind
        if not was_in_break and self.ads.in_break:
            self._close_stall(now)
            self._close_seek(now)
            self.content_state = _S.PLAYING if self.state in (_S.STALLED, _S.SEEKING) else self.state
            self.ad_breaks += 1
        if self.ads.in_break and (kind is K.VIEWEND or (kind is K.ERROR and b.fatal is not False
                                                        and b.protocol != CMCD)):
            self.ads.in_break = False
            self._leave_break(now)
            return False
        if kind is K.ADPLAY or kind is K.ADPLAYING:
            if self.ad_state is None or self.ad != b.ad_id:       # another ad
                self._close_ad_stall(now)
                self.ad, self.ad_position, self.ad_started = b.ad_id, 0, False
            self._close_ad_stall(now)
            if kind is K.ADPLAYING:
                self.ads_played += not self.ad_started
                self.ad_started, self.ad_state = True, "playing"
            elif self.ad_state in (None, "paused"):
                self.ad_state = "loading"
        elif kind in (K.ADENDED, K.ADERROR, K.ENDED) or (kind is K.ERROR and b.fatal):
            self._close_ad_stall(now)
            self.ad, self.ad_state = None, None
        elif self.ads.in_break:
            if kind in (K.PLAYING, K.REBUFFEREND) and self.ad_state is not None:
                self._close_ad_stall(now)
                self.ad_state = "playing"
            elif kind in (K.WAITING, K.STALLED, K.REBUFFERSTART) and self.ad_state == "playing":
                self.ad_stall = (now, self.ad_position)
                self.ad_state = "stalled"
            elif kind is K.PAUSE and self.ad_state is not None:
                self._close_ad_stall(now)
                self.ad_state = "paused"
        if was_in_break and not self.ads.in_break:
            self._leave_break(now)
        return ad

    def _leave_break(self, now: int) -> None:
        self._close_ad_stall(now)
        self.ad, self.ad_state = None, None
        self.state = self.content_state

    def _close_ad_stall(self, now: int) -> None:
        if self.ad_stall is None:
            return
        started, position = self.ad_stall
        duration = min(max(0, now - started), self.max_stall_ms)
        placed = position if self.ad is not None else None     # an ad without an id: not clustered
        self.stalls.append(Stall(started, duration, placed, None, None, True, 0,
                                 self.ad or UNKNOWN_AD))
        if placed is not None:
            self.ad_ranges.append(PlayedRange(placed, placed, None, self.ad))
        self.ad_stall = None

    # -- transitions -----------------------------------------------------
    def _apply(self, b: Beacon) -> None:
        kind, now, ph = b.kind, clock(b), b.playhead_ms
        self._note_dimensions(b)
        if kind is K.PLAY:
            if self.state in (_S.INIT, _S.STARTUP) or (self.state is _S.PAUSED and not self.first_frame):
                if self.play_ms is None:
                    self.play_ms = now
                    self.play_sampled = sampled(b)
                self.state = _S.STARTUP
            elif self.state in (_S.PAUSED, _S.ENDED):
                self.state = _S.PLAYING
        elif kind is K.PLAYING:
            if not self.first_frame and sampled(b) and ph is not None and self.playhead is not None:
                # First seen playing on an interval report: it played from
                # the last known position to this one (unless that is a jump).
                moved = ph - self.playhead
                since_play = now - self.play_ms if self.play_ms is not None else 0
                if 0 < moved <= since_play * _MAX_RATE + _JUMP_SLACK_MS:
                    self._played(self.playhead, ph)
            self._resume(now)
        elif kind is K.PAUSE:
            self._close_stall(now)
            self._close_seek(now)
            if self.state is not _S.ENDED:
                self.state = _S.PAUSED
        elif kind is K.SEEKING:
            self._close_stall(now)
            if self.first_frame and self.state is not _S.SEEKING:
                self.seek_count += 1
                self.seek_from_pause = self.state is _S.PAUSED
                self.seek_started = now
                self.state = _S.SEEKING
            self.seek_target = ph
        elif kind is K.SEEKED:
            self.seek_target = ph
            if self.state is _S.SEEKING and self.seek_from_pause:
                self._close_seek(now)
                self.state = _S.PAUSED
        elif kind in (K.WAITING, K.STALLED, K.REBUFFERSTART):
            # Waiting during startup or a seek is startup time / seek latency.
            # A CMCD report of buffer starvation (bs) is a stall whatever was
            # seen before it: the spec reports sta=r only once playback began.
            starved = b.starved and self.state in (_S.INIT, _S.STARTUP, _S.PAUSED)
            if starved and not self.first_frame:
                self.first_frame = True        # startup unknown: msd, if reported, says
                self.play_ms = self.play_ms if self.play_ms is not None else now
            if self.state is _S.PLAYING or starved or (
                    kind is K.REBUFFERSTART and self.state is _S.PAUSED and self.first_frame):
                if ph is not None:
                    self._open_stall(now, ph, b.playhead_estimated)
                elif b.protocol == CMCD:
                    self._open_stall(now, None, False)
                else:
                    self._open_stall(now, self.playhead, self.playhead_estimated)
        elif kind is K.REBUFFEREND:
            if self.state is _S.STALLED:
                self._close_stall(now)
                self.state = _S.PLAYING
        elif kind in (K.TIMEUPDATE, K.HEARTBEAT):
            self._on_progress(now, ph)
        elif kind is K.ERROR:
            self._on_error(b)
        elif kind in (K.ENDED, K.VIEWEND):
            self._close_stall(now)
            self._close_seek(now)
            self.state = _S.ENDED
        if ph is not None:
            self.max_playhead = max(self.max_playhead, ph)
        if ph is not None or b.protocol == CMCD:   # a CMCD report without one: position unknown
            self.playhead = ph
            self.playhead_estimated = b.playhead_estimated
        if b.reported_startup_ms is not None and self.reported_startup_ms is None:
            self.reported_startup_ms = b.reported_startup_ms
        if b.reported_stall_ms is not None:
            self.reported_stall_ms = (self.reported_stall_ms or 0) + b.reported_stall_ms

    def _resume(self, now: int) -> None:
        if not self.first_frame:
            self.first_frame = True
            if self.play_ms is not None:
                self.startup_ms = now - self.play_ms - self.startup_ad_ms
            else:
                self.play_ms = now     # no play intent seen: startup unknown (unless the player says)
        self._close_stall(now)
        self._close_seek(now)
        self.state = _S.PLAYING

    def _on_progress(self, now: int, ph: Optional[int]) -> None:
        if ph is None or self.playhead is None:
            return
        if (self.state is _S.STALLED and self.stall_start and self.stall_start[1] is not None
                and ph > self.stall_start[1] + _RESUME_MS):
            self._close_stall(now)
            self.state = _S.PLAYING
        elif self.state is _S.SEEKING and self.seek_target is not None and ph > self.seek_target + _RESUME_MS:
            self._close_seek(now)
            self.state = _S.PLAYING
        elif self.state in (_S.INIT, _S.STARTUP) and ph > self.playhead + _RESUME_MS:
            self._resume(now)     # the player skipped "playing"; the playhead moves

    def _on_error(self, b: Beacon) -> None:
        fatal = b.fatal is not False          # an error is fatal unless it says otherwise
        if b.business_error:
            self.business = True
        elif fatal:
            self.failure = True
            self.startup_failure = self.startup_failure or not self.first_frame
            self.error_code = self.error_code or b.error_code
        if fatal:
            self._close_stall(clock(b))
            self._close_seek(clock(b))
            self.state = _S.ENDED

    def _open_stall(self, now: int, ph: Optional[int], estimated: bool) -> None:
        # A beacon v1 stall with no playhead at all sits at 0 (as before); a
        # CMCD stall whose position cannot be estimated stays unplaced (None):
        # it counts in rebuffering but never in a stall cluster.
        position = ph if ph is not None or self.protocol == CMCD else 0
        self.stall_start = (now, position, self.rendition, self.bitrate, estimated)
        self.state = _S.STALLED
        if position is not None:
            self._played(position, position)

    def _close_stall(self, now: int) -> None:
        if self.stall_start is None:
            return
        started, position, rendition, bitrate, estimated = self.stall_start
        duration = min(max(0, now - started), self.max_stall_ms)
        self.stalls.append(Stall(started, duration, position, rendition, bitrate, estimated))
        self.stall_ms += duration
        self.stall_start = None
        self.observed_stall_end = now

    def _note_starvation(self, b: Beacon, closed: bool, opened: bool) -> None:
        """Buffer starvation a CMCD report states (docs/cmcd.md, "Buffer starvation").

        A report that ends a stall gives its duration (``bsd``: the player
        measured it). Starvation on a report that neither opened nor closed
        one happened unseen since the previous report of the same event type:
        it becomes a stall placed in that interval, unless a stall seen through
        play states already ended in it (two targets reporting one stall).
        Absolute counters (``bsa``, ``bsda``) add the stalls still missing.
        """
        now, dur = clock(b), b.reported_stall_ms
        since, previous = self.report_clock.get(b.cmcd_event, (clock(self.first), None))
        self.report_clock[b.cmcd_event] = (now, b.playhead_ms)
        busy = closed or opened or self.stall_start is not None or self.ad_stall is not None
        if not busy and (b.starved or dur):
            seen = self.observed_stall_end is not None and self.observed_stall_end >= since
            if not seen:
                self._interval_stalls(1, dur or 0, since, now, previous, b)
        count, total = b.reported_stall_count, b.reported_stall_total_ms
        if count is not None:
            base = self.absolute
            self.absolute = (count, total, len(self.stalls), self.stall_ms)
            if base is not None and not busy:
                grew = count - base[0] - (len(self.stalls) - base[2])
                if grew > 0:
                    missing_ms = (total - base[1] - (self.stall_ms - base[3])
                                  if total is not None and base[1] is not None else 0)
                    self._interval_stalls(min(grew, _MAX_STALLS_PER_REPORT), max(0, missing_ms),
                                          since, now, previous, b)
                    self.absolute = (count, total, len(self.stalls), self.stall_ms)

    def _interval_stalls(self, count: int, total_ms: int, since: int, now: int,
                         previous: Optional[int], b: Beacon) -> None:
        """``count`` stalls of ``total_ms`` together that happened between the
        previous report (``since``, at playhead ``previous``) and this one:
        each placed at the middle of where and when it can have been, its
        playhead marked with the half-width of that range."""
        each = min(total_ms // count, self.max_stall_ms)
        start = since + max(0, now - each - since) // 2
        ph = b.playhead_ms
        if ph is not None and previous is not None and previous <= ph:
            position, uncertainty = (previous + ph) // 2, (ph - previous + 1) // 2
        elif ph is not None:       # it played at most the time since then
            uncertainty = max(0, now - since) // 2
            position = max(0, ph - uncertainty)
        else:
            position, uncertainty = None, 0
        for _ in range(count):
            self.stalls.append(Stall(start, each, position, self.rendition, self.bitrate,
                                     b.playhead_estimated, uncertainty))
            self.stall_ms += each
        self.playing_ms = max(0, self.playing_ms - each * count)

    def _close_seek(self, now: int) -> None:
        if self.state is _S.SEEKING:
            self.seek_ms += max(0, now - self.seek_started)

    def _note_dimensions(self, b: Beacon) -> None:
        if self.viewer_id is None and b.viewer_id is not None:
            self.viewer_id = b.viewer_id
        for name in _DIMENSIONS:
            value = getattr(b, name)
            if value is not None and name not in self.dims:
                self.dims[name] = value
        if b.rendition is not None:
            self.rendition = b.rendition
        if b.bitrate_bps is not None:
            if self.bitrate is not None and b.bitrate_bps != self.bitrate:
                if b.bitrate_bps > self.bitrate:
                    self.up += 1
                else:
                    self.down += 1
            self.bitrate = b.bitrate_bps
            self.max_bitrate = max(self.max_bitrate or 0, b.bitrate_bps)

    def _note_program(self, b: Beacon) -> None:
        ph = b.playhead_ms
        if ph is None:
            return
        if b.program_time_ms is not None:
            if len(self.program_offsets) < _OFFSET_SAMPLES:
                self.program_offsets.append(b.program_time_ms - ph)
        elif b.live_latency_ms is not None and len(self.latency_offsets) < _OFFSET_SAMPLES:
            self.latency_offsets.append(clock(b) - b.live_latency_ms - ph)

    def _program_offset(self, shift: int) -> tuple[Optional[int], Optional[str]]:
        """(program time - playhead, how it is known) for a live view, else (None, None).

        The best source wins: the upper median of the first _OFFSET_SAMPLES
        reported program times, else of event time (the view's clock correction
        applied) minus reported latency. Taking the first ones fixes the offset
        once they arrived, so later versions of the view do not move its stalls.
        A player that reports neither leaves the view on its playhead timeline:
        an assumed latency would misplace its stalls by more than a bucket
        (docs/detection.md, "Live streams")."""
        if self.dims.get("stream_type") != "live":
            return None, None
        if self.program_offsets:
            return _median(self.program_offsets), "program_time"
        if self.latency_offsets:
            return _median(self.latency_offsets) + shift, "latency"
        return None, None

    # -- result ----------------------------------------------------------
    def finish(self, duplicates: int) -> View:
        end = self.end_ms if self.end_ms is not None else self.last_ms
        if self.stall_start is not None:           # the viewer left while stalled
            self._close_stall(end)
        self._close_seek(end)
        self._close_ad_stall(end)
        first = self.first
        assert first is not None
        rendition = (self.time_at_rendition.most_common(1)[0][0]
                     if self.time_at_rendition else self.rendition)
        avg_bitrate = self.bitrate_ms / self.bitrate_time if self.bitrate_time else (
            float(self.bitrate) if self.bitrate is not None else None)
        play_requested = self.play_ms is not None
        startup_ms, playing_ms = self.startup_ms, self.playing_ms
        if self.first_frame and self.reported_startup_ms is not None and (
                startup_ms is None or self.play_sampled or self.startup_sampled):
            # No "starting" report, or startup seen only through interval
            # reports (its measure is as coarse as they are): the player's msd.
            if startup_ms is not None:         # what the coarse measure charged beyond msd was playing
                playing_ms += max(0, min(startup_ms, self.startup_charged) - self.reported_startup_ms)
            startup_ms = self.reported_startup_ms
        # The device clock orders and times the view; this shift (the median
        # correction event time applied to its beacons) places it in the world.
        shift = _median(self.offsets) if self.offsets else 0
        program_offset, program_from = self._program_offset(shift)
        stalls = tuple(dataclasses.replace(s, start_ms=s.start_ms + shift) for s in self.stalls) \
            if shift else tuple(self.stalls)
        return View(
            view_key=f"{self.view_id}@{clock(first)}",
            view_id=self.view_id,
            video_id=self.ads.content_id or first.video_id,
            viewer_id=self.viewer_id or f"view:{self.view_id}",
            start_ms=clock(first) + shift,
            end_ms=end + shift,
            events=self.count,
            duplicate_events=duplicates,
            watch_ms=self.watch_ms,
            playing_ms=playing_ms,
            play_requested=play_requested,
            startup_ms=startup_ms,
            exited_before_start=play_requested and not self.first_frame and not self.failure,
            playback_failure=self.failure,
            startup_failure=self.startup_failure,
            business_error=self.business,
            error_code=self.error_code,
            rebuffer_count=sum(1 for st in self.stalls if st.video_id is None),
            rebuffer_ms=self.stall_ms,
            seek_count=self.seek_count,
            seek_ms=self.seek_ms,
            max_playhead_ms=self.max_playhead,
            avg_bitrate_bps=avg_bitrate,
            max_bitrate_bps=self.max_bitrate,
            upshifts=self.up,
            downshifts=self.down,
            force_ended=self.force_ended,
            stalls=stalls,
            played=merge_ranges(self.ranges + self.ad_ranges),
            rendition=rendition,
            protocol=self.protocol,
            reported_startup_ms=self.reported_startup_ms,
            reported_rebuffer_ms=self.reported_stall_ms,
            program_offset_ms=program_offset,
            program_time_from=program_from,
            ad_breaks=self.ad_breaks,
            ads=self.ads_played,
            ad_ms=self.ad_ms,
            **self.dims,
        )


def _median(values: list[int]) -> int:
    """The upper median (an element of ``values``)."""
    return sorted(values)[len(values) // 2]


def merge_ranges(ranges: Iterable[PlayedRange]) -> tuple[PlayedRange, ...]:
    """Union of played intervals per (ad, rendition), sorted by (ad, rendition,
    start); the content's come first (``video_id`` None)."""
    out: list[PlayedRange] = []
    for r in sorted(ranges, key=lambda r: (r.video_id or "", r.rendition or "", r.start_ms, r.end_ms)):
        if (out and out[-1].rendition == r.rendition and out[-1].video_id == r.video_id
                and r.start_ms <= out[-1].end_ms):
            if r.end_ms > out[-1].end_ms:
                out[-1] = PlayedRange(out[-1].start_ms, r.end_ms, r.rendition, r.video_id)
        else:
            out.append(r)
    return tuple(out)
