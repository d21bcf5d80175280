"""QoeConfig: QoeOptions turned into one frozen, validated value."""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from typing import Optional
from urllib.parse import urlparse

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.options import QoeOptions
from pipeline.io.streams import uri as stream_uri
from transforms.thresholds import Thresholds

_FILE_SCHEMES = ("", "file", "gs")
_BQ_TABLE = re.compile(r"^[a-z][-a-z0-9.:]{4,61}[a-z0-9]:[A-Za-z0-9_]{1,1024}\.[-\w ]{1,1024}$")


class ConfigError(ValueError):
    """A flag value that cannot work; the message is one line for the user."""


@dataclasses.dataclass(frozen=True)
class QoeConfig:
    source_pattern: str              # file glob (local or gs://); "" for a stream source
    output: str                      # directory
    alerts_path: Optional[str]       # extra JSONL file of alerts
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
    detect_shards: int = 16
    # Streams (docs/io.md): URIs of the source and of extra sinks.
    source_stream: Optional[str] = None      # pubsub://... or kinesis://...
    alerts_stream: Optional[str] = None
    dead_letter_path: Optional[str] = None   # extra JSONL file of dead letters
    dead_letter_stream: Optional[str] = None
    stop_at_latest: bool = False
    checkpoint: Optional[str] = None         # reader positions (local JSON file)
    stream_tick_s: float = 1.0
    views_table: Optional[str] = None        # BigQuery PROJECT:DATASET.TABLE
    metrics_table: Optional[str] = None

    @property
    def local_output(self) -> bool:
        return not self.output.startswith("gs://")

    @property
    def watermark_step_ms(self) -> int:
        """The largest step a replay, a stream feed or a drain moves the
        watermark by: what a timer fires in one step reaches the next stages
        at most this late (runners that hold no watermark for timers), so
        state that waits for late input waits this long (half the
        inactivity, between 1 and 10 minutes)."""
        return min(600_000, max(60_000, self.inactivity_s * 500))


def _file_uri(uri: str, what: str, instead: str) -> tuple[str, str]:
    """(scheme, path) of a file-like URI."""
    scheme = urlparse(uri).scheme if "://" in uri else ""
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


def _stream(flag: str, uri: str, want_topic: bool) -> str:
    try:
        stream_uri.parse(uri, want_topic=want_topic)
    except stream_uri.StreamUriError as exc:
        raise ConfigError(f"{flag} {exc}") from None
    return uri


def _extra_sink(flag: str, uri: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """(file path, stream URI) of an extra sink flag; at most one is set."""
    if not uri:
        return None, None
    if stream_uri.is_stream(uri):
        return None, _stream(flag, uri, want_topic=True)
    return _file_uri(uri, f"{flag[2:]} sinks", "a JSONL file path, pubsub://projects/P/topics/T "
                     "or kinesis://STREAM")[1], None


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
                        "--close_after_s": o.close_after_s,
                        "--detect_shards": o.detect_shards}.items():
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
    if o.stream_tick_s <= 0:
        raise ConfigError(f"--stream_tick_s must be > 0, got {o.stream_tick_s}")
    source_stream = _stream("--source", o.source, False) if stream_uri.is_stream(o.source) else None
    pattern = "" if source_stream else source_pattern(o.source)
    if source_stream and not streaming and not o.stop_at_latest:
        raise ConfigError(f"--source {o.source} is a stream: add --streaming, or "
                          "--stop_at_latest for a bounded (batch) read to its end")
    if o.stop_at_latest and not source_stream:
        raise ConfigError("--stop_at_latest applies to pubsub:// and kinesis:// sources only")
    output = _output(o.output)
    for flag, table in (("--views_table", o.views_table), ("--metrics_table", o.metrics_table)):
        if table and not _BQ_TABLE.match(table):
            raise ConfigError(f"{flag} {table}: expected PROJECT:DATASET.TABLE")
    alerts_path, alerts_stream = _extra_sink("--alerts", o.alerts)
    dead_letter_path, dead_letter_stream = _extra_sink("--dead_letter", o.dead_letter)
    checkpoint = o.checkpoint
    if source_stream and not checkpoint and not output.startswith("gs://"):
        checkpoint = os.path.join(output, "_checkpoints", "source.json")
    return QoeConfig(
        source_pattern=pattern,
        output=output,
        alerts_path=alerts_path,
        alerts_stream=alerts_stream,
        dead_letter_path=dead_letter_path,
        dead_letter_stream=dead_letter_stream,
        source_stream=source_stream,
        stop_at_latest=bool(o.stop_at_latest),
        checkpoint=checkpoint,
        stream_tick_s=o.stream_tick_s,
        views_table=o.views_table,
        metrics_table=o.metrics_table,
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
        detect_shards=o.detect_shards,
    )
