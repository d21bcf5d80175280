"""Per viewer: what each detector counts of a viewer's live views, sent as changes.

The first detection stage is keyed by viewer (``ViewerViews``). It keeps the
latest version of each of the viewer's views that may still change, and on
every new version works out what that changes for each detector:

- content, per (video, viewer): the position windows (playhead, or program
  time for a live view: facts.view_facts) the viewer was exposed
  to at each level (all renditions, then each rendition played), merged
  over their views of the video so a viewer counts once per window, and
  their placed stalls. Sent as ``ContentDelta`` (old and new track).
- delivery, per view and dimension value: the wall-clock buckets the view
  was active in and the buckets its stalls began in (``DeliveryDelta``).
- viewer: a viewer without stalls only adds watch time to the population
  (``WatchDelta``); a viewer with stalls sends its activity
  (``ViewerActivity``), which the viewer test needs whole.

A contribution belongs to the time *slice* of its latest view end, so the
stages downstream can age old evidence out by dropping whole slices. The
key keeps a view until it can no longer change and its evidence has left
detection (it ended more than the retention plus a view's life ago; batch
keeps all), and is cleared after a view's life without input: its state is
one viewer's views of the last retention + ~1 hour.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

from apache_beam import pvalue

from transforms.facts import StallFact, ViewFacts, content_units, shard
from transforms.spans import merge_spans
from transforms.thresholds import Thresholds

ALL_RENDITIONS = ""
CONTENT, DELIVERY, VIEWER = "content", "delivery", "viewer"


class StallPoint(NamedTuple):
    """A stall as the content detector sees it."""

    order: tuple[str, int]         # (view_key, index): a viewer's first stall in a window is the lowest
    playhead_ms: int               # position: playhead, or program time (live; ViewFacts.played)
    wall_ms: int
    rendition: Optional[str]
    dims: tuple[tuple[str, Optional[str]], ...]   # its view's dimension values


class ContentTrack(NamedTuple):
    """One viewer's exposure and stalls in one video (one epoch of the viewer key)."""

    slice_ms: int
    levels: tuple[tuple[str, tuple[tuple[int, int], ...]], ...]   # (level, merged window spans)
    stalls: tuple[StallPoint, ...]


class ContentDelta(NamedTuple):
    video_id: str
    viewer_id: str
    epoch: int                 # when this viewer key's state began: tracks of earlier epochs stay
    rank: int
    old: Optional[ContentTrack]
    new: Optional[ContentTrack]


class DeliveryFact(NamedTuple):
    """One view on one dimension value: the buckets it was active in, its stalls."""

    first: int
    last: int
    stall_buckets: tuple[int, ...]
    video_id: str


class DeliveryDelta(NamedTuple):
    dimension: str
    value: str
    view_key: str
    viewer_id: str
    old: Optional[DeliveryFact]
    new: Optional[DeliveryFact]


class ViewActivity(NamedTuple):
    """What one view contributes to its viewer's record."""

    view_key: str
    watch_ms: int
    video_id: str
    dims: tuple[tuple[str, Optional[str]], ...]
    stalls: tuple[tuple[int, Optional[int]], ...]      # (wall-clock start, position)


class ViewerActivity(NamedTuple):
    """A viewer with stalls: every live view of theirs (the viewer test needs all)."""

    viewer_id: str
    epoch: int
    rank: int
    slice_ms: int
    views: tuple[ViewActivity, ...]      # None-free; empty: the viewer no longer has stalls


class WatchDelta(NamedTuple):
    """Watch time of a viewer without stalls, moved between slices."""

    old: Optional[tuple[int, int]]       # (slice_ms, watch_ms)
    new: Optional[tuple[int, int]]


def slice_of(ms: int, slice_ms: int) -> int:
    return ms // slice_ms * slice_ms


def window_spans(played, bucket_ms: int) -> tuple[tuple[int, int], ...]:
    """Merged [first, last] content windows a set of position ranges touches;
    window w is buckets w and w + 1."""
    return tuple(merge_spans((start // bucket_ms - 1, end // bucket_ms) for start, end in played))


def placed(stall: StallFact, bucket_ms: int) -> bool:
    """Whether a stall's position is known well enough to cluster: known, and
    the playhead interval it may lie in (2 x uncertainty) narrower than a
    bucket, so it lies in the bucket it is placed in or a neighbour. A stall
    known only from a CMCD interval report 30 s apart counts in exposure and
    in the view's rebuffering, never in a cluster."""
    return stall.playhead_ms is not None and 2 * stall.uncertainty_ms < bucket_ms


def content_track(views: list[ViewFacts], bucket_ms: int, slice_ms: int) -> Optional[ContentTrack]:
    """A viewer's track in one video from their views of it (sorted by view key)."""
    ranges = [r for v in views for r in v.played]
    levels: list[tuple[str, tuple[tuple[int, int], ...]]] = []
    for level in sorted({ALL_RENDITIONS} | {r for _, _, r in ranges if r is not None}):
        spans = window_spans(((a, b) for a, b, r in ranges
                              if level == ALL_RENDITIONS or r == level), bucket_ms)
        if spans:
            levels.append((level, spans))
    stalls = tuple(StallPoint((v.view_key, i), s.playhead_ms, s.start_ms, s.rendition, v.dims)
                   for v in views for i, s in enumerate(v.stalls) if placed(s, bucket_ms))
    if not levels and not stalls:
        return None
    return ContentTrack(slice_of(max(v.end_ms for v in views), slice_ms), tuple(levels), stalls)


def delivery_facts(view: ViewFacts, dimensions: tuple[str, ...],
                   bucket_ms: int) -> dict[tuple[str, str], DeliveryFact]:
    fact = DeliveryFact(view.start_ms // bucket_ms, view.end_ms // bucket_ms,
                        tuple(s.start_ms // bucket_ms for s in view.stalls), view.video_id)
    return {(dimension, value): fact for dimension in dimensions
            if (value := view.dim(dimension)) is not None}


def view_activity(view: ViewFacts) -> ViewActivity:
    return ViewActivity(view.view_key, view.watch_ms, view.video_id, view.dims,
                        tuple((s.start_ms, s.playhead_ms) for s in view.stalls))


@dataclasses.dataclass
class _Viewer:
    epoch: Optional[int] = None
    rank: int = 0
    views: dict = dataclasses.field(default_factory=dict)         # view_key -> (rank, ViewFacts | None)
    content: dict = dataclasses.field(default_factory=dict)       # video -> ContentTrack sent
    delivery: dict = dataclasses.field(default_factory=dict)      # view_key -> {(dim, value): fact}
    video_of: dict = dataclasses.field(default_factory=dict)      # view_key -> its videos (its own, its ads)
    watch: Optional[tuple[int, int]] = None                       # (slice, watch) sent, no stalls
    activity: bool = False                                        # a ViewerActivity is out
    dirty: set = dataclasses.field(default_factory=set)           # view keys changed


class ViewerViews:
    """Evaluator of the per-viewer stage (see the module docstring).

    Input items: ``Member`` (member_key view_key, value ViewFacts, or None to
    withdraw it). Outputs, tagged CONTENT / DELIVERY / VIEWER, as (key, delta):
    content to the shard of its video, delivery to "dimension\\x1fvalue",
    viewer updates to the shard of the viewer.
    """

    def __init__(self, t: Thresholds, content_shards: int, viewer_shards: int,
                 slice_ms: int, keep_ms: int = 0) -> None:
        self._t = t
        self._content_shards, self._viewer_shards = content_shards, viewer_shards
        self._slice_ms = slice_ms
        self._keep_ms = keep_ms

    def empty(self, key: str) -> _Viewer:
        return _Viewer()

    def fold(self, acc: _Viewer, member, ts_ms: int) -> _Viewer:
        if acc.epoch is None:
            acc.epoch = ts_ms
        seen = acc.views.get(member.member_key)
        if seen is None or member.rank > seen[0]:
            acc.views[member.member_key] = (member.rank, member.value)
            acc.dirty.add(member.member_key)
        return acc

    def evaluate(self, viewer: str, acc: _Viewer, as_of_ms: int, settled: bool):
        if not acc.dirty:
            return [], None
        if self._keep_ms:
            self._evict(acc, as_of_ms - self._keep_ms)
        acc.rank += 1
        live = {k: f for k, (_, f) in sorted(acc.views.items()) if f is not None}
        out: list[Any] = []
        videos: set[str] = set()
        for view_key in sorted(acc.dirty):
            out += self._delivery(acc, viewer, view_key, live.get(view_key))
            videos |= acc.video_of.get(view_key, frozenset())     # what it was in: ads may go
            if view_key in live:
                acc.video_of[view_key] = frozenset(u.video_id for u in content_units(live[view_key]))
                videos |= acc.video_of[view_key]
        units = [u for f in live.values() for u in content_units(f)]
        for video in sorted(videos):
            views = [u for u in units if u.video_id == video]
            track = content_track(views, self._t.bucket_ms, self._slice_ms) if views else None
            old = acc.content.get(video)
            if track != old:
                out.append(pvalue.TaggedOutput(CONTENT, (
                    shard(video, self._content_shards),
                    ContentDelta(video, viewer, acc.epoch, acc.rank, old, track))))
                if track is None:
                    del acc.content[video]
                else:
                    acc.content[video] = track
        out += self._viewer(acc, viewer, list(live.values()))
        for view_key in acc.dirty:
            if view_key not in live:
                acc.video_of.pop(view_key, None)
        acc.dirty.clear()
        return out, None

    def _evict(self, acc: _Viewer, horizon_ms: int) -> None:
        """Forget views that ended before ``horizon_ms`` (retention + a view's
        life before now: they can no longer change, and their evidence has
        left detection). Content and viewer figures are sent again without
        them; their delivery cells age out downstream by their own buckets,
        so no delivery change is sent."""
        for view_key in [k for k, (_, f) in acc.views.items()
                         if f is not None and f.end_ms < horizon_ms]:
            del acc.views[view_key]
            acc.delivery.pop(view_key, None)
            acc.dirty.add(view_key)

    def _delivery(self, acc: _Viewer, viewer: str, view_key: str,
                  facts: Optional[ViewFacts]) -> list:
        old = acc.delivery.get(view_key, {})
        new = (delivery_facts(facts, self._t.delivery_dimensions, self._t.delivery_bucket_ms)
               if facts is not None else {})
        out = []
        for cell in sorted(set(old) | set(new)):
            if old.get(cell) != new.get(cell):
                out.append(pvalue.TaggedOutput(DELIVERY, (
                    f"{cell[0]}\x1f{cell[1]}",
                    DeliveryDelta(cell[0], cell[1], view_key, viewer, old.get(cell), new.get(cell)))))
        if new:
            acc.delivery[view_key] = new
        else:
            acc.delivery.pop(view_key, None)
        return out

    def _viewer(self, acc: _Viewer, viewer: str, live: list[ViewFacts]) -> list:
        key = shard(viewer, self._viewer_shards)
        stalled = any(v.stalls for v in live)
        slice_ms = slice_of(max((v.end_ms for v in live), default=0), self._slice_ms)
        watch = (slice_ms, sum(v.watch_ms for v in live)) if live and not stalled else None
        out = []
        if watch != acc.watch:
            out.append(pvalue.TaggedOutput(VIEWER, (key, WatchDelta(acc.watch, watch))))
            acc.watch = watch
        if stalled or acc.activity:
            views = tuple(view_activity(v) for v in live) if stalled else ()
            out.append(pvalue.TaggedOutput(VIEWER, (key, ViewerActivity(
                viewer, acc.epoch, acc.rank, slice_ms, views))))
            acc.activity = stalled
        return out
