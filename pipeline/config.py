"""QoeConfig: QoeOptions turned into one frozen, validated value."""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Optional
from urllib.parse import urlparse

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.options import QoeOptions
from transforms.thresholds import Thresholds

# Streaming sources that later issues add; named so the error says what to do.
_PLANNED_SCHEMES = {"pubsub": "Pub/Sub", "kinesis": "Kinesis"}
_FILE_SCHEMES = ("", "file", "gs")


class ConfigError(ValueError):
    """A flag value that cannot work; the message is one line for the user."""


@dataclasses.dataclass(frozen=True)
class QoeConfig:
    source_pattern: str              # file glob (local or gs://)
    output: str                      # directory
    alerts_path: Optional[str]
    inactivity_s: int
    complete_s: int
    max_stall_s: int
    max_message_bytes: int
    max_lag_s: int
    max_lead_s: int
    metrics_bucket_ms: int
    thresholds: Thresholds
    streaming: bool = False
    replay_speed: float = 0.0
    replay_tick_s: int = 5
    # Streaming-only knobs; 0 in batch, where every view is in before detection runs.
    progress_s: int = 0
    detect_every_s: int = 0
    detect_window_s: int = 0
    close_after_s: int = 600

    @property
    def local_output(self) -> bool:
        return not self.output.startswith("gs://")


def _file_uri(uri: str, what: str, instead: str) -> tuple[str, str]:
    """(scheme, path) of a file-like URI; planned stream schemes get a clear 'not yet'."""
    scheme = urlparse(uri).scheme if "://" in uri else ""
    if scheme in _PLANNED_SCHEMES:
        raise ConfigError(f"{_PLANNED_SCHEMES[scheme]} {what} ({scheme}://...) are not supported yet; "
                          f"use {instead}")
    if scheme not in _FILE_SCHEMES:
        raise ConfigError(f"unsupported {what[:-1]} scheme {scheme}://; use {instead}")
    return scheme, uri[len("file://"):] if scheme == "file" else uri


def source_pattern(uri: Optional[str]) -> str:
    """A file glob for a SOURCE URI; raises ConfigError for anything else."""
    if not uri:
        raise ConfigError("--source is required (a file, directory or glob of NDJSON beacons)")
    scheme, path = _file_uri(uri, "sources", "a file, directory or glob of NDJSON beacons")
    if scheme == "gs":
        return uri.rstrip("/") + "/*" if uri.endswith("/") else uri
    if os.path.isdir(path):
        path = os.path.join(path, "*.ndjson*") if glob.glob(os.path.join(path, "*.ndjson*")) \
            else os.path.join(path, "*")
    if not [p for p in glob.glob(path) if os.path.isfile(p)]:
        raise ConfigError(f"--source {uri}: no files match")
    return os.path.abspath(path)


def _output(uri: Optional[str]) -> str:
    if not uri:
        raise ConfigError("--output is required (a directory for the results)")
    if uri.startswith("gs://"):
        return uri.rstrip("/")
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"--output {uri}: exists and is not a directory")
    return os.path.abspath(path)


def _alerts(uri: Optional[str]) -> Optional[str]:
    if not uri:
        return None
    return _file_uri(uri, "alert sinks", "a JSONL file path")[1]


def to_config(options: PipelineOptions) -> QoeConfig:
    """Validate the flags; raises ConfigError naming the flag at fault."""
    o = options.view_as(QoeOptions)
    positive = {"--inactivity_s": o.inactivity_s, "--complete_s": o.complete_s,
                "--max_stall_s": o.max_stall_s,
                "--max_message_bytes": o.max_message_bytes,
                "--metrics_bucket_s": o.metrics_bucket_s}
    for flag, value in {"--max_lag_s": o.max_lag_s, "--max_lead_s": o.max_lead_s}.items():
        if value < 0:
            raise ConfigError(f"{flag} must be >= 0, got {value}")
    for flag, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{flag} must be > 0, got {value}")
    streaming = bool(options.view_as(StandardOptions).streaming)
    for flag, value in {"--replay_speed": o.replay_speed, "--progress_s": o.progress_s,
                        "--detect_every_s": o.detect_every_s,
                        "--detect_window_s": o.detect_window_s}.items():
        if value < 0:
            raise ConfigError(f"{flag} must be >= 0, got {value}")
    for flag, value in {"--replay_tick_s": o.replay_tick_s,
                        "--close_after_s": o.close_after_s}.items():
        if value <= 0:
            raise ConfigError(f"{flag} must be > 0, got {value}")
    if o.complete_s > o.inactivity_s:
        raise ConfigError(f"--complete_s ({o.complete_s}) must not exceed --inactivity_s ({o.inactivity_s})")
    try:
        thresholds = Thresholds(
            min_viewers=o.min_viewers, bucket_ms=o.bucket_ms, content_alpha=o.content_alpha,
            min_rate_ratio=o.min_rate_ratio, delivery_bucket_ms=o.delivery_bucket_s * 1000,
            delivery_alpha=o.delivery_alpha, viewer_alpha=o.viewer_alpha)
    except ValueError as exc:
        raise ConfigError(f"--{exc}") from None
    return QoeConfig(
        source_pattern=source_pattern(o.source),
        output=_output(o.output),
        alerts_path=_alerts(o.alerts),
        inactivity_s=o.inactivity_s,
        complete_s=o.complete_s,
        max_stall_s=o.max_stall_s,
        max_message_bytes=o.max_message_bytes,
        max_lag_s=o.max_lag_s,
        max_lead_s=o.max_lead_s,
        metrics_bucket_ms=o.metrics_bucket_s * 1000,
        thresholds=thresholds,
        streaming=streaming,
        replay_speed=o.replay_speed,
        replay_tick_s=o.replay_tick_s,
        progress_s=o.progress_s if streaming else 0,
        detect_every_s=o.detect_every_s if streaming else 0,
        detect_window_s=o.detect_window_s if streaming else 0,
        close_after_s=o.close_after_s,
    )
