"""Helpers shared by the detectors: stable alert ids, breakdowns, explained stalls."""

from __future__ import annotations

import collections
import hashlib
from typing import Iterable, Optional

from transforms.model import Alert, Stall, View

TOP_VALUES = 10
# A stall this close to a delivery window is explained by it.
DELIVERY_MARGIN_MS = 60_000


def alert_id(*parts: object) -> str:
    """Deterministic id: the same finding gets the same id on every run."""
    text = "|".join("" if p is None else str(p) for p in parts)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def breakdown(**values: Iterable[Optional[str]]) -> tuple[tuple[str, tuple[tuple[str, int], ...]], ...]:
    """Top value counts per dimension, e.g. breakdown(cdn=[...], asn=[...])."""
    out = []
    for name, items in values.items():
        counts = collections.Counter("unknown" if v is None else str(v) for v in items)
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_VALUES]
        out.append((name, tuple(top)))
    return tuple(out)


def delivery_windows(alerts: Iterable[Alert]) -> tuple[tuple[str, str, int, int], ...]:
    """(dimension, value, start_ts, end_ts) of delivery alerts, for side inputs."""
    return tuple((a.dimension, a.value, a.start_ts, a.end_ts) for a in alerts
                 if a.dimension is not None and a.value is not None)


def unexplained_stalls(view: View, windows: Iterable[tuple[str, str, int, int]]) -> list[Stall]:
    """Stalls of a view that no delivery window (on one of its dimensions) covers."""
    relevant = [(start, end) for dim, value, start, end in windows
                if str(getattr(view, dim, None)) == value]
    if not relevant:
        return list(view.stalls)
    return [s for s in view.stalls
            if not any(start - DELIVERY_MARGIN_MS <= s.start_ms <= end + DELIVERY_MARGIN_MS
                       for start, end in relevant)]
