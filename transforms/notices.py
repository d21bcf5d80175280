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

An alert first seen closed (a batch run's final alerts, or a stream that
caught only its end) is told as OPENED then CLOSED, so a receiver that
tracks incidents gets both ends. A retracted alert never notified open, or
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


def stale(last: Optional[Notified], alert: Alert) -> bool:
    """A version older than (or the same as) the newest seen: by evaluation
    time first (comparable across runs: a restarted run numbers versions
    from 1 again), then by version."""
    if last is None:
        return False
    as_of = alert.as_of_ms if alert.as_of_ms is not None else alert.end_ts
    return (as_of, alert.version) <= (last.as_of_ms, last.version)


def notices(last: Optional[Notified], alert: Alert) -> tuple[list[Notice], Notified]:
    """The notices ``alert`` calls for after ``last``, and what is known after them."""
    if stale(last, alert):
        return [], last
    as_of = alert.as_of_ms if alert.as_of_ms is not None else alert.end_ts
    was_open = last is not None and last.open
    seen = (dataclasses.replace(last, as_of_ms=as_of, version=alert.version) if last is not None
            else Notified(as_of, alert.version, False, 0))
    told = Notified(as_of, alert.version, alert.status is AlertStatus.OPEN, alert.affected_viewers)
    if alert.status is AlertStatus.OPEN:
        if not was_open:
            return [Notice.OPENED], told
        if alert.affected_viewers >= max(last.viewers + 1, math.ceil(last.viewers * WORSE_RATIO)):
            return [Notice.WORSE], told
        return [], seen
    if alert.status is AlertStatus.CLOSED:
        if was_open:
            return [Notice.CLOSED], told
        if last is None:
            return [Notice.OPENED, Notice.CLOSED], told
        return [], seen
    if was_open:
        return [Notice.RETRACTED], told
    return [], seen
