"""AggregateResponses: per-minute HTTP errors, TTFB and TTLB from response reports."""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import math
from typing import Any, Iterable, Mapping, Optional

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms.metrics import PerMinuteCells, cell_key
from transforms.model import Beacon, ResponseRow
from transforms.rolling import RollingEvaluate, use_state

RESPONSE_EVENT = "rr"      # CMCD v2 "response received"
EXACT_BELOW_MS = 100       # timings below this are counted exactly, above at 2 significant digits

# (response_code, ttfb_ms, ttlb_ms) of one response, each cleaned: an int, or None.
Response = tuple[Optional[int], Optional[int], Optional[int]]
Cell = tuple[str, str]     # (dimension, value) within a minute


def is_response(beacon: Beacon) -> bool:
    """A response report: CMCD ``e=rr``, or any beacon that carries a status or timings."""
    return (beacon.cmcd_event == RESPONSE_EVENT or beacon.response_code is not None
            or beacon.ttfb_ms is not None or beacon.ttlb_ms is not None)


def _count(value: Any) -> Optional[float]:
    """A finite non-negative number, else None (missing, negative, NaN, not a number)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def status_code(value: Any) -> Optional[int]:
    """An HTTP status as counted: a non-negative integer, else None (not counted)."""
    return int(value) if isinstance(value, int) and _count(value) is not None else None


def rounded_ms(value: Any) -> Optional[int]:
    """A timing as counted: exact below 100 ms, 2 significant digits from 100 ms
    (half up: 1,249 -> 1,200, 1,250 -> 1,300; at most 5 % off); None if unusable.

    The distinct results are 0..99 plus 90 per decade above (100, 110, ...,
    990, 1,000, 1,100, ...): 371 for timings under 100 s, at most 730 up to
    the parser's 7-day cap.
    """
    ms = _count(value)
    if ms is None:
        return None
    whole = int(round(ms))
    if whole < EXACT_BELOW_MS:
        return whole
    step = 10 ** (len(str(whole)) - 2)
    return (whole + step // 2) // step * step


def response_of(beacon: Beacon) -> Response:
    return (status_code(beacon.response_code), rounded_ms(beacon.ttfb_ms),
            rounded_ms(beacon.ttlb_ms))


def response_cells(beacon: Beacon) -> list[tuple[Cell, Response]]:
    """(cell, response) for each cell a response counts in: "all", and its cdn and host if known."""
    response = response_of(beacon)
    cells = [("all", "all")]
    if beacon.cdn:
        cells.append(("cdn", str(beacon.cdn)))
    if beacon.host:
        cells.append(("host", str(beacon.host)))
    return [(cell, response) for cell in cells]


def counted_percentile(counts: Mapping[int, int], q: float) -> Optional[float]:
    """``metrics.percentile`` of the values ``counts`` holds (value -> how many),
    without expanding them: the two ranks it interpolates between are found
    by bisecting the cumulative counts."""
    items = sorted((value, n) for value, n in counts.items() if n > 0)
    cumulative = list(itertools.accumulate(n for _, n in items))
    if not cumulative:
        return None
    total = cumulative[-1]
    pos = (total - 1) * q
    lo = int(pos)
    hi = min(lo + 1, total - 1)
    low = items[bisect.bisect_right(cumulative, lo)][0]
    high = items[bisect.bisect_right(cumulative, hi)][0]
    return low + (high - low) * (pos - lo)


@dataclasses.dataclass(slots=True)
class ResponseTally:
    """What a cell counts, updated in place.

    Bounded whatever the traffic: three counts and two Counters keyed by
    ``rounded_ms`` values (at most 730 keys each, see ``rounded_ms``).
    """

    requests: int = 0
    http_errors: int = 0               # status >= 400
    with_code: int = 0                 # responses that had a status
    ttfb: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    ttlb: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def add(self, response: Response) -> None:
        code, ttfb, ttlb = response
        code, ttfb, ttlb = status_code(code), rounded_ms(ttfb), rounded_ms(ttlb)
        self.requests += 1
        if code is not None:
            self.with_code += 1
            self.http_errors += int(code >= 400)
        if ttfb is not None:
            self.ttfb[ttfb] += 1
        if ttlb is not None:
            self.ttlb[ttlb] += 1

    def merge(self, other: "ResponseTally") -> None:
        self.requests += other.requests
        self.http_errors += other.http_errors
        self.with_code += other.with_code
        self.ttfb.update(other.ttfb)
        self.ttlb.update(other.ttlb)


def to_response_row(minute_ms: int, cell: Cell, tally: ResponseTally,
                    version: int = 1) -> ResponseRow:
    """The row of a cell; ``http_error_pct`` is over the responses that had a status (0 if none)."""
    dimension, value = cell
    return ResponseRow(
        minute_ms=minute_ms, dimension=dimension, value=value, requests=tally.requests,
        http_errors=tally.http_errors,
        http_error_pct=100.0 * tally.http_errors / tally.with_code if tally.with_code else 0.0,
        ttfb_p50_ms=counted_percentile(tally.ttfb, 0.50),
        ttfb_p95_ms=counted_percentile(tally.ttfb, 0.95),
        ttlb_p50_ms=counted_percentile(tally.ttlb, 0.50),
        version=version)


class _TallyBundleFn(beam.DoFn):
    """Combiner lifting by hand: each bundle's responses tallied per cell,
    so a cell's key (one per minute for "all") takes one tally per bundle,
    never every response. Emitted at the bundle's end, stamped at the newest
    response of the cell in it."""

    def __init__(self, minute_ms: int) -> None:
        self._minute_ms = minute_ms
        self._tallies: dict[str, list] = {}

    def start_bundle(self) -> None:
        self._tallies = {}

    def process(self, beacon: Beacon, ts=beam.DoFn.TimestampParam) -> None:
        minute = beacon.event_ms // self._minute_ms * self._minute_ms
        ms = ts.micros // 1000
        for cell, response in response_cells(beacon):
            entry = self._tallies.setdefault(cell_key(minute, *cell), [ResponseTally(), ms])
            entry[0].add(response)
            entry[1] = max(entry[1], ms)

    def finish_bundle(self) -> Iterable[WindowedValue]:
        for key, (tally, ms) in self._tallies.items():
            yield WindowedValue((key, tally), ms / 1000, [GlobalWindow()])
        self._tallies = {}


class _CellRows:
    """RollingEvaluate's evaluator per cell: the tallies folded into one; the
    cell's row, again with version + 1 whenever it changed."""

    def empty(self, key: str) -> list:
        return [ResponseTally(), None]          # [tally, the row last sent]

    def fold(self, acc: list, tally: ResponseTally, ts_ms: int) -> list:
        acc[0].merge(tally)
        return acc

    def evaluate(self, key: str, acc: list, as_of_ms: int, settled: bool):
        tally, sent = acc
        minute, dimension, value = key.split("\x1f", 2)
        version = sent.version + 1 if sent is not None else 1
        row = to_response_row(int(minute), (dimension, value), tally, version)
        if sent is not None and dataclasses.replace(sent, version=version) == row:
            return [], None
        acc[1] = row
        return [row], None


class AggregateResponses(PerMinuteCells):
    """Per-minute delivery evidence from response reports, overall, per CDN and per host.

    Input:  PCollection[Beacon], all of them, timestamped at ``event_ms``;
            only response reports count (``is_response``: CMCD ``e=rr``, or
            any beacon with a status or timings).
    Output: PCollection[ResponseRow]: one per (minute of event time,
            dimension, value), dimension "all" (value "all"), "cdn" or "host"
            (for the responses that name one); emitted once the cell's input
            settles, and again with ``version`` + 1 when later responses
            change it (in batch: once). The same keyed primitive as the QoE
            metrics (``RollingEvaluate``), so it runs on every runner (Prism
            has no allowed lateness nor accumulating panes for Beam windows).

    Columns: ``requests`` counts every response; ``http_errors`` those with
    status >= 400; ``http_error_pct`` is over the responses that had a status;
    the TTFB p50/p95 and TTLB p50 (``metrics.percentile``'s interpolation) are
    over the responses that carried them, rounded as by ``rounded_ms``.
    Missing, negative or non-numeric values are skipped, never fatal.

    State per cell: one ResponseTally (three counts and two Counters of at
    most 730 keys each, see ``rounded_ms``) and the row last sent, released
    ``gc_ms`` after the cell's newest response. A cell's key receives one
    tally per bundle (``_TallyBundleFn``), not each response.

    Args:
      minute_ms: width of a time bucket in ms (60 000 by default).
      inactivity_ms: how long responses of a minute may still come (the
        sessionizer's inactivity); a cell's state lasts twice that.
      stateful: see ``rolling.use_state``.
    """

    def expand(self, beacons: beam.PCollection) -> beam.PCollection:
        return (beacons
                | "KeepResponses" >> beam.Filter(is_response)
                | "TallyPerBundle" >> beam.ParDo(_TallyBundleFn(self._minute_ms))
                    .with_output_types(tuple[str, ResponseTally])
                | "Rows" >> RollingEvaluate(_CellRows(), settle_ms=1_000, gc_ms=self._gc_ms,
                                            stateful=use_state(self._stateful, beacons, early=False)))
