"""Streaming replay of NDJSON files on the DirectRunner, paced by arrival time.

The DirectRunner's streaming engine runs no splittable DoFn, so no file
source can be unbounded there. It does run a TestStream whose events come
from a TestStreamService over gRPC: the mechanism Interactive Beam uses to
replay recorded streams. ``FileReplay`` is such a service's reader: it merges
the files by arrival time (the collector's ``received_ms``), emits the lines
one tick at a time as elements timestamped at their arrival, advances the
watermark behind them by ``max_lag_ms`` (no bounded event time can be older),
and sleeps so that ``speed`` seconds of recorded time pass per wall second.
The service listens on localhost only and is stopped when the run ends.
"""

from __future__ import annotations

import glob
import heapq
import os
import time
from typing import Callable, Iterator, Optional

import orjson
from apache_beam import coders
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.testing import test_stream
from apache_beam.testing.test_stream_service import TestStreamServiceController
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.model import RawRecord

CODER = coders.PickleCoder()
# Events read back from a TestStreamService carry their tag as a string, so the
# default tag None would never match: watermark events would be ignored and
# nothing would fire before the end of the stream. An explicit tag avoids it.
TAG = "beacons"
# Largest watermark step (see WatermarkSteps); below the sinks' lateness.
MAX_STEP_MS = 600_000
MAX_STEPS = 1_008          # a week of steps; a longer gap is jumped


def received_ms(line: bytes) -> Optional[int]:
    """The collector's receive time of a line, if it has a readable one."""
    try:
        message = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if isinstance(message, list):
        message = message[0] if message and isinstance(message[0], dict) else {}
    value = message.get("received_ms") if isinstance(message, dict) else None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _records(path: str, blank: Optional[list[int]] = None) -> Iterator[tuple[int, int, RawRecord]]:
    """(arrival, order, record) of a file in file order; a line with no
    readable receive time inherits the previous line's (lines before the
    first readable one, the next one's). Blank lines are skipped and counted
    in ``blank[0]``."""
    arrival = 0
    waiting: list[tuple[int, bytes]] = []      # leading lines with no receive time yet
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            payload = line.rstrip(b"\r\n")
            if not payload.strip():
                if blank is not None:
                    blank[0] += 1
                continue
            arrival = received_ms(payload) or arrival
            if not arrival:
                waiting.append((number, payload))
                continue
            for n, p in waiting:
                yield arrival, n, RawRecord(p, f"{path}:{n}", arrival)
            waiting = []
            yield arrival, number, RawRecord(payload, f"{path}:{number}", arrival)
    for n, p in waiting:                        # no receive time anywhere in the file
        yield 0, n, RawRecord(p, f"{path}:{n}", None)


class WatermarkSteps:
    """Watermark events for a TestStream, in steps of at most MAX_STEP_MS.

    The DirectRunner holds no watermark for pending timers, so what a timer
    emits is as far behind the watermark as the step that fired it; small
    steps keep that within the sinks' allowed lateness (a quiet hour in the
    input or the final drain would otherwise be one jump). The watermark
    never moves back.
    """

    def __init__(self) -> None:
        self.value: Optional[int] = None

    def advance(self, watermark: int) -> Iterator:
        if self.value is None:
            self.value = watermark
            yield test_stream.WatermarkEvent(Timestamp(micros=watermark * 1000), TAG)
            return
        if watermark - self.value > MAX_STEPS * MAX_STEP_MS:
            # A gap of weeks (e.g. lines with no time at all, replayed at 0):
            # nothing can be pending across it that small steps would save.
            self.value = watermark - MAX_STEPS * MAX_STEP_MS
        while watermark > self.value:
            self.value = min(watermark, self.value + MAX_STEP_MS)
            yield test_stream.WatermarkEvent(Timestamp(micros=self.value * 1000), TAG)


class FileReplay:
    """Yields TestStream events for files, in arrival order, paced.

    Args:
      pattern: local glob of NDJSON files written in arrival order.
      speed: recorded seconds per wall second (0: as fast as possible).
      max_lag_ms: the watermark trails the arrival clock by this much.
      drain_ms: after the last line the watermark goes this far past it, so
        every view can complete and expire (the DirectRunner fires no timers
        on a jump to +infinity).
      tick_ms: lines arriving within one tick are one bundle.
    """

    def __init__(self, pattern: str, speed: float, max_lag_ms: int, drain_ms: int,
                 tick_ms: int = 5_000, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._paths = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
        self._speed, self._lag, self._drain, self._tick = speed, max_lag_ms, drain_ms, tick_ms
        self._sleep, self._clock = sleep, clock
        self._blank = [0]

    @property
    def blank_lines(self) -> int:
        """Blank lines skipped so far (not records: a batch run counts them apart too)."""
        return self._blank[0]

    def read_multiple(self, _tags) -> Iterator:
        """The TestStreamService entry point: events as protos, times in MICROseconds.

        Not ``event.to_runner_api()``: in Beam 2.77 that writes milliseconds
        while the DirectRunner's RPC reader (test_stream_impl.
        test_stream_payload_to_events) reads microseconds, which would put
        every replayed time in January 1970.
        """
        for event in self.events():
            yield from to_protos(event)

    def events(self) -> Iterator:
        self._blank = [0]
        merged = heapq.merge(*(_records(p, self._blank) for p in self._paths),
                             key=lambda r: (r[0], r[1]))
        started, first = self._clock(), None
        self._watermark = WatermarkSteps()
        batch: list[TimestampedValue] = []
        tick = None
        last = 0
        for arrival, _, record in merged:
            this_tick = arrival // self._tick
            if tick is not None and this_tick != tick and batch:
                yield from self._flush(batch, tick)
                batch = []
            if first is None:
                first = arrival
            if self._speed > 0 and arrival > last:
                wait = started + (arrival - first) / 1000 / self._speed - self._clock()
                if wait > 0:
                    self._sleep(wait)
            tick, last = this_tick, max(last, arrival)
            batch.append(TimestampedValue(record, Timestamp(micros=arrival * 1000)))
        if batch:
            yield from self._flush(batch, tick)
        yield from self._watermark.advance(last + self._drain)

    def _flush(self, batch: list[TimestampedValue], tick: int) -> Iterator:
        yield test_stream.ElementEvent(batch, TAG)
        yield from self._watermark.advance(tick * self._tick - self._lag)

# The DirectRunner's TestStream RPC client keeps gRPC's default 4 MiB receive
# limit; a bigger event kills its reader thread, and the run then ends as if
# the stream had (found at 2,000 events/s with 5 s ticks: a 4.3 MB bundle).
MAX_EVENT_BYTES = 3 * 1024 * 1024


def to_protos(event) -> Iterator[beam_runner_api_pb2.TestStreamPayload.Event]:
    """A TestStream event as the DirectRunner's RPC reader expects it (micros),
    an element event split into as many as keep each under MAX_EVENT_BYTES."""
    payload = beam_runner_api_pb2.TestStreamPayload
    if not isinstance(event, test_stream.ElementEvent):
        yield payload.Event(watermark_event=payload.Event.AdvanceWatermark(
            new_watermark=event.new_watermark.micros, tag=TAG))
        return
    chunk: list = []
    size = 0
    for tv in event.timestamped_values:
        element = payload.TimestampedElement(encoded_element=CODER.encode(tv.value),
                                             timestamp=tv.timestamp.micros)
        grown = len(element.encoded_element) + 32        # field tags, timestamp
        if chunk and size + grown > MAX_EVENT_BYTES:
            yield payload.Event(element_event=payload.Event.AddElements(elements=chunk, tag=TAG))
            chunk, size = [], 0
        chunk.append(element)
        size += grown
    yield payload.Event(element_event=payload.Event.AddElements(elements=chunk, tag=TAG))


class ReplayService:
    """A TestStreamService on localhost serving a FileReplay; use as a context manager."""

    def __init__(self, replay: FileReplay) -> None:
        self._controller = TestStreamServiceController(replay)  # binds localhost:<free port>

    def __enter__(self) -> str:
        self._controller.start()
        return self._controller.endpoint

    def __exit__(self, *exc) -> None:
        self._controller.stop()
