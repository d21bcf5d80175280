"""ReadStream: Kinesis or Pub/Sub as a splittable DoFn, for runners that
execute Python SDFs (the FnApiRunner in batch, Prism, Flink, Dataflow).

The whole stream is one restriction: a Kinesis reader already spreads over
shards and follows resharding, and a Pub/Sub subscription hands messages to
whoever pulls. The restriction carries the reader's positions, so when the
runner checkpoints (``defer_remainder``) the residual resumes exactly where
the primary stopped; the file checkpoint (Kinesis) and Pub/Sub acks are
written by bundle finalization, i.e. only once the runner has committed the
records read. With ``stop_at_latest`` the read is bounded: it ends when the
stream has been read to its tip.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, NamedTuple, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from pipeline.io.streams.checkpoint import Checkpoint
from pipeline.io.streams.uri import KinesisUri, StreamUri
from transforms.parse import METRICS_NAMESPACE

_RUN_S = 1.0            # read this long per bundle before handing back to the runner
# Always resume after a pause: a resume due at once keeps Flink's task
# mailbox busy with the next bundle, so the input channel, and with it the
# checkpoint barrier, was never read (no checkpoint completed under load,
# hence no commits or acks).
_BUSY_RESUME_S = 0.1
_IDLE_RESUME_S = 1.0    # at the tip: ask to be resumed after this
_IDLE_STOP_S = 3.0      # bounded: at the tip this long = the end


END = "end-of-stream"   # claimed when a bounded read is over
# Draining, the watermark walks to its end a step every _DRAIN_STEP_S (see _drain).
_DRAIN_STEP_S = 0.2


class StreamRestriction(NamedTuple):
    positions: Any        # KinesisReader.positions() (dict) or None (Pub/Sub)
    finished: bool
    drain_until_ms: Optional[int] = None   # draining: no more reading; the watermark's end


class Drain(NamedTuple):
    """Claimed when a drain starts: read nothing more, walk the watermark to ``until_ms``."""

    until_ms: int


_READERS: dict = {}     # uri -> the reader of this process's last bundle


class _StreamTracker(RestrictionTracker):
    """Claims reader positions; splits only to checkpoint (no parallel split:
    one reader covers every shard)."""

    def __init__(self, restriction: StreamRestriction, bounded: bool) -> None:
        self._restriction, self._bounded, self._stopped = restriction, bounded, False

    def current_restriction(self) -> StreamRestriction:
        return self._restriction

    def current_progress(self) -> RestrictionProgress:
        done = self._restriction.finished
        return RestrictionProgress(completed=1.0 if done else 0.0, remaining=0.0 if done else 1.0)

    def try_claim(self, positions) -> bool:
        """Claim reading up to ``positions``; claiming END finishes the read
        (the DoFn sees the tracker through a view without other methods)."""
        if self._stopped or self._restriction.finished:
            return False
        current = self._restriction
        if positions is END:
            self._restriction = StreamRestriction(current.positions, True, current.drain_until_ms)
        elif isinstance(positions, Drain):
            self._restriction = StreamRestriction(current.positions, False, positions.until_ms)
        else:
            self._restriction = StreamRestriction(positions, False, current.drain_until_ms)
        return True

    def try_split(self, fraction_of_remainder):
        if self._stopped or self._restriction.finished or fraction_of_remainder != 0:
            return None
        self._stopped = True
        positions, drain = self._restriction.positions, self._restriction.drain_until_ms
        return (StreamRestriction(positions, True, drain),
                StreamRestriction(positions, False, drain))

    def check_done(self) -> None:
        if not (self._stopped or self._restriction.finished):
            raise ValueError("the stream read returned without finishing or checkpointing")

    def is_bounded(self) -> bool:
        return self._bounded


class _ReadStreamFn(beam.DoFn, RestrictionProvider):
    """The DoFn and its own restriction provider (RestrictionParam() finds it)."""

    def __init__(self, stream: StreamUri, checkpoint: Optional[str], max_lag_ms: int,
                 stop_at_latest: bool, stop_file: Optional[str] = None, drain_ms: int = 0,
                 drain_step_ms: int = 600_000) -> None:
        self._stream = stream       # the element is its str(), a label
        self._checkpoint, self._lag, self._bounded = checkpoint, max_lag_ms, stop_at_latest
        self._stop_file, self._drain_ms, self._drain_step = stop_file, drain_ms, drain_step_ms

    # -- restrictions -------------------------------------------------------
    def initial_restriction(self, uri: str) -> StreamRestriction:
        if isinstance(self._stream, KinesisUri):
            return StreamRestriction(Checkpoint(self._checkpoint, uri).load(), False)
        return StreamRestriction(None, False)

    def create_tracker(self, restriction: StreamRestriction) -> _StreamTracker:
        return _StreamTracker(restriction, self._bounded)

    def restriction_size(self, uri: str, restriction: StreamRestriction) -> int:
        return 0 if restriction.finished else 1

    def split(self, uri: str, restriction: StreamRestriction) -> Iterable[StreamRestriction]:
        yield restriction

    def truncate(self, uri: str, restriction: StreamRestriction):
        return None          # draining: nothing more to read

    # -- reading ------------------------------------------------------------
    def setup(self) -> None:
        self._read = Metrics.counter(METRICS_NAMESPACE, "source_messages")

    def _reader(self, uri: str, restriction: StreamRestriction):
        """The reader of this process's last bundle when it can go on where
        the restriction says (a Pub/Sub subscriber keeps its client and its
        memory of message ids, which drops redeliveries); else a new one.
        Process-wide: a runner may hand each resumption of the one
        restriction to another instance of this DoFn."""
        parsed = self._stream
        cached = _READERS.get(uri)
        if isinstance(parsed, KinesisUri):
            if cached is not None and cached.positions() == (restriction.positions or {}):
                return cached
            from pipeline.io.streams.kinesis import KinesisReader
            if cached is not None:
                cached.close()           # positions elsewhere: replaced, not kept open
            reader = KinesisReader(parsed, Checkpoint(self._checkpoint, str(parsed)),
                                   positions=restriction.positions or {})
        elif cached is not None:
            return cached
        else:
            from pipeline.io.streams.pubsub import PubSubReader
            reader = PubSubReader(parsed)
        _READERS[uri] = reader
        return reader

    def _drain(self, tracker, watermark) -> None:
        """One drain step: the watermark moves on by at most ``drain_step_ms``
        toward the end of the drain (the last arrival + drain_ms, so every
        view expires and every alert closes), then the read resumes a second
        later; at the end it finishes. What was read is committed when its
        bundles are finalized, as always.

        Not one jump to the end: on a runner that holds no watermark for
        pending timers (the DirectRunner; Flink 1.19's portable operators at
        a drain) what a timer emits is as late as the step that fired it, and
        the detectors' per-viewer state allows one step of that (``late_s``)."""
        current = watermark.current_watermark()
        now_ms = int(time.time() * 1000) - self._lag
        current_ms = (current.micros // 1000 if current is not None and
                      current.micros // 1000 > 0 else now_ms)
        until = tracker.current_restriction().drain_until_ms
        if until is None:
            until = current_ms + self._lag + self._drain_ms
            tracker.try_claim(Drain(until))
        if current_ms >= until:
            tracker.try_claim(END)
            return
        watermark.set_watermark(Timestamp(micros=min(until, current_ms + self._drain_step) * 1000))
        tracker.defer_remainder(Duration(seconds=_DRAIN_STEP_S))

    def _read_stream(self, uri: str, tracker, watermark, finalizer) -> Iterable[TimestampedValue]:
        self._read.inc(0)       # reported even when nothing is read: a read of 0 is accounted
        if tracker.current_restriction().drain_until_ms is not None or (
                self._stop_file and FileSystems.exists(self._stop_file)):
            self._drain(tracker, watermark)
            return
        reader = self._reader(uri, tracker.current_restriction())
        started = quiet_since = time.monotonic()
        while True:
            if self._stop_file and FileSystems.exists(self._stop_file):
                self._drain(tracker, watermark)
                return
            records = reader.poll()
            if records:
                quiet_since = time.monotonic()
                token = reader.positions()
                # Kinesis: the positions are the restriction; Pub/Sub: ack ids, not state.
                if not tracker.try_claim(token if isinstance(token, dict) else None):
                    return
                # Durable (checkpoint file, acks) only once the runner committed this output.
                finalizer.register(lambda r=reader, t=token: r.commit(t))
                self._read.inc(len(records))
                for record in records:
                    yield TimestampedValue(record, Timestamp(micros=(record.arrival_ms or 0) * 1000))
            mark = reader.watermark_ms()
            if mark is not None:
                candidate = Timestamp(micros=(mark - self._lag) * 1000)
                current = watermark.current_watermark()
                if current is None or candidate > current:
                    watermark.set_watermark(candidate)
            if reader.caught_up and not records:
                if not self._bounded:
                    tracker.defer_remainder(Duration(seconds=_IDLE_RESUME_S))
                    return
                if time.monotonic() - quiet_since >= _IDLE_STOP_S:
                    tracker.try_claim(END)
                    return
                time.sleep(0.1)
            elif not self._bounded and time.monotonic() - started >= _RUN_S:
                tracker.defer_remainder(Duration(seconds=_BUSY_RESUME_S))
                return


_WATERMARK = ManualWatermarkEstimator.default_provider()


class _BoundedReadFn(_ReadStreamFn):
    def process(self, uri: str, finalizer=beam.DoFn.BundleFinalizerParam,
                tracker=beam.DoFn.RestrictionParam(),
                watermark=beam.DoFn.WatermarkEstimatorParam(_WATERMARK),
                ) -> Iterable[TimestampedValue]:
        # The finalizer comes first: Beam fills positional placeholders up to
        # the last one and passes the tracker and estimator by keyword.
        yield from self._read_stream(uri, tracker, watermark, finalizer)


class _UnboundedReadFn(_ReadStreamFn):
    @beam.DoFn.unbounded_per_element()
    def process(self, uri: str, finalizer=beam.DoFn.BundleFinalizerParam,
                tracker=beam.DoFn.RestrictionParam(),
                watermark=beam.DoFn.WatermarkEstimatorParam(_WATERMARK),
                ) -> Iterable[TimestampedValue]:
        # The finalizer comes first: Beam fills positional placeholders up to
        # the last one and passes the tracker and estimator by keyword.
        yield from self._read_stream(uri, tracker, watermark, finalizer)


class ReadStream(beam.PTransform):
    """Read a stream with a splittable DoFn.

    Input:  PBegin.
    Output: PCollection[RawRecord] timestamped at arrival; bounded with
            ``stop_at_latest``, else unbounded.

    Args:
      uri: the stream (pipeline/io/streams/uri.py).
      checkpoint: Kinesis positions file, read at start and written when a
        bundle is finalized (None: the runner's checkpoints only).
      max_lag_ms: the watermark trails the reader's by this much.
      stop_at_latest: end once the stream is read to its tip.
      stop_file: drain and end once this path exists (any Beam filesystem):
        a stop requested from outside, e.g. by ``stallwatch run`` on Ctrl-C.
      drain_ms: draining, the watermark goes this far past the last arrival
        (every view expires, every alert closes) before the read ends, in
        steps of at most ``drain_step_ms``.
    """

    def __init__(self, uri: StreamUri, checkpoint: Optional[str], max_lag_ms: int,
                 stop_at_latest: bool, stop_file: Optional[str] = None,
                 drain_ms: int = 0, drain_step_ms: int = 600_000) -> None:
        super().__init__()
        self._uri, self._checkpoint = uri, checkpoint
        self._lag, self._bounded = max_lag_ms, stop_at_latest
        self._stop_file, self._drain_ms, self._drain_step = stop_file, drain_ms, drain_step_ms

    def expand(self, root: beam.pvalue.PBegin) -> beam.PCollection:
        kind = _BoundedReadFn if self._bounded else _UnboundedReadFn
        return (root
                | "Stream" >> beam.Create([str(self._uri)])
                | "Read" >> beam.ParDo(kind(self._uri, self._checkpoint, self._lag, self._bounded,
                                           self._stop_file, self._drain_ms, self._drain_step)))
