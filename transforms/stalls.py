"""DetectStallClusters: delivery, then viewer, then content attribution of stalls,
evaluated early and refined as views arrive (batch and streaming alike)."""

from __future__ import annotations

import dataclasses
from typing import Iterable, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.alerting import delivery_windows
from transforms.content import content_alerts
from transforms.delivery import delivery_alerts
from transforms.model import Alert, AlertStatus, Cause, View
from transforms.parse import METRICS_NAMESPACE
from transforms.rolling import Member, RollingEvaluate
from transforms.thresholds import Thresholds
from transforms.viewers import viewer_alerts

# Everything is one detection scope today: the delivery test compares CDNs
# with each other and the content baseline borrows the global rate.
SCOPE = ""


def detect(views: Iterable[View], t: Thresholds) -> list[Alert]:
    """All alerts in a set of views, in causal order.

    Delivery problems are found first (they need no other input); stalls
    inside a delivery window are then explained and held against neither the
    viewer nor the video; viewers who still stall everywhere are flagged, and
    their stalls do not count toward content alerts. What remains, clustered
    at one playhead across many viewers, is the content.
    """
    views = list(views)
    delivery = delivery_alerts(views, t)
    windows = delivery_windows(delivery)
    viewer = viewer_alerts(views, windows, t)
    flagged = {a.viewer_id for a in viewer}
    return delivery + viewer + content_alerts(views, flagged, windows, t)


def _identity(a: Alert) -> tuple:
    if a.cause is Cause.CONTENT:
        return (a.cause, a.video_id)
    if a.cause is Cause.DELIVERY:
        return (a.cause, a.dimension, a.value)
    return (a.cause, a.viewer_id)


def _same_finding(a: Alert, b: Alert, t: Thresholds) -> bool:
    """Two evaluations' alerts are one finding: same subject, overlapping extent."""
    if _identity(a) != _identity(b):
        return False
    if a.cause is Cause.CONTENT:
        return a.start_ms <= b.end_ms + t.bucket_ms and b.start_ms <= a.end_ms + t.bucket_ms
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
class AlertLifecycle:
    """Turns each evaluation's findings into versioned alert updates.

    A finding that matches an alert already sent (``_same_finding``) keeps its
    ``alert_id`` and is re-sent with ``version`` + 1 when its headline changed
    (status, extent, affected viewers) or, once closed and the input has
    settled, anything changed; an
    alert whose finding is gone is re-sent as ``retracted``; an alert with no
    new affected stall for ``close_after_ms`` is ``closed`` (and may reopen).
    With a ``retention_ms`` window, an alert whose last stall left it is
    frozen as last sent and then forgotten: aging out is not disproof.
    """

    thresholds: Thresholds
    close_after_ms: int
    retention_ms: int = 0

    def __call__(self, key: str, views: list[View], as_of: int,
                 sent: Optional[dict[str, Alert]],
                 settled: bool = True) -> tuple[list[Alert], dict, Optional[int]]:
        t = self.thresholds
        sent = dict(sent or {})
        out: list[Alert] = []
        matched: set[str] = set()
        for found in detect(views, t):
            previous = next((a for a in sent.values()
                             if a.alert_id not in matched and _same_finding(found, a, t)), None)
            status = (AlertStatus.CLOSED if as_of >= found.end_ts + self.close_after_ms
                      else AlertStatus.OPEN)
            current = dataclasses.replace(
                found, alert_id=previous.alert_id if previous else found.alert_id,
                status=status, as_of_ms=as_of,
                version=previous.version + 1 if previous else 1)
            matched.add(current.alert_id)
            if previous is not None and self._aging(previous, as_of) and \
                    previous.status is status is AlertStatus.CLOSED:
                continue             # its evidence is leaving the window: keep the last word
            if _worth_sending(previous, current, settled):
                out.append(current)
                sent[current.alert_id] = current
        for alert_id, previous in list(sent.items()):
            if alert_id in matched:
                continue
            if self._aging(previous, as_of):
                del sent[alert_id]   # aged out of the window, not disproved
            elif previous.status is not AlertStatus.RETRACTED:
                retracted = dataclasses.replace(previous, status=AlertStatus.RETRACTED,
                                                version=previous.version + 1, as_of_ms=as_of)
                out.append(retracted)
                sent[alert_id] = retracted
        wake = min((a.end_ts + self.close_after_ms for a in sent.values()
                    if a.status is AlertStatus.OPEN), default=None)
        for alert in out:
            _count_alert(alert)
        return out, sent, wake

    def _aging(self, alert: Alert, as_of: int) -> bool:
        return self.retention_ms > 0 and alert.end_ts < as_of - self.retention_ms


def _count_alert(alert: Alert) -> None:
    if alert.version == 1:
        Metrics.counter(METRICS_NAMESPACE, f"alerts:{alert.cause.value}").inc()
    else:
        Metrics.counter(METRICS_NAMESPACE, "alert_updates").inc()
    if alert.status is AlertStatus.RETRACTED:
        Metrics.counter(METRICS_NAMESPACE, "alerts_retracted").inc()


class DetectStallClusters(beam.PTransform):
    """Attribute stalls to delivery, viewer or content problems, as views arrive.

    Input:  PCollection[Member] whose values are Views: one per version of a
            view (``SessionizedViews.progress``; snapshots of views still
            playing included), any windowing.
    Output: PCollection[Alert], all causes. The first emission of an
            ``alert_id`` has version 1; later ones (refined, closed,
            retracted) replace it. In batch (``every_s`` 0) the views are
            evaluated once, when all are in.

    The latest version of every view is kept in one keyed state
    (``RollingEvaluate``) and ``detect`` runs over them: at most every
    ``every_s`` of event time as views arrive, once the input settles, and
    when an open alert is due to close. Views ending ``retention_s`` before
    the evaluation drop out (0: never, as in batch).

    Args:
      thresholds: see Thresholds.
      every_s: evaluate on arrival at most this often (event time; 0: only when
        input settles).
      close_after_s: an alert with no new affected stall for this long is closed.
      retention_s: window of views an evaluation looks at (0: all).
      stateful: see ``rolling.use_state`` (None: grouped once for a bounded
        input with ``every_s`` 0, keyed state and timers otherwise).
    """

    def __init__(self, thresholds: Thresholds | None = None, every_s: int = 0,
                 close_after_s: int = 600, retention_s: int = 0,
                 stateful: Optional[bool] = None) -> None:
        super().__init__()
        if min(every_s, retention_s) < 0 or close_after_s <= 0:
            raise ValueError("every_s, retention_s must be >= 0 and close_after_s > 0")
        t = thresholds or Thresholds()
        horizon_ms = max(retention_s * 1000, 24 * 3_600_000)
        self._rolling = RollingEvaluate(
            AlertLifecycle(t, close_after_s * 1000, retention_s * 1000),
            settle_ms=1_000, gc_ms=horizon_ms + close_after_s * 1000,
            every_ms=every_s * 1000, retention_ms=retention_s * 1000, stateful=stateful)

    def expand(self, members: beam.PCollection) -> beam.PCollection:
        return (members
                | "OneScope" >> beam.Map(lambda m: (SCOPE, m)).with_output_types(tuple[str, Member])
                | "Evaluate" >> self._rolling)
