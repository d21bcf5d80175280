"""Sources and sinks: NDJSON files in; Parquet and JSONL out. Rows live here, next to their schema."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import glob
import os
import pickle
import shutil
import zlib
from typing import Any, Callable, Iterable, NamedTuple, Optional

import apache_beam as beam
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam import coders
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import Timestamp

from transforms.model import (Alert, Beacon, DeadLetter, MetricRow, Notification, RawRecord,
                              ResponseRow, View)
from transforms.parse import METRICS_NAMESPACE

VIEWS = "views"
METRICS = "metrics"
RESPONSES = "responses"
ALERTS = "alerts"
DEAD_LETTERS = "dead_letter"
LATE = "late_beacon"
NOTIFICATIONS = "notifications"
SUMMARY = "run_summary.json"

_STALL = pa.struct([("start_ms", pa.int64()), ("duration_ms", pa.int64()),
                    ("playhead_ms", pa.int64()), ("rendition", pa.string()),
                    ("bitrate_bps", pa.int64()), ("playhead_estimated", pa.bool_()),
                    ("playhead_uncertainty_ms", pa.int64()), ("video_id", pa.string())])
_RANGE = pa.struct([("start_ms", pa.int64()), ("end_ms", pa.int64()), ("rendition", pa.string()),
                    ("video_id", pa.string())])

VIEW_SCHEMA = pa.schema([
    ("view_key", pa.string()), ("view_id", pa.string()), ("video_id", pa.string()),
    ("viewer_id", pa.string()), ("start_ms", pa.int64()), ("end_ms", pa.int64()),
    ("events", pa.int64()), ("duplicate_events", pa.int64()),
    ("watch_ms", pa.int64()), ("playing_ms", pa.int64()), ("play_requested", pa.bool_()),
    ("startup_ms", pa.int64()), ("exited_before_start", pa.bool_()),
    ("playback_failure", pa.bool_()), ("startup_failure", pa.bool_()),
    ("business_error", pa.bool_()), ("error_code", pa.string()),
    ("rebuffer_count", pa.int64()), ("rebuffer_ms", pa.int64()),
    ("rebuffer_pct", pa.float64()), ("rebuffer_per_min", pa.float64()),
    ("seek_count", pa.int64()), ("seek_ms", pa.int64()), ("seek_latency_ms", pa.float64()),
    ("max_playhead_ms", pa.int64()), ("avg_bitrate_bps", pa.float64()),
    ("max_bitrate_bps", pa.int64()), ("upshifts", pa.int64()), ("downshifts", pa.int64()),
    ("force_ended", pa.bool_()), ("stalls", pa.list_(_STALL)), ("played", pa.list_(_RANGE)),
    ("cdn", pa.string()), ("asn", pa.string()), ("country", pa.string()),
    ("browser", pa.string()), ("os", pa.string()), ("device", pa.string()),
    ("player_name", pa.string()), ("player_version", pa.string()),
    ("rendition", pa.string()), ("stream_type", pa.string()),
    ("video_duration_ms", pa.int64()), ("protocol", pa.string()),
    ("reported_startup_ms", pa.int64()), ("reported_rebuffer_ms", pa.int64()),
    ("program_offset_ms", pa.int64()), ("program_time_from", pa.string()),
    ("ad_breaks", pa.int64()), ("ads", pa.int64()), ("ad_ms", pa.int64()),
    ("version", pa.int64()),
])

METRIC_SCHEMA = pa.schema([
    ("minute_ms", pa.int64()), ("dimension", pa.string()), ("value", pa.string()),
    ("views", pa.int64()), ("watch_ms", pa.int64()), ("rebuffer_ms", pa.int64()),
    ("rebuffer_count", pa.int64()), ("startup_p50_ms", pa.float64()),
    ("startup_p95_ms", pa.float64()), ("rebuffer_pct", pa.float64()),
    ("rebuffer_per_min", pa.float64()), ("playback_failure_pct", pa.float64()),
    ("ebvs_pct", pa.float64()), ("version", pa.int64()),
])

RESPONSE_SCHEMA = pa.schema([
    ("minute_ms", pa.int64()), ("dimension", pa.string()), ("value", pa.string()),
    ("requests", pa.int64()), ("http_errors", pa.int64()), ("http_error_pct", pa.float64()),
    ("ttfb_p50_ms", pa.float64()), ("ttfb_p95_ms", pa.float64()), ("ttlb_p50_ms", pa.float64()),
    ("version", pa.int64()),
])


_BQ_TYPES = {pa.int64(): "INTEGER", pa.float64(): "FLOAT", pa.string(): "STRING",
             pa.bool_(): "BOOLEAN"}


def _bq_field(field: pa.Field) -> dict:
    kind = field.type
    mode = "NULLABLE"
    if pa.types.is_list(kind):
        kind, mode = kind.value_type, "REPEATED"
    if pa.types.is_struct(kind):
        return {"name": field.name, "type": "RECORD", "mode": mode,
                "fields": [_bq_field(kind.field(i)) for i in range(kind.num_fields)]}
    return {"name": field.name, "type": _BQ_TYPES[kind], "mode": mode}


def bigquery_schema(schema: pa.Schema) -> dict:
    """The BigQuery table schema of a Parquet schema: rows are defined once."""
    return {"fields": [_bq_field(field) for field in schema]}


class WriteBigQueryRows(beam.PTransform):
    """Rows to a BigQuery table (created if needed, appended to).

    Input:  PCollection[View] or PCollection[MetricRow].
    Output: the WriteToBigQuery result.

    Args:
      table: ``project:dataset.table``.
      to_row, schema: the row function and Parquet schema of the output
        (view_row + VIEW_SCHEMA, metric_row + METRIC_SCHEMA).
      streaming: streaming inserts; batch uses load jobs (needs --temp_location).
    A row's ``version`` tells its updates apart: query the highest per key.
    """

    def __init__(self, table: str, to_row, schema: pa.Schema, streaming: bool) -> None:
        super().__init__()
        self._table, self._to_row, self._schema, self._streaming = table, to_row, schema, streaming

    def expand(self, items: beam.PCollection):
        from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery
        method = (WriteToBigQuery.Method.STREAMING_INSERTS if self._streaming
                  else WriteToBigQuery.Method.FILE_LOADS)
        return (items
                | "ToRow" >> beam.Map(self._to_row)
                | "Write" >> WriteToBigQuery(
                    self._table, schema=bigquery_schema(self._schema), method=method,
                    create_disposition=BigQueryDisposition.CREATE_IF_NEEDED,
                    write_disposition=BigQueryDisposition.WRITE_APPEND))


def view_row(view: View) -> dict:
    row = {f.name: getattr(view, f.name) for f in dataclasses.fields(View)
           if f.name not in ("stalls", "played")}
    row["stalls"] = [dataclasses.asdict(s) for s in view.stalls]
    row["played"] = [dataclasses.asdict(r) for r in view.played]
    row["rebuffer_pct"] = view.rebuffer_pct
    row["rebuffer_per_min"] = view.rebuffer_per_min
    row["seek_latency_ms"] = view.seek_latency_ms
    return row


def metric_row(row: MetricRow) -> dict:
    return dataclasses.asdict(row)


def response_row(row: ResponseRow) -> dict:
    return dataclasses.asdict(row)


def _json_default(value):
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot serialize {type(value).__name__}")


def alert_json(alert: Alert) -> str:
    record = dataclasses.asdict(alert)
    record["breakdown"] = {name: dict(values) for name, values in alert.breakdown}
    return orjson.dumps(record, default=_json_default).decode("utf-8")


def notification_json(sent: Notification) -> str:
    return _record_json(sent)


def dead_letter_json(dead: DeadLetter) -> str:
    return orjson.dumps(dataclasses.asdict(dead)).decode("utf-8")


def alert_message(alert: Alert) -> tuple[str, bytes, dict]:
    """An alert as a stream message: keyed by alert_id (Pub/Sub ordering key,
    Kinesis partition key) so versions of one alert stay in order and
    consumers can de-duplicate; the highest ``version`` is the current state."""
    return alert.alert_id, alert_json(alert).encode("utf-8"), {
        "alert_id": alert.alert_id, "version": str(alert.version),
        "status": alert.status.value, "cause": alert.cause.value}


def dead_letter_message(dead: DeadLetter) -> tuple[str, bytes, dict]:
    """A dead letter as a stream message, keyed by its source position."""
    return dead.source, dead_letter_json(dead).encode("utf-8"), {
        "reason": dead.reason, "source": dead.source}


def beacon_json(beacon: Beacon) -> str:
    return _record_json(beacon)


def _record_json(record) -> str:
    """A flat model (enums as their values) as one JSON line."""
    return orjson.dumps(dataclasses.asdict(record), default=_json_default).decode("utf-8")


class _ReadLinesFn(beam.DoFn):
    """One RawRecord per non-blank line, its source ``path:line``; counts them
    (``source_messages``) and the blank lines."""

    def __init__(self) -> None:
        self._blank = Metrics.counter(METRICS_NAMESPACE, "blank_lines")
        self._read = Metrics.counter(METRICS_NAMESPACE, "source_messages")

    def process(self, readable: fileio.ReadableFile) -> Iterable[RawRecord]:
        path = readable.metadata.path
        read = 0
        with readable.open() as handle:
            for number, line in enumerate(iter(handle.readline, b""), 1):
                payload = line.rstrip(b"\r\n")
                if not payload.strip():
                    self._blank.inc()
                    continue
                read += 1
                yield RawRecord(payload, f"{path}:{number}")
        self._read.inc(read)


class ReadBeaconFiles(beam.PTransform):
    """Read NDJSON beacon files.

    Input:  PBegin.
    Output: PCollection[RawRecord], one per non-blank line (gzip/bzip2 files
            are decompressed by extension). Blank lines are counted, not parsed.

    Args:
      pattern: a local or gs:// glob.
    """

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self._pattern = pattern

    def expand(self, root: beam.pvalue.PBegin) -> beam.PCollection:
        return (root
                | "MatchFiles" >> fileio.MatchFiles(self._pattern)
                | "OpenFiles" >> fileio.ReadMatches()
                | "SplitLines" >> beam.ParDo(_ReadLinesFn()))


class ReplayBeaconFiles(beam.PTransform):
    """Files replayed as a stream (see pipeline/io/replay.py).

    Input:  PBegin.
    Output: unbounded PCollection[RawRecord] timestamped at arrival, from the
            TestStreamService at ``endpoint`` (DirectRunner only).
    """

    def __init__(self, endpoint: str) -> None:
        super().__init__()
        self._endpoint = endpoint

    def expand(self, root: beam.pvalue.PBegin) -> beam.PCollection:
        from apache_beam.testing.test_stream import TestStream
        from pipeline.io.replay import CODER, TAG
        return (root | "Replay" >> TestStream(coder=CODER, endpoint=self._endpoint,
                                              output_tags=[TAG]))[TAG]


class Sinks(NamedTuple):
    """Where each output goes; tests pass None to skip a sink."""

    views: Optional[beam.PTransform]
    metrics: Optional[beam.PTransform]
    alerts: Optional[beam.PTransform]
    dead_letters: Optional[beam.PTransform]
    late: Optional[beam.PTransform] = None
    extra_alerts: Optional[beam.PTransform] = None
    everything: Optional[beam.PTransform] = None   # one sink for the dict of all outputs
    extra_dead_letters: Optional[beam.PTransform] = None
    alert_stream: Optional[beam.PTransform] = None        # Pub/Sub or Kinesis
    dead_letter_stream: Optional[beam.PTransform] = None
    views_table: Optional[beam.PTransform] = None         # BigQuery
    metrics_table: Optional[beam.PTransform] = None
    responses: Optional[beam.PTransform] = None           # per-minute delivery rows
    notify: Optional[beam.PTransform] = None    # alerts -> NotifyOutputs (pipeline/io/notify.py)
    notifications: Optional[beam.PTransform] = None       # what receivers accepted
    notify_dead_letters: Optional[beam.PTransform] = None  # notices given up (batch files)


def with_tables(sinks: Sinks, views: Optional[str], metrics: Optional[str],
                streaming: bool) -> Sinks:
    """``sinks`` plus views / metrics written to BigQuery tables (None: not)."""
    return sinks._replace(
        views_table=WriteBigQueryRows(views, view_row, VIEW_SCHEMA, streaming) if views else None,
        metrics_table=(WriteBigQueryRows(metrics, metric_row, METRIC_SCHEMA, streaming)
                       if metrics else None))


def with_streams(sinks: Sinks, alerts: Optional[str], dead_letters: Optional[str]) -> Sinks:
    """``sinks`` plus publishing alerts / dead letters to stream URIs (None: not)."""
    from pipeline.io.streams.sinks import PublishToStream
    return sinks._replace(
        alert_stream=PublishToStream(alerts, alert_message, "alerts_published") if alerts else None,
        dead_letter_stream=(PublishToStream(dead_letters, dead_letter_message,
                                            "dead_letters_published") if dead_letters else None))


def window_sinks(output: str, alerts_path: Optional[str] = None, window_s: int = 600,
                 dead_letter_path: Optional[str] = None) -> Sinks:
    """The streaming sinks: every output through one WindowedFileSink."""
    return Sinks(None, None, None, None, everything=WindowedFileSink(
        output, alerts_path, window_s, dead_letter_path=dead_letter_path))


class _WriteJsonLines(beam.PTransform):
    def __init__(self, prefix: str, to_json, single_file: bool) -> None:
        super().__init__()
        self._prefix, self._to_json, self._single = prefix, to_json, single_file

    def expand(self, items: beam.PCollection):
        lines = items | "ToJson" >> beam.Map(self._to_json)
        if self._single:
            return lines | "Write" >> beam.io.WriteToText(
                self._prefix, shard_name_template="", num_shards=1)
        return lines | "Write" >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl")


class _WriteParquet(beam.PTransform):
    def __init__(self, prefix: str, to_row, schema: pa.Schema) -> None:
        super().__init__()
        self._prefix, self._to_row, self._schema = prefix, to_row, schema

    def expand(self, items: beam.PCollection):
        return (items
                | "ToRow" >> beam.Map(self._to_row)
                | "Write" >> beam.io.WriteToParquet(
                    self._prefix, self._schema, codec="snappy", file_name_suffix=".parquet"))


class _Target(NamedTuple):
    directory: str
    stem: str
    encode: Callable            # element -> JSON line (str) or Parquet row (dict)
    schema: Optional[pa.Schema]  # None: JSON lines


def _stamp(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
        "%Y%m%dT%H%M%S")


# Each output's rows of one window are spread over this many keys (and
# files), so no key, worker or file holds a whole window of an output.
SINK_SHARDS = 8


class _WindowFilesFn(beam.DoFn):
    """Per (output, window of event time, shard): rows wait in state until
    the watermark passes the window's end, then go to one file; rows that
    come later make the next free pane's file (``-pane001``, …).

    State: ROWS (pickled rows of the pane being filled): at most the rows of
    one output's window that hash to the shard, about 1/SINK_SHARDS of them.
    Timers (event time): FLUSH at the window's end, or at once for a late
    row; FORGET at the end + ``late_ms``, which writes what is left.

    A stateful DoFn rather than a GroupByKey in fixed windows: at a drain,
    Flink 1.19's portable runner fired such windows' panes empty.
    """

    ROWS = userstate.BagStateSpec("rows", coders.BytesCoder())
    FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)
    FORGET = userstate.TimerSpec("forget", TimeDomain.WATERMARK)

    def __init__(self, targets: dict[str, "_Target"], window_ms: int, late_ms: int) -> None:
        self._targets, self._window_ms, self._late_ms = targets, window_ms, late_ms

    def process(self, element, ts=beam.DoFn.TimestampParam,
                rows=beam.DoFn.StateParam(ROWS),
                flush=beam.DoFn.TimerParam(FLUSH),
                forget=beam.DoFn.TimerParam(FORGET)) -> Iterable[str]:
        key, row = element
        rows.add(row)
        end = int(key.split("\x1f")[1]) + self._window_ms
        flush.set(Timestamp(micros=max(end, ts.micros // 1000 + 1) * 1000))
        forget.set(Timestamp(micros=(end + self._late_ms) * 1000))
        return ()

    @userstate.on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam,
                 rows=beam.DoFn.StateParam(ROWS)) -> Iterable[str]:
        stored = [pickle.loads(b) for b in rows.read()]
        if not stored:
            return
        name, start, shard = key.split("\x1f")
        target = self._targets[name]
        suffix = ".jsonl" if target.schema is None else ".parquet"
        number = 0
        while True:            # the next pane: never over a file already there
            path = FileSystems.join(target.directory, f"{target.stem}-{_stamp(int(start))}-"
                                    f"{_stamp(int(start) + self._window_ms)}-s{shard}"
                                    f"-pane{number:03d}{suffix}")
            if not FileSystems.exists(path):
                break
            number += 1
        with FileSystems.create(path) as handle:
            if target.schema is None:
                handle.write("".join(f"{line}\n" for line in stored).encode("utf-8"))
            else:
                pq.write_table(pa.Table.from_pylist(stored, schema=target.schema),
                               handle, compression="snappy")
        rows.clear()
        Metrics.counter(METRICS_NAMESPACE, "files_written").inc()
        yield path

    @userstate.on_timer(FORGET)
    def on_forget(self, key=beam.DoFn.KeyParam,
                  rows=beam.DoFn.StateParam(ROWS)) -> Iterable[str]:
        yield from self.on_flush(key, rows)             # whatever is left, then let go


class WindowedFileSink(beam.PTransform):
    """Streaming sink for every output at once: up to SINK_SHARDS files per
    output and ``window_s`` of event time, written when the watermark passes
    the window (``<stem>-<start>-<end>-s<shard>-pane000.<ext>``); data that comes later lands in
    a later pane's file (nothing is dropped; a window's state is released
    ``late_s`` after its end). Versions of one view, cell or alert may sit in
    different files: the highest version wins.

    Input:  dict of output name -> PCollection (views, metrics, responses,
            alerts, dead_letters, late, notifications); ``alerts_path`` / ``dead_letter_path``
            also get a copy of alerts / dead letters.
    Output: PCollection[str] of the paths written.

    One grouped write for all outputs keeps the graph small, which matters on
    the DirectRunner, whose streaming engine costs per stage and bundle.
    """

    def __init__(self, output: str, alerts_path: Optional[str] = None, window_s: int = 600,
                 late_s: int = 3600, dead_letter_path: Optional[str] = None) -> None:
        super().__init__()
        self._window_s, self._late_s = window_s, late_s
        self._targets = {
            "views": _Target(output, VIEWS, view_row, VIEW_SCHEMA),
            "metrics": _Target(output, METRICS, metric_row, METRIC_SCHEMA),
            "responses": _Target(output, RESPONSES, response_row, RESPONSE_SCHEMA),
            "alerts": _Target(output, ALERTS, alert_json, None),
            "dead_letters": _Target(output, DEAD_LETTERS, dead_letter_json, None),
            "late": _Target(output, LATE, beacon_json, None),
            "notifications": _Target(output, NOTIFICATIONS, notification_json, None),
        }
        self._extra = {}
        for name, path, encode in (("alerts", alerts_path, alert_json),
                                   ("dead_letters", dead_letter_path, dead_letter_json)):
            if path:
                self._targets[f"extra_{name}"] = _Target(
                    os.path.dirname(path) or ".", os.path.splitext(os.path.basename(path))[0],
                    encode, None)
                self._extra[name] = f"extra_{name}"

    def expand(self, outputs: dict):
        names = sorted(name for name in outputs if name in self._targets)
        # One Flatten, then one Map that tells outputs apart by type: a stage
        # per output would cost a bundle per output on every tick.
        kinds = {View: "views", MetricRow: "metrics", ResponseRow: "responses", Alert: "alerts",
                 DeadLetter: "dead_letters", Beacon: "late", Notification: "notifications"}
        return ([outputs[name] for name in names if not name.startswith("extra_")]
                | "AllOutputs" >> beam.Flatten()
                | "Encode" >> beam.FlatMap(_tag, kinds, self._targets, self._extra,
                                           self._window_s * 1000)
                  .with_output_types(tuple[str, bytes])
                | "WriteFiles" >> beam.ParDo(_WindowFilesFn(
                    self._targets, self._window_s * 1000, self._late_s * 1000)))


def _tag(item, kinds: dict, targets: dict, extra: dict, window_ms: int,
         ts=beam.DoFn.TimestampParam):
    """(output\x1fwindow start ms\x1fshard, pickled encoded row) for each target
    of an item; the shard is the row's CRC-32, so a file's rows are a stable set."""
    name = kinds[type(item)]
    row = pickle.dumps(targets[name].encode(item), protocol=pickle.HIGHEST_PROTOCOL)
    start = ts.micros // 1000 // window_ms * window_ms
    shard = f"{zlib.crc32(row) % SINK_SHARDS:02d}"
    yield f"{name}\x1f{start}\x1f{shard}", row
    if name in extra:
        yield f"{extra[name]}\x1f{start}\x1f{shard}", row


def file_sinks(output: str, alerts_path: Optional[str] = None,
               dead_letter_path: Optional[str] = None) -> Sinks:
    """The default sinks: Parquet views/metrics/responses, JSONL alerts and dead letters."""
    join = (lambda name: f"{output}/{name}")
    return Sinks(
        views=_WriteParquet(join(VIEWS), view_row, VIEW_SCHEMA),
        metrics=_WriteParquet(join(METRICS), metric_row, METRIC_SCHEMA),
        alerts=_WriteJsonLines(join(f"{ALERTS}.jsonl"), alert_json, single_file=True),
        dead_letters=_WriteJsonLines(join(DEAD_LETTERS), dead_letter_json, single_file=False),
        late=_WriteJsonLines(join(LATE), beacon_json, single_file=False),
        extra_alerts=(_WriteJsonLines(alerts_path, alert_json, single_file=True)
                      if alerts_path else None),
        extra_dead_letters=(_WriteJsonLines(dead_letter_path, dead_letter_json, single_file=True)
                            if dead_letter_path else None),
        responses=_WriteParquet(join(RESPONSES), response_row, RESPONSE_SCHEMA),
        notifications=_WriteJsonLines(join(f"{NOTIFICATIONS}.jsonl"), notification_json,
                                      single_file=True),
        notify_dead_letters=_WriteJsonLines(join(f"{DEAD_LETTERS}-notify"), dead_letter_json,
                                            single_file=False),
    )


PARTIAL = "_partial"
_OURS = (f"{VIEWS}-*.parquet", f"{METRICS}-*.parquet", f"{RESPONSES}-*.parquet",
         f"{ALERTS}.jsonl", f"{ALERTS}-*.jsonl", f"{DEAD_LETTERS}-*.jsonl", f"{LATE}-*.jsonl",
         f"{NOTIFICATIONS}.jsonl", f"{NOTIFICATIONS}-*.jsonl",
         SUMMARY, "score.json", "report.html")


def clear_outputs(output: str) -> None:
    """Remove a previous run's files from a local output directory (ours only)."""
    os.makedirs(output, exist_ok=True)
    for pattern in _OURS:
        for path in glob.glob(os.path.join(output, pattern)):
            os.remove(path)


def start_staging(output: str) -> str:
    """A fresh OUTPUT/_partial/ for a run to write into (a previous run's
    partial outputs there are removed); OUTPUT itself is not touched."""
    staging = os.path.join(output, PARTIAL)
    if os.path.isdir(staging):
        shutil.rmtree(staging)
    os.makedirs(staging)
    return staging


def finish_staging(staging: str, output: str) -> None:
    """Replace OUTPUT's previous outputs with the finished run's (ours only;
    other files in OUTPUT, e.g. _checkpoints/, stay)."""
    clear_outputs(output)
    for name in sorted(os.listdir(staging)):
        os.replace(os.path.join(staging, name), os.path.join(output, name))
    os.rmdir(staging)
