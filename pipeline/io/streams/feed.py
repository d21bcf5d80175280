"""A live stream fed to the DirectRunner's streaming engine.

The DirectRunner runs no splittable DoFn in streaming (docs/io.md), so no
Beam source of ours can read Kinesis there, and its native Pub/Sub read
acks before emitting and stamps a wall-clock watermark that drops anything
older as late. It does run a TestStream whose events come from a
TestStreamService over gRPC (pipeline/io/replay.py uses it for files).
``StreamFeed`` is such a service's reader for a live stream: it polls a
reader (Kinesis or Pub/Sub), sends what arrived in each tick as one bundle
timestamped at arrival, moves the watermark to the reader's watermark minus
``max_lag_ms`` (event time is never earlier than arrival minus that, see
ParseBeacons), and commits the reader's positions once the bundle has been
taken: the generator only resumes when the runner asks for the next event.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterator, Optional, Protocol

from apache_beam.testing import test_stream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from pipeline.io.replay import TAG, WatermarkSteps, to_protos
from transforms.model import RawRecord

LOG = logging.getLogger(__name__)


class StreamReader(Protocol):
    stats: dict

    def poll(self) -> list[RawRecord]: ...
    @property
    def caught_up(self) -> bool: ...
    def watermark_ms(self) -> Optional[int]: ...
    def positions(self): ...
    def commit(self, positions) -> None: ...
    def close(self) -> None: ...


class StreamFeed:
    """TestStream events from a live reader.

    Args:
      reader: a KinesisReader or PubSubReader.
      tick_ms: wall time gathered into one bundle.
      max_lag_ms: the watermark trails the reader's by this much.
      drain_ms: when the feed stops, the watermark goes this far past the
        last arrival, so open views complete and alerts close.
      stop_at_latest: stop once the reader has caught up (and nothing came
        for ``idle_ms``): a bounded read of what the stream holds.
      max_batch: at most this many records per bundle.
      step_ms: the largest watermark step (replay.WatermarkSteps).
    """

    def __init__(self, reader: StreamReader, tick_ms: int, max_lag_ms: int, drain_ms: int,
                 stop_at_latest: bool = False, idle_ms: int = 3_000, max_batch: int = 20_000,
                 step_ms: int = 600_000,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._reader, self._tick, self._lag, self._drain = reader, tick_ms, max_lag_ms, drain_ms
        self._stop_at_latest, self._idle, self._max_batch = stop_at_latest, idle_ms, max_batch
        self._clock, self._sleep = clock, sleep
        self._step = step_ms
        self.stop_requested = threading.Event()
        self.records = 0
        self.last_arrival_ms: Optional[int] = None
        self.finished = False        # the runner took every event, the drain included

    def read_multiple(self, _tags) -> Iterator:
        """The TestStreamService entry point (times in microseconds, see replay.to_protos)."""
        for event in self.events():
            yield from to_protos(event)
        self.finished = True

    def events(self) -> Iterator:
        watermark = WatermarkSteps(self._step)
        quiet_since = self._clock()
        while not self.stop_requested.is_set():
            batch = self._gather()
            token = self._reader.positions()
            if batch:
                quiet_since = self._clock()
                self.records += len(batch)
                self.last_arrival_ms = max([self.last_arrival_ms or 0] +
                                           [r.arrival_ms or 0 for r in batch])
                yield test_stream.ElementEvent(
                    [TimestampedValue(r, Timestamp(micros=(r.arrival_ms or 0) * 1000)) for r in batch],
                    TAG)
            mark = self._reader.watermark_ms()
            if mark is not None:
                yield from watermark.advance(mark - self._lag)
            self._reader.commit(token)       # the runner took the bundle: it is delivered
            if (self._stop_at_latest and self._reader.caught_up
                    and (self._clock() - quiet_since) * 1000 >= self._idle):
                LOG.info("stream caught up: stopping after %d records", self.records)
                break
        end = max(self.last_arrival_ms or 0, (watermark.value or 0) + self._lag)
        yield from watermark.advance(end + self._drain)

    def _gather(self) -> list[RawRecord]:
        """Records that arrive within one tick (or up to max_batch)."""
        deadline = self._clock() + self._tick / 1000
        batch: list[RawRecord] = []
        while not self.stop_requested.is_set():
            got = self._reader.poll()
            batch.extend(got)
            if len(batch) >= self._max_batch or self._clock() >= deadline:
                break
            if not got:
                if self._stop_at_latest and self._reader.caught_up and not batch:
                    self._sleep(0.1)
                    break
                self._sleep(min(0.1, max(0.0, deadline - self._clock())))
        return batch
