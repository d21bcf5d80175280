"""The few global quantities detection shares, and how they reach the shards.

Detection keys never wait on a side input: a streaming side input is
gated by the watermark (the DirectRunner blocks the main input until the
side input's watermark passes the window, minutes behind arrival here), so
a global value would be as stale as the watermark. Instead a global value
is an element: the stage that computes it sends one copy to every shard
of the stages that use it (``to_shards``), and each shard keeps the latest
copy per source (``keep_latest``). How stale a copy can be is set by the
sender's evaluation period (docs/detection.md, "How detection is sharded").
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

from apache_beam import pvalue

from transforms.alerting import Window
from transforms.facts import all_shards

Rank = tuple[int, int]      # (epoch of the sending key's state, its evaluation number)


class DeliveryWindows(NamedTuple):
    """A dimension's current delivery alerts, as windows that explain stalls,
    and how far (event time) the delivery test had looked when it sent them."""

    dimension: str
    rank: Rank
    windows: tuple[Window, ...]
    through_ms: int


class FlaggedViewers(NamedTuple):
    """The viewers one viewer-test shard currently flags."""

    shard: str
    rank: Rank
    viewers: frozenset


class Total(NamedTuple):
    """A sum over all shards (``values`` in the sender's order), e.g. the
    global stall rate of content or of viewers."""

    rank: Rank
    values: tuple[int, ...]


class Partial(NamedTuple):
    """One shard's part of a Total."""

    shard: str
    rank: Rank
    values: tuple[int, ...]


def to_shards(tag: Optional[str], shards: int, message: Any) -> list:
    """One copy of ``message`` for every shard key, on output ``tag``."""
    return [pvalue.TaggedOutput(tag, (key, message)) if tag else (key, message)
            for key in all_shards(shards)]


def keep_latest(held: dict, source: str, message) -> bool:
    """Keep ``message`` as ``source``'s latest if it outranks the one held
    (messages may arrive in any order); True if it was kept."""
    seen = held.get(source)
    if seen is not None and seen.rank >= message.rank:
        return False
    held[source] = message
    return True


def next_rank(acc: Any, ts_ms: int) -> Rank:
    """The next rank of a sending key: its state's epoch, then a counter."""
    if getattr(acc, "epoch", None) is None:
        acc.epoch = ts_ms
    acc.seq = getattr(acc, "seq", 0) + 1
    return (acc.epoch, acc.seq)


def all_windows(held: dict[str, DeliveryWindows]) -> tuple[Window, ...]:
    return tuple(sorted(w for message in held.values() for w in message.windows))


def all_flagged(held: dict[str, FlaggedViewers]) -> frozenset:
    return frozenset().union(*(m.viewers for m in held.values()))


def delivery_clock(held: dict[str, DeliveryWindows]) -> Optional[int]:
    """How far every delivery dimension has looked (None: none has spoken)."""
    return min((m.through_ms for m in held.values()), default=None)
