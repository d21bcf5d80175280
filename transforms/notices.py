"""Which alert versions are worth a notification: the transition rule.

An alert is re-emitted with version + 1 whenever its finding changes
(transforms/alerting.py); most of those versions (exposure growing, the
extent moving by a bucket) would only page people again. Per receiver and
alert, what was last notified is kept (``Notified``) and a new version is
news only when it:

- opens (first open version, or open again after a closed notice): OPENED;
- is open with affected viewers up by at least half since the last notice
  (``WORSE_RATIO``): WORSE;
- closes after an open notice: CLOSED;
- is retracted after an open notice: RETRACTED.

With a pending period, an alert is told OPENED only once it has been
open that long (event time; Grafana's "pending period", Mux's trigger
interval): one retracted sooner (a content alert that a delivery alert
explains a few seconds later) is never told. An alert first seen closed
(a batch run's final alerts, or a stream that caught only its end), or
closed while pending, is told as OPENED then CLOSED, so a receiver that
tracks incidents gets both ends. With a resolve hold, an alert told open
is told CLOSED only once it has stayed closed that long: a content alert
on a VOD title that closes after ten quiet minutes and reopens when the
next viewer reaches the broken segment stays one incident. A retracted alert never notified open, or
a closed one retracted later, is not news: nobody was told it was open.
Versions no newer than the newest seen (``stale``: evaluation time, then
version) are ignored, so redelivered, replayed or reordered versions send
nothing twice.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

from transforms.model import Alert, AlertStatus, Cause, Notice

WORSE_RATIO = 1.5
STAGE = "notify"      # the dead letters of notices given up
DEFAULT_CAUSES = frozenset({Cause.CONTENT, Cause.DELIVERY})


@dataclasses.dataclass(frozen=True)
class Notified:
    """What a receiver was last told about one alert, and the newest version seen."""

    as_of_ms: int         # event time of the newest version seen (sent or not)
    version: int          # its version (numbered per run: a restarted run counts from 1)
    open: bool            # the receiver was last told the alert is open
    viewers: int          # affected viewers in the last notice
    pending_since_ms: Optional[int] = None   # open but not told yet: open since (event time)
    closing_since_ms: Optional[int] = None   # told open, closed since (not told yet)
    incidents: int = 0    # times told OPENED (a reopened alert is a new incident)

    def same_news(self, other: Optional["Notified"]) -> bool:
        """Whether ``other`` records the same telling (only the newest version
        seen differs): no need to write it down again."""
        return other is not None and (
            (self.open, self.viewers, self.pending_since_ms, self.closing_since_ms, self.incidents)
            == (other.open, other.viewers, other.pending_since_ms, other.closing_since_ms,
                other.incidents))


def as_of(alert: Alert) -> int:
    """The evaluation time of an alert version (its end, if it has none)."""
    return alert.as_of_ms if alert.as_of_ms is not None else alert.end_ts


def stale(last: Optional[Notified], alert: Alert) -> bool:
    """A version older than (or the same as) the newest seen: by evaluation
    time first (comparable across runs: a restarted run numbers versions
    from 1 again), then by version."""
    return last is not None and (as_of(alert), alert.version) <= (last.as_of_ms, last.version)


def notices(last: Optional[Notified], alert: Alert, pending_ms: int = 0,
            resolve_ms: int = 0) -> tuple[list[Notice], Notified]:
    """The notices ``alert`` calls for after ``last``, and what is known after them.

    ``pending_ms``: an alert is told open only once it has been open this
    long (event time, from its first open version); one retracted sooner is
    never told (``Notified.pending_since_ms`` set meanwhile).
    ``resolve_ms``: an alert told open is told closed only once it has been
    closed this long; one that reopens sooner was never closed for the
    receiver (``Notified.closing_since_ms`` set meanwhile). The caller wakes
    up at ``due`` to tell what a hold ended with if no version came.
    """
    if stale(last, alert):
        return [], last
    at = as_of(alert)
    was_open = last is not None and last.open
    pending = last.pending_since_ms if last is not None else None
    incidents = last.incidents if last is not None else 0
    seen = (dataclasses.replace(last, as_of_ms=at, version=alert.version) if last is not None
            else Notified(at, alert.version, False, 0))
    told = Notified(at, alert.version, alert.status is AlertStatus.OPEN, alert.affected_viewers,
                    incidents=incidents)
    opened = dataclasses.replace(told, incidents=incidents + 1)
    if alert.status is AlertStatus.OPEN:
        if not was_open:
            since = at if pending is None else pending
            if at - since < pending_ms:
                return [], dataclasses.replace(seen, pending_since_ms=since)
            return [Notice.OPENED], opened
        if alert.affected_viewers >= max(last.viewers + 1, math.ceil(last.viewers * WORSE_RATIO)):
            return [Notice.WORSE], told
        return [], dataclasses.replace(seen, closing_since_ms=None)
    if alert.status is AlertStatus.CLOSED:
        if was_open:
            since = at if last.closing_since_ms is None else last.closing_since_ms
            if at - since < resolve_ms:
                return [], dataclasses.replace(seen, closing_since_ms=since)
            return [Notice.CLOSED], told
        if last is None or pending is not None:
            return [Notice.OPENED, Notice.CLOSED], dataclasses.replace(opened, open=False)
        return [], seen
    if was_open:
        return [Notice.RETRACTED], told
    return [], dataclasses.replace(seen, pending_since_ms=None)


def due(last: Optional[Notified], pending_ms: int, resolve_ms: int = 0) -> Optional[int]:
    """When a hold ends: a pending alert is to be told open, a closing one
    closed, if no version comes first."""
    if last is None:
        return None
    if last.pending_since_ms is not None:
        return last.pending_since_ms + pending_ms
    if last.closing_since_ms is not None:
        return last.closing_since_ms + resolve_ms
    return None
