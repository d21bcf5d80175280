"""What the detectors keep of a view (ViewFacts), and how detection keys are sharded."""

from __future__ import annotations

import dataclasses
import zlib
from typing import Optional

from transforms.model import View
from transforms.parse import MAX_PLAYHEAD_MS

# Dimensions every detector may read off a view besides the delivery ones:
# stall points carry them into alert breakdowns.
BREAKDOWN_DIMENSIONS = ("asn", "cdn", "country")


@dataclasses.dataclass(frozen=True, slots=True)
class StallFact:
    start_ms: int                  # wall clock (client) when the stall began
    playhead_ms: Optional[int]     # position (see ViewFacts.played); None: unknown (an unplaced CMCD stall)
    rendition: Optional[str]
    uncertainty_ms: int = 0        # the stall lies within playhead_ms ± this


@dataclasses.dataclass(frozen=True, slots=True)
class ViewFacts:
    """The part of a View the detectors use (a View is ~10x larger on the wire)."""

    view_key: str
    viewer_id: str
    video_id: str
    start_ms: int
    end_ms: int
    watch_ms: int
    dims: tuple[tuple[str, Optional[str]], ...]        # (dimension, value), sorted by name
    # Positions on the media's timeline: the playhead (on-demand), or program
    # time, epoch ms (a live view: its playhead + program_offset_ms).
    played: tuple[tuple[int, int, Optional[str]], ...]  # position ranges (start, end, rendition)
    stalls: tuple[StallFact, ...]
    # The ads the view showed, each as facts of its own (video_id the ad's,
    # positions within the ad): content detection clusters an ad's stalls
    # across the views that showed it. Delivery and viewer detection use the
    # view's own facts only.
    ads: tuple["ViewFacts", ...] = ()

    def dim(self, name: str) -> Optional[str]:
        for dimension, value in self.dims:
            if dimension == name:
                return value
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class Withdrawn:
    """A view key that no longer exists (or moved to another viewer)."""

    viewer_id: str


def view_facts(view: View, dimensions: tuple[str, ...]) -> ViewFacts:
    """A view's facts, with the values of ``dimensions`` and the breakdown ones.

    A live view's positions are moved onto program time, where its viewers'
    stalls line up whatever each one's playhead origin and latency."""
    names = sorted(set(dimensions) | set(BREAKDOWN_DIMENSIONS))
    dims = tuple((name, _text(getattr(view, name, None))) for name in names)
    ads = sorted({r.video_id for r in view.played if r.video_id is not None})
    at = view.program_offset_ms or 0
    return ViewFacts(
        view_key=view.view_key, viewer_id=view.viewer_id, video_id=view.video_id,
        start_ms=view.start_ms, end_ms=view.end_ms, watch_ms=view.watch_ms, dims=dims,
        played=_played(view, None, at), stalls=_stalls(view, None, at),
        ads=tuple(ViewFacts(
            view_key=f"{view.view_key}#ad:{ad}", viewer_id=view.viewer_id, video_id=ad,
            start_ms=view.start_ms, end_ms=view.end_ms, watch_ms=0, dims=dims,
            played=_played(view, ad, 0), stalls=_stalls(view, ad, 0)) for ad in ads))


def _played(view: View, video_id: Optional[str], at: int) -> tuple:
    return tuple((r.start_ms + at, r.end_ms + at, r.rendition) for r in view.played
                 if r.video_id == video_id)


def _stalls(view: View, video_id: Optional[str], at: int) -> tuple[StallFact, ...]:
    return tuple(StallFact(s.start_ms, None if s.playhead_ms is None else s.playhead_ms + at,
                           s.rendition, s.playhead_uncertainty_ms)
                 for s in view.stalls if s.video_id == video_id)


def content_units(facts: ViewFacts) -> tuple[ViewFacts, ...]:
    """What content detection clusters of a view: its video, then each ad it showed."""
    return (facts,) + facts.ads


def timeline(position_ms: int) -> str:
    """What a position measures: a playhead never exceeds MAX_PLAYHEAD_MS (a
    week), a program time is an epoch after 2000 (parse rejects the rest)."""
    return "program" if position_ms > MAX_PLAYHEAD_MS else "playhead"


def _text(value) -> Optional[str]:
    return None if value is None else str(value)


def shard(key: str, shards: int) -> str:
    """A stable shard of ``key`` (the same in every process: not ``hash()``)."""
    return f"{zlib.crc32(key.encode('utf-8')) % shards:04d}"


def all_shards(shards: int) -> list[str]:
    return [f"{i:04d}" for i in range(shards)]
