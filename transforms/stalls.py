"""DetectStallClusters: delivery, then viewer, then content attribution of stalls."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.alerting import delivery_windows
from transforms.content import DetectContentProblems
from transforms.delivery import DetectDeliveryProblems
from transforms.model import Alert
from transforms.viewers import DetectViewerProblems
from transforms.parse import METRICS_NAMESPACE
from transforms.thresholds import Thresholds


def _count_alert(alert: Alert) -> Alert:
    Metrics.counter(METRICS_NAMESPACE, f"alerts:{alert.cause.value}").inc()
    return alert


class DetectStallClusters(beam.PTransform):
    """Attribute stalls to delivery, viewer or content problems.

    Input:  PCollection[View] (global window).
    Output: PCollection[Alert], all causes.

    Order matters and follows causality: delivery problems are found first
    (they need no other input); stalls inside a delivery window are then
    explained and held against neither the viewer nor the video; viewers who
    still stall everywhere are flagged, and their stalls do not count toward
    content alerts. What remains, clustered at one playhead across many
    viewers, is the content.

    Args:
      thresholds: see Thresholds.
    """

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        super().__init__()
        self._t = thresholds or Thresholds()

    def expand(self, views: beam.PCollection) -> beam.PCollection:
        t = self._t
        delivery = views | "Delivery" >> DetectDeliveryProblems(t)
        windows = beam.pvalue.AsSingleton(
            delivery | "DeliveryWindows" >> beam.combiners.ToList()
            | "AsWindows" >> beam.Map(delivery_windows))
        viewer = views | "Viewers" >> DetectViewerProblems(t, windows)
        flagged = beam.pvalue.AsSingleton(
            viewer | "FlaggedIds" >> beam.Map(lambda a: a.viewer_id)
            | "FlaggedSet" >> beam.combiners.ToSet())
        content = views | "Content" >> DetectContentProblems(t, flagged, windows)
        return ((delivery, viewer, content)
                | "AllAlerts" >> beam.Flatten()
                | "CountAlerts" >> beam.Map(_count_alert))
