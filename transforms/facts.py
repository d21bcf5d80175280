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
    at = view.program_offset_ms or 0
    return ViewFacts(
        view_key=view.view_key, viewer_id=view.viewer_id, video_id=view.video_id,
        start_ms=view.start_ms, end_ms=view.end_ms, watch_ms=view.watch_ms,
        dims=tuple((name, _text(getattr(view, name, None))) for name in names),
        played=tuple((r.start_ms + at, r.end_ms + at, r.rendition) for r in view.played),
        stalls=tuple(StallFact(s.start_ms, None if s.playhead_ms is None else s.playhead_ms + at,
                               s.rendition) for s in view.stalls))


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
