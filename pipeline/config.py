"""argv -> (PipelineOptions, QoeConfig), once: every flag checked, stream
URIs parsed, times in milliseconds.

``parse(argv)`` is the only place that validates ``stallwatch run``'s argv
(runners/cli.py expands a ``--preset`` before it); the launcher (launch.py)
and the graph (graph.py) read the frozen QoeConfig it returns, the runner
checks (runners/cli.py) the PipelineOptions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import math
import os
import re
from typing import Optional, Sequence
from urllib.parse import urlparse

from apache_beam.options import pipeline_options as beam_options
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions

from pipeline.errors import ConfigError
from pipeline.io import notify
from pipeline.io.notify import Delivery, Receiver
from pipeline.io.streams import uri as stream_uri
from pipeline.io.streams.read import runner_name
from pipeline.io.streams.uri import StreamUri
from pipeline.options import QoeOptions
from transforms.model import Cause
from transforms.thresholds import Thresholds

_FILE_SCHEMES = ("", "file", "gs")
_BQ_TABLE = re.compile(r"^[a-z][-a-z0-9.:]{4,61}[a-z0-9]:[A-Za-z0-9_]{1,1024}\.[-\w ]{1,1024}$")


@dataclasses.dataclass(frozen=True)
class QoeConfig:
    """One run, validated. Every duration is in milliseconds."""

    # Where from and where to.
    source_pattern: str                      # file glob (local or gs://); "" for a stream
    output: str                              # directory (local or gs://)
    alerts_path: Optional[str]               # extra JSONL file of alerts
    source_stream: Optional[StreamUri] = None
    source_uri: str = ""                     # --source as given, for summaries
    alerts_stream: Optional[StreamUri] = None
    dead_letter_path: Optional[str] = None   # extra JSONL file of dead letters
    dead_letter_stream: Optional[StreamUri] = None
    views_table: Optional[str] = None        # BigQuery PROJECT:DATASET.TABLE
    metrics_table: Optional[str] = None
    checkpoint: Optional[str] = None         # reader positions (local JSON file)
    stop_at_latest: bool = False
    # How it runs.
    runner: str = "DirectRunner"             # a class name: FlinkRunner, not a dotted path
    streaming: bool = False
    dry_run: bool = False                    # Dataflow: translate, do not submit
    flink_master: Optional[str] = None       # REST address of a Flink cluster, None if embedded
    # Parsing and views.
    max_message_bytes: int = 1_048_576
    max_lag_ms: int = 300_000
    max_lead_ms: int = 60_000
    inactivity_ms: int = 3_600_000
    complete_ms: int = 60_000
    max_stall_ms: int = 300_000
    metrics_bucket_ms: int = 60_000
    # Detection.
    thresholds: Thresholds = Thresholds()
    detect_shards: int = 16
    close_after_ms: int = 600_000
    # Streaming only: 0 in batch, where every view is in before detection runs.
    progress_ms: int = 0
    detect_every_ms: int = 0
    detect_window_ms: int = 0
    # Paced replays and stream feeds on the DirectRunner.
    replay_speed: float = 0.0                # recorded seconds per wall second; 0: at once
    replay_tick_ms: int = 5_000
    stream_tick_ms: int = 1_000
    # Notifications (none: no --notify).
    notify: tuple[Receiver, ...] = ()
    notify_causes: frozenset[Cause] = frozenset()
    notify_secret: Optional[str] = dataclasses.field(default=None, repr=False)
    notify_ledger: Optional[str] = None      # directory (local or gs://)
    notify_delivery: Delivery = Delivery()
    notify_pending_ms: int = 30_000
    notify_resolve_ms: int = 900_000

    @property
    def local_output(self) -> bool:
        return not self.output.startswith("gs://")

    @property
    def source(self) -> str:
        """The source as the user named it, for summaries."""
        return self.source_uri if self.source_stream else self.source_pattern

    @property
    def watermark_step_ms(self) -> int:
        """The largest step a replay, a stream feed or a drain moves the
        watermark by: what a timer fires in one step reaches the next stages
        at most this late (runners that hold no watermark for timers), so
        state that waits for late input waits this long (half the
        inactivity, between 1 and 10 minutes)."""
        return min(600_000, max(60_000, self.inactivity_ms // 2))

    @property
    def drain_ms(self) -> int:
        """How far past the last record a drain moves the watermark: every
        view expires and every alert closes (nothing fires at +infinity)."""
        return 2 * self.inactivity_ms + self.close_after_ms + 60_000


def parse(argv: Sequence[str]) -> tuple[PipelineOptions, QoeConfig]:
    """``stallwatch run``'s argv as Beam's options and our validated config.

    Raises:
      ConfigError: an unknown flag, a value Beam's parser refuses, or a value
        that cannot work, naming the flag at fault.
    """
    options = check_flags(argv)
    return options, to_config(options)


def check_flags(argv: Sequence[str]) -> PipelineOptions:
    """argv as Beam + stallwatch options; an unknown flag, or a value Beam's
    parser refuses, is a ConfigError (not argparse's usage dump and exit)."""
    options = PipelineOptions(list(argv))
    with _beam_parse_errors_raise(), _quiet("apache_beam.options.pipeline_options"):
        everything = options.get_all_options(drop_default=False, retain_unknown_options=True)
        known = options.get_all_options(drop_default=False)
    unknown = sorted(set(everything) - set(known))
    if unknown:
        raise ConfigError(f"unknown option --{unknown[0]} (see 'stallwatch run --help')")
    _pin_prefixed_options(options, argv, known)
    return options


@contextlib.contextmanager
def _quiet(logger: str):
    """Beam warns of the unknown flags it is asked to keep: we say it once, as an error."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def _beam_parse_errors_raise():
    """Beam's option parser reports a bad value (``--streaming=yes``) through
    argparse's ``error``: the whole usage of every Beam option, then exit 2.
    While flags are checked, its error raises a one-line ConfigError instead."""
    parser_class = beam_options._BeamArgumentParser  # pylint: disable=protected-access

    def error(_parser, message: str):
        raise ConfigError(f"{message} (see 'stallwatch run --help')")

    own = parser_class.__dict__.get("error")
    parser_class.error = error
    try:
        yield
    finally:
        if own is None:
            del parser_class.error
        else:
            parser_class.error = own


def _pin_prefixed_options(options: PipelineOptions, argv: Sequence[str], known: dict) -> None:
    """Keep Beam from reading our flags as abbreviations of its own.

    Beam 2.62's ``view_as(SomeOptions)`` parses argv with only that class's
    flags and argparse's prefix matching on, so ``--output=DIR`` becomes
    PortableOptions' ``--output_executable_path=DIR`` and the Flink job
    server writes a jar over the output directory instead of running the job.
    Every option named longer than a flag we were given, and not given
    itself, is pinned to its default before any view is taken.
    """
    given = {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")}
    defaults = PipelineOptions([]).get_all_options(drop_default=False)
    for name, default in defaults.items():
        if name not in given and any(name.startswith(flag) for flag in given):
            options._all_options[name] = default  # pylint: disable=protected-access


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


def stream(flag: str, uri: str, want_topic: bool) -> StreamUri:
    """A stream URI given to ``flag``, parsed; ConfigError naming the flag."""
    try:
        return stream_uri.parse(uri, want_topic=want_topic)
    except stream_uri.StreamUriError as exc:
        raise ConfigError(f"{flag} {exc}") from None


def _extra_sink(flag: str, uri: Optional[str]) -> tuple[Optional[str], Optional[StreamUri]]:
    """(file path, stream) of an extra sink flag; at most one is set."""
    if not uri:
        return None, None
    if stream_uri.is_stream(uri):
        return None, stream(flag, uri, want_topic=True)
    return _file_uri(uri, f"{flag[2:]} sinks", "a JSONL file path, pubsub://projects/P/topics/T "
                     "or kinesis://STREAM")[1], None


def _check_numbers(o: QoeOptions) -> None:
    at_least = {0: {"--max_lag_s": o.max_lag_s, "--max_lead_s": o.max_lead_s,
                    "--replay_speed": o.replay_speed, "--progress_s": o.progress_s,
                    "--detect_every_s": o.detect_every_s, "--detect_window_s": o.detect_window_s},
                1: {"--inactivity_s": o.inactivity_s, "--complete_s": o.complete_s,
                    "--max_stall_s": o.max_stall_s, "--max_message_bytes": o.max_message_bytes,
                    "--metrics_bucket_s": o.metrics_bucket_s, "--replay_tick_s": o.replay_tick_s,
                    "--close_after_s": o.close_after_s, "--detect_shards": o.detect_shards}}
    for flag, value in at_least[0].items():
        if value < 0:
            raise ConfigError(f"{flag} must be >= 0, got {value}")
    for flag, value in at_least[1].items():
        if value <= 0:
            raise ConfigError(f"{flag} must be > 0, got {value}")
    if o.complete_s > o.inactivity_s:
        raise ConfigError(f"--complete_s ({o.complete_s}) must not exceed --inactivity_s ({o.inactivity_s})")
    if not (math.isfinite(o.stream_tick_s) and o.stream_tick_s >= 0.001):
        raise ConfigError(f"--stream_tick_s must be at least 0.001, got {o.stream_tick_s}")


def _thresholds(o: QoeOptions) -> Thresholds:
    try:
        return Thresholds(
            min_viewers=o.min_viewers, bucket_ms=o.bucket_ms, content_alpha=o.content_alpha,
            min_rate_ratio=o.min_rate_ratio, delivery_bucket_ms=o.delivery_bucket_s * 1000,
            delivery_alpha=o.delivery_alpha, viewer_alpha=o.viewer_alpha)
    except ValueError as exc:
        raise ConfigError(f"--{exc}") from None


def _flink_master(options: PipelineOptions, runner: str) -> Optional[str]:
    """The REST address of the Flink cluster a FlinkRunner job goes to, if any."""
    if runner != "FlinkRunner":
        return None
    master = options.get_all_options().get("flink_master") or "[auto]"
    return None if master.startswith("[") else master


def to_config(options: PipelineOptions) -> QoeConfig:
    """Validate the flags; raises ConfigError naming the flag at fault."""
    o = options.view_as(QoeOptions)
    _check_numbers(o)
    thresholds = _thresholds(o)
    standard = options.view_as(StandardOptions)
    streaming = bool(standard.streaming)
    runner = runner_name(standard.runner or "DirectRunner")
    source_stream = stream("--source", o.source, False) if stream_uri.is_stream(o.source) else None
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
        source_pattern=pattern, output=output, alerts_path=alerts_path,
        source_stream=source_stream, source_uri=o.source, alerts_stream=alerts_stream,
        dead_letter_path=dead_letter_path, dead_letter_stream=dead_letter_stream,
        views_table=o.views_table, metrics_table=o.metrics_table,
        checkpoint=checkpoint, stop_at_latest=bool(o.stop_at_latest),
        runner=runner, streaming=streaming,
        dry_run=bool(options.view_as(TestOptions).dry_run),
        flink_master=_flink_master(options, runner),
        max_message_bytes=o.max_message_bytes,
        max_lag_ms=o.max_lag_s * 1000, max_lead_ms=o.max_lead_s * 1000,
        inactivity_ms=o.inactivity_s * 1000, complete_ms=o.complete_s * 1000,
        max_stall_ms=o.max_stall_s * 1000, metrics_bucket_ms=o.metrics_bucket_s * 1000,
        thresholds=thresholds, detect_shards=o.detect_shards,
        close_after_ms=o.close_after_s * 1000,
        progress_ms=o.progress_s * 1000 if streaming else 0,
        detect_every_ms=o.detect_every_s * 1000 if streaming else 0,
        detect_window_ms=o.detect_window_s * 1000 if streaming else 0,
        replay_speed=o.replay_speed, replay_tick_ms=o.replay_tick_s * 1000,
        stream_tick_ms=int(o.stream_tick_s * 1000),
        **_notify(o, output),
    )


def _ledger(uri: Optional[str], output: str) -> str:
    """--notify_ledger as a local directory it can write, or a gs:// one."""
    if not uri:
        return f"{output}/_notify"
    if uri.startswith("gs://"):
        return uri.rstrip("/")
    _, path = _file_uri(uri, "notify ledgers", "a local directory or gs://BUCKET/PATH")
    path = os.path.abspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--notify_ledger {uri}: cannot create it: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise ConfigError(f"--notify_ledger {uri}: not writable")
    return path


def _notify(o: QoeOptions, output: str) -> dict:
    """The notification fields of QoeConfig, from --notify*."""
    if not o.notify:
        return {}
    receivers = []
    for text in o.notify:
        try:
            receivers.append(notify.receiver(text))
        except ValueError as exc:
            raise ConfigError(f"--notify {exc}") from None
    try:
        causes = frozenset(Cause(c.strip()) for c in o.notify_causes.split(",") if c.strip())
    except ValueError:
        raise ConfigError(f"--notify_causes {o.notify_causes!r}: expected a comma-separated list "
                          "of content, delivery, viewer") from None
    if not causes:
        raise ConfigError("--notify_causes: name at least one of content, delivery, viewer")
    if not (math.isfinite(o.notify_timeout_s) and o.notify_timeout_s > 0):
        raise ConfigError(f"--notify_timeout_s must be > 0, got {o.notify_timeout_s}")
    for flag, value in (("--notify_pending_s", o.notify_pending_s),
                        ("--notify_resolve_s", o.notify_resolve_s)):
        if value < 0:
            raise ConfigError(f"{flag} must be >= 0, got {value}")
    if not 0 <= o.notify_retries <= 20:
        raise ConfigError(f"--notify_retries must be from 0 to 20, got {o.notify_retries}")
    if not (math.isfinite(o.notify_rate_per_min) and o.notify_rate_per_min > 0):
        raise ConfigError(f"--notify_rate_per_min must be > 0, got {o.notify_rate_per_min}")
    return dict(
        notify=tuple(receivers), notify_causes=causes, notify_pending_ms=o.notify_pending_s * 1000,
        notify_resolve_ms=o.notify_resolve_s * 1000,
        notify_secret=o.notify_secret or os.environ.get(notify.SECRET_ENV) or None,
        notify_ledger=_ledger(o.notify_ledger, output),
        notify_delivery=notify.Delivery(timeout_s=o.notify_timeout_s, retries=o.notify_retries,
                                        rate_per_min=o.notify_rate_per_min))
