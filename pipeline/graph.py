"""build(): the stallwatch graph, with its source and sinks injected."""

from __future__ import annotations

from typing import NamedTuple, Optional

import apache_beam as beam

from pipeline.config import QoeConfig
from pipeline.io.files import Sinks
from transforms import (AggregateMetrics, AggregateResponses, DetectStallClusters, ParseBeacons,
                        SessionizeViews)


class QoeOutputs(NamedTuple):
    beacons: beam.PCollection        # of Beacon
    dead_letters: beam.PCollection   # of DeadLetter
    views: beam.PCollection          # of View
    late: beam.PCollection           # of Beacon that came after their view was final
    metrics: beam.PCollection        # of MetricRow
    alerts: beam.PCollection         # of Alert
    responses: beam.PCollection      # of ResponseRow
    notifications: Optional[beam.PCollection] = None   # of Notification (None: no --notify)


def _s(ms: int) -> int:
    """Seconds, for the transforms whose arguments are in seconds (the
    config's times are whole seconds given in milliseconds)."""
    return ms // 1000


def build(root: beam.Pipeline, cfg: QoeConfig, source: beam.PTransform,
          sinks: Optional[Sinks] = None) -> QoeOutputs:
    """Parse -> sessionize -> aggregate + detect (and per-minute delivery rows
    from response reports) -> notify, reading ``source`` (a PTransform from
    PBegin to RawRecords) and writing to ``sinks``. Dead letters of notices
    given up join the parser's in one dead-letter output."""
    parsed = (root
              | "ReadBeacons" >> source
              | "ParseBeacons" >> ParseBeacons(cfg.max_message_bytes, _s(cfg.max_lag_ms),
                                               _s(cfg.max_lead_ms)))
    sessions = parsed.beacons | "SessionizeViews" >> SessionizeViews(
        _s(cfg.inactivity_ms), _s(cfg.max_stall_ms), _s(cfg.complete_ms), _s(cfg.progress_ms))
    views = sessions.views
    metrics = views | "AggregateMetrics" >> AggregateMetrics(cfg.metrics_bucket_ms,
                                                             cfg.inactivity_ms)
    alerts = sessions.progress | "DetectStallClusters" >> DetectStallClusters(
        cfg.thresholds, _s(cfg.detect_every_ms), _s(cfg.close_after_ms),
        _s(cfg.detect_window_ms), view_life_s=_s(cfg.inactivity_ms + cfg.complete_ms),
        shards=cfg.detect_shards, late_s=_s(cfg.watermark_step_ms))
    responses = parsed.beacons | "AggregateResponses" >> AggregateResponses(
        cfg.metrics_bucket_ms, cfg.inactivity_ms)
    dead_letters, notifications, notify_dead = parsed.dead_letters, None, None
    if sinks is not None and sinks.notify is not None:
        notified = alerts | "Notify" >> sinks.notify
        notifications, notify_dead = notified.notifications, notified.dead_letters
        dead_letters = ((parsed.dead_letters, notify_dead) | "AllDeadLetters" >> beam.Flatten())
    outputs = QoeOutputs(parsed.beacons, dead_letters, views, sessions.late, metrics, alerts,
                         responses, notifications)
    if sinks is not None and sinks.everything is not None:
        everything = {"views": views, "metrics": metrics, "alerts": alerts,
                      "dead_letters": dead_letters, "late": sessions.late, "responses": responses}
        if notifications is not None:
            everything["notifications"] = notifications
        _ = everything | "WriteOutputs" >> sinks.everything
    elif sinks is not None:
        for label, pcoll, sink in (("WriteViews", views, sinks.views),
                                   ("WriteMetrics", metrics, sinks.metrics),
                                   ("WriteResponses", responses, sinks.responses),
                                   ("WriteAlerts", alerts, sinks.alerts),
                                   # Not the Flatten: on Prism (Beam 2.62) the sharded WriteToText
                                   # of the parser's and the notifier's dead letters
                                   # flattened reads its own init side input before it
                                   # is ready (EmptySideInput). Same files, two writes.
                                   ("WriteDeadLetters", parsed.dead_letters, sinks.dead_letters),
                                   ("WriteNotifyDeadLetters", notify_dead,
                                    sinks.notify_dead_letters),
                                   ("WriteLateBeacons", sessions.late, sinks.late),
                                   ("WriteAlertSink", alerts, sinks.extra_alerts),
                                   ("WriteDeadLetterSink", dead_letters,
                                    sinks.extra_dead_letters),
                                   ("WriteNotifications", notifications, sinks.notifications)):
            if sink is not None and pcoll is not None:
                _ = pcoll | label >> sink
    if sinks is not None:
        for label, pcoll, sink in (("PublishAlerts", alerts, sinks.alert_stream),
                                   ("PublishDeadLetters", dead_letters,
                                    sinks.dead_letter_stream),
                                   ("WriteViewsTable", views, sinks.views_table),
                                   ("WriteMetricsTable", metrics, sinks.metrics_table)):
            if sink is not None:
                _ = pcoll | label >> sink
    return outputs
