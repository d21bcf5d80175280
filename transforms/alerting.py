"""Shared by the detectors: stable alert ids, breakdowns, explained stalls, and
the alert lifecycle (open, refined, closed, retracted; the causal hold)."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from typing import Callable, Iterable, Optional

from apache_beam.metrics import Metrics

from transforms.model import Alert, AlertStatus, Cause, Stall, View
from transforms.parse import METRICS_NAMESPACE

TOP_VALUES = 10
# A stall this close to a delivery window is explained by it.
DELIVERY_MARGIN_MS = 60_000

Window = tuple[str, str, int, int]          # (dimension, value, start_ts, end_ts)


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


def delivery_windows(alerts: Iterable[Alert]) -> tuple[Window, ...]:
    """(dimension, value, start_ts, end_ts) of delivery alerts: what explains stalls."""
    return tuple(sorted((a.dimension, a.value, a.start_ts, a.end_ts) for a in alerts
                        if a.dimension is not None and a.value is not None
                        and a.status is not AlertStatus.RETRACTED))


def explained(dim: Callable[[str], Optional[str]], start_ms: int,
              windows: Iterable[Window]) -> bool:
    """Whether a stall at ``start_ms`` of a view whose dimension values ``dim``
    gives falls in a delivery window on one of them (within the margin)."""
    return any(str(dim(dimension)) == value
               and start - DELIVERY_MARGIN_MS <= start_ms <= end + DELIVERY_MARGIN_MS
               for dimension, value, start, end in windows)


def unexplained_stalls(view: View, windows: Iterable[Window]) -> list[Stall]:
    """Stalls of a view that no delivery window (on one of its dimensions) covers."""
    windows = tuple(windows)
    if not windows:
        return list(view.stalls)
    dim = (lambda name: getattr(view, name, None))
    return [s for s in view.stalls if not explained(dim, s.start_ms, windows)]


# -- the lifecycle of an entity's alerts ------------------------------------------------

def _identity(a: Alert) -> tuple:
    if a.cause is Cause.CONTENT:
        return (a.cause, a.video_id)
    if a.cause is Cause.DELIVERY:
        return (a.cause, a.dimension, a.value)
    return (a.cause, a.viewer_id)


def _same_finding(a: Alert, b: Alert, bucket_ms: int) -> bool:
    """Two evaluations' alerts are one finding: same subject, overlapping extent."""
    if _identity(a) != _identity(b):
        return False
    if a.cause is Cause.CONTENT:
        return a.start_ms <= b.end_ms + bucket_ms and b.start_ms <= a.end_ms + bucket_ms
    if a.cause is Cause.DELIVERY:
        return a.start_ts <= b.end_ts and b.start_ts <= a.end_ts
    return True


def _finding(a: Alert) -> Alert:
    """An alert without its bookkeeping, to tell whether anything changed."""
    return dataclasses.replace(a, version=0, as_of_ms=None)


def _headline(a: Alert) -> tuple:
    """What changes an open alert's meaning: its state, extent and who is hit.
    (Exposure and p-value move with every viewer who plays on.)"""
    return (a.status, a.rendition, a.start_ms, a.end_ms, a.start_ts, a.end_ts,
            a.affected_viewers, a.stalls)


def _worth_sending(previous: Optional[Alert], current: Alert, settled: bool) -> bool:
    if previous is None:
        return True
    if _headline(previous) != _headline(current):
        return True
    # Otherwise only news matters, until the input settles: then a closed
    # alert's numbers are brought up to date, so its last version is the
    # whole final finding, as a batch run reports it.
    return (settled and current.status is not AlertStatus.OPEN
            and _finding(previous) != _finding(current))


@dataclasses.dataclass(frozen=True)
class Lifecycle:
    """Turns one entity's findings at each evaluation into versioned alert updates.

    A finding that matches an alert already sent (``_same_finding``) keeps its
    ``alert_id`` and is re-sent with ``version`` + 1 when its headline changed
    (status, extent, affected viewers) or, once closed and the input has
    settled, anything changed; an alert whose finding is gone is re-sent as
    ``retracted``; an alert with no new affected stall for ``close_after_ms``
    is ``closed`` (and may reopen). With a ``retention_ms`` window, an alert
    whose last stall left it is frozen as last sent and then forgotten:
    aging out is not disproof.

    The causal hold: before the input settles, a *new* finding is sent only
    once ``clock`` (how far the delivery detector has looked, event time) has
    reached its last stall, or after ``hold_ms`` in any case, so a stall
    that a delivery window is about to explain does not open a content or
    viewer alert first. ``held`` remembers when each new finding was first
    seen.
    """

    bucket_ms: int
    close_after_ms: int
    retention_ms: int = 0
    hold_ms: int = 0

    def __call__(self, found: list[Alert], sent: dict[str, Alert], as_of: int, settled: bool,
                 clock: Optional[int] = None, held: Optional[dict[str, int]] = None,
                 ) -> tuple[list[Alert], dict[str, Alert], Optional[int]]:
        sent = dict(sent)
        out: list[Alert] = []
        matched: set[str] = set()
        holding: dict[str, int] = {}
        for finding in found:
            previous = next((a for a in sent.values()
                             if a.alert_id not in matched
                             and _same_finding(finding, a, self.bucket_ms)), None)
            if previous is None and not settled and self.hold_ms > 0 and held is not None:
                since = held.get(finding.alert_id, as_of)
                if (clock is None or clock < finding.end_ts) and as_of < since + self.hold_ms:
                    holding[finding.alert_id] = since
                    continue
            status = (AlertStatus.CLOSED if as_of >= finding.end_ts + self.close_after_ms
                      else AlertStatus.OPEN)
            current = dataclasses.replace(
                finding, alert_id=previous.alert_id if previous else finding.alert_id,
                status=status, as_of_ms=as_of,
                version=previous.version + 1 if previous else 1)
            matched.add(current.alert_id)
            if previous is not None and self._aging(previous, as_of) and \
                    previous.status is status is AlertStatus.CLOSED:
                continue             # its evidence is leaving the window: keep the last word
            if _worth_sending(previous, current, settled):
                out.append(current)
                sent[current.alert_id] = current
        for key, previous in list(sent.items()):
            if key in matched:
                continue
            if self._aging(previous, as_of):
                del sent[key]       # aged out of the window, not disproved
            elif previous.status is not AlertStatus.RETRACTED:
                retracted = dataclasses.replace(previous, status=AlertStatus.RETRACTED,
                                                version=previous.version + 1, as_of_ms=as_of)
                out.append(retracted)
                sent[key] = retracted
        if held is not None:
            held.clear()
            held.update(holding)
        wakes = [a.end_ts + self.close_after_ms for a in sent.values()
                 if a.status is AlertStatus.OPEN]
        wakes += [since + self.hold_ms for since in holding.values()]
        for alert in out:
            _count_alert(alert)
        return out, sent, min(wakes, default=None)

    def _aging(self, alert: Alert, as_of: int) -> bool:
        return self.retention_ms > 0 and alert.end_ts < as_of - self.retention_ms


def _count_alert(alert: Alert) -> None:
    if alert.version == 1:
        Metrics.counter(METRICS_NAMESPACE, f"alerts:{alert.cause.value}").inc()
    else:
        Metrics.counter(METRICS_NAMESPACE, "alert_updates").inc()
    if alert.status is AlertStatus.RETRACTED:
        Metrics.counter(METRICS_NAMESPACE, "alerts_retracted").inc()
