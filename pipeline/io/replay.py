"""Streaming replay of NDJSON files on the DirectRunner, paced by arrival time
(or by event time, for files without receive times).

The DirectRunner's streaming engine runs no splittable DoFn, so no file
source can be unbounded there. It does run a TestStream whose events come
from a TestStreamService over gRPC: the mechanism Interactive Beam uses to
replay recorded streams. ``FileReplay`` is such a service's reader: it
orders each file's lines by arrival time (the collector's ``received_ms``;
without any, by event time, see ``_records``) and merges the files, emits
the lines one tick at a time as elements timestamped at their pace time,
advances the watermark behind them by ``max_lag_ms`` (no bounded event time
can be older), and sleeps so that ``speed`` seconds of recorded time pass
per wall second. The service listens on localhost only and is stopped when
the run ends.
"""

from __future__ import annotations

import glob
import gzip
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

from transforms.fields import Rejected
from transforms.model import RawRecord
from transforms.parse import parse_ts

CODER = coders.PickleCoder()
# Events read back from a TestStreamService carry their tag as a string, so the
# default tag None would never match: watermark events would be ignored and
# nothing would fire before the end of the stream. An explicit tag avoids it.
TAG = "beacons"
# Largest watermark step (see WatermarkSteps).
MAX_STEP_MS = 600_000
MAX_STEPS = 1_008          # a week of steps; a longer gap is jumped
MAX_WAIT_MS = 3_600_000    # a longer gap in the recording is replayed as this long


def _message(line: bytes):
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


def received_ms(line: bytes) -> Optional[int]:
    """The collector's receive time of a line, if it has a readable one."""
    return _received(_message(line))


def _received(message) -> Optional[int]:
    if isinstance(message, list):
        message = message[0] if message and isinstance(message[0], dict) else {}
    value = message.get("received_ms") if isinstance(message, dict) else None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _earliest_ts(message) -> Optional[int]:
    """The earliest valid event time of a beacon message (an object, an array
    or an envelope of events), or None."""
    if isinstance(message, dict) and isinstance(message.get("events"), list):
        common = message.get("ts")
        events = [e.get("ts", common) if isinstance(e, dict) else None for e in message["events"]]
    elif isinstance(message, list):
        events = [e.get("ts") if isinstance(e, dict) else None for e in message]
    elif isinstance(message, dict):
        events = [message.get("ts")]
    else:
        return None
    times = []
    for value in events:
        try:
            times.append(parse_ts(value))
        except Rejected:
            pass
    return min(times, default=None)


def _records(path: str, blank: Optional[list[int]] = None) -> list[tuple[int, int, RawRecord]]:
    """(pace time, line number, record) of a file's lines, sorted by pace time.

    A file with receive times (``received_ms``, the collector's) is paced by
    them, and its records carry them as their arrival; a line without one
    takes the previous line's (lines before the first one, the next one's).
    A file without any is paced by event time, the earliest valid ``ts`` of
    each line, and its records carry no arrival, exactly as in a batch run;
    a line without a valid ``ts`` takes its neighbour's place. Either way the
    lines are sorted, so a shuffled file replays in time order. Blank lines
    are skipped and counted in ``blank[0]``.
    """
    lines: list[tuple[int, bytes, Optional[int], Optional[int]]] = []
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            payload = line.rstrip(b"\r\n")
            if not payload.strip():
                if blank is not None:
                    blank[0] += 1
                continue
            message = _message(payload)
            lines.append((number, payload, _received(message), _earliest_ts(message)))
    by_arrival = any(received is not None for _, _, received, _ in lines)
    times = [received if by_arrival else event for _, _, received, event in lines]
    _fill(times)
    return sorted(((times[i] or 0, number, RawRecord(payload, f"{path}:{number}",
                                                    times[i] if by_arrival else None))
                   for i, (number, payload, _, _) in enumerate(lines)),
                  key=lambda item: (item[0], item[1]))


def _fill(times: list[Optional[int]]) -> None:
    """Give each missing time the previous one (leading gaps: the first one)."""
    known = None
    for i, value in enumerate(times):
        if value is None:
            times[i] = known
        else:
            known = value
    first = next((value for value in times if value is not None), None)
    for i, value in enumerate(times):
        if value is not None:
            break
        times[i] = first


class WatermarkSteps:
    """Watermark events for a TestStream, in steps of at most ``step_ms``.

    The DirectRunner holds no watermark for pending timers, so what a timer
    emits is as far behind the watermark as the step that fired it; small
    steps bound that to one step, the margin the detectors keep (``late_s``;
    a quiet hour in the input or the final drain would otherwise be one
    jump). The watermark never moves back.
    """

    def __init__(self, step_ms: int = MAX_STEP_MS) -> None:
        self.value: Optional[int] = None
        self._step = step_ms

    def advance(self, watermark: int) -> Iterator:
        if self.value is None:
            self.value = watermark
            yield test_stream.WatermarkEvent(Timestamp(micros=watermark * 1000), TAG)
            return
        if watermark - self.value > MAX_STEPS * self._step:
            # A gap of weeks (e.g. lines with no time at all, replayed at 0):
            # nothing can be pending across it that small steps would save.
            self.value = watermark - MAX_STEPS * self._step
        while watermark > self.value:
            self.value = min(watermark, self.value + self._step)
            yield test_stream.WatermarkEvent(Timestamp(micros=self.value * 1000), TAG)


class FileReplay:
    """Yields TestStream events for files, in arrival order, paced.

    Args:
      pattern: local glob of NDJSON files (``.gz`` too), in any order.
      speed: recorded seconds per wall second (0: as fast as possible).
      max_lag_ms: the watermark trails the arrival clock by this much.
      drain_ms: after the last line the watermark goes this far past it, so
        every view can complete and expire (the DirectRunner fires no timers
        on a jump to +infinity).
      tick_ms: lines arriving within one tick are one bundle.
      step_ms: the largest watermark step (see WatermarkSteps).
    """

    def __init__(self, pattern: str, speed: float, max_lag_ms: int, drain_ms: int,
                 tick_ms: int = 5_000, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 step_ms: int = MAX_STEP_MS) -> None:
        self._paths = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
        self._speed, self._lag, self._drain, self._tick = speed, max_lag_ms, drain_ms, tick_ms
        self._sleep, self._clock = sleep, clock
        self._step = step_ms
        self._blank = [0]

    records = 0               # records replayed so far: the source's count of what it read

    @property
    def blank_lines(self) -> int:
        """Blank lines skipped so far (not records: a batch run counts them apart too)."""
        return self._blank[0]

    def read_multiple(self, _tags) -> Iterator:
        """The TestStreamService entry point: events as protos, times in MICROseconds.

        Not ``event.to_runner_api()``: in Beam 2.62 that writes milliseconds
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
        self._watermark = WatermarkSteps(self._step)
        batch: list[TimestampedValue] = []
        tick = None
        last = skipped = 0
        self.records = 0
        for arrival, _, record in merged:
            this_tick = arrival // self._tick
            if tick is not None and this_tick != tick and batch:
                yield from self._flush(batch, tick)
                batch = []
            if first is None:
                first = last = arrival
            if arrival - last > MAX_WAIT_MS:
                skipped += arrival - last - MAX_WAIT_MS     # a gap in the recording: not waited for
            if self._speed > 0 and arrival > last:
                wait = started + (arrival - first - skipped) / 1000 / self._speed - self._clock()
                if wait > 0:
                    self._sleep(wait)
            tick, last = this_tick, max(last, arrival)
            self.records += 1
            batch.append(TimestampedValue(record, Timestamp(micros=arrival * 1000)))
        if batch:
            yield from self._flush(batch, tick)
        yield from self._watermark.advance(last + self._drain)

    def _flush(self, batch: list[TimestampedValue], tick: int) -> Iterator:
        yield test_stream.ElementEvent(batch, TAG)
        yield from self._watermark.advance(tick * self._tick - self._lag)

# The DirectRunner's TestStream RPC client keeps gRPC's default 4 MiB receive
# limit; a bigger event kills its reader thread, and the run then ends as if
# the stream had.
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
