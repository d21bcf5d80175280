"""SessionizeViews: beacons grouped into views with per-view QoE metrics."""

from __future__ import annotations

from typing import Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms import window

from transforms.model import Beacon, View
from transforms.parse import METRICS_NAMESPACE
from transforms.viewstate import summarize_views


class _SummarizeFn(beam.DoFn):
    """Adapter over the pure ``summarize_views``; counts views and duplicates."""

    def __init__(self, max_stall_ms: int) -> None:
        self._max_stall_ms = max_stall_ms
        self._views = Metrics.counter(METRICS_NAMESPACE, "views")
        self._duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicates_dropped")

    def process(self, element: tuple[str, Iterable[Beacon]]) -> Iterable[View]:
        view_id, beacons = element
        for view in summarize_views(view_id, beacons, self._max_stall_ms):
            self._views.inc()
            self._duplicates.inc(view.duplicate_events)
            yield view


class SessionizeViews(beam.PTransform):
    """Turn beacons into one summary per view.

    Input:  PCollection[Beacon], timestamped at the client ``ts``.
    Output: PCollection[View] in the global window, one per view. A view is
            the beacons of one ``view_id`` until ``inactivity_s`` pass without
            any; a video change or ``max_stall_s`` of continuous rebuffering
            starts a new one.

    Args:
      inactivity_s: silence (seconds) after which a view is final and further
        beacons of the same view_id open a new view (Mux: 60 min).
      max_stall_s: continuous rebuffering (seconds) that force-ends a view
        (Mux: 5 min).
    """

    def __init__(self, inactivity_s: int = 3600, max_stall_s: int = 300) -> None:
        super().__init__()
        if inactivity_s <= 0:
            raise ValueError(f"inactivity_s must be > 0, got {inactivity_s}")
        if max_stall_s <= 0:
            raise ValueError(f"max_stall_s must be > 0, got {max_stall_s}")
        self._inactivity_s = inactivity_s
        self._max_stall_ms = max_stall_s * 1000

    def expand(self, beacons: beam.PCollection) -> beam.PCollection:
        return (beacons
                | "KeyByView" >> beam.Map(lambda b: (b.view_id, b))
                    .with_output_types(tuple[str, Beacon])
                | "InactivityWindows" >> beam.WindowInto(window.Sessions(self._inactivity_s))
                | "GroupPerView" >> beam.GroupByKey()
                | "Summarize" >> beam.ParDo(_SummarizeFn(self._max_stall_ms))
                | "Rewindow" >> beam.WindowInto(window.GlobalWindows()))
