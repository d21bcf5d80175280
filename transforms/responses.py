"""AggregateResponses: per-minute HTTP errors, TTFB and TTLB from response reports."""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import math
from typing import Any, Iterable, Mapping, Optional

import apache_beam as beam
from apache_beam.transforms import window
from apache_beam.transforms.trigger import AccumulationMode
from apache_beam.utils.timestamp import Duration

from transforms.model import Beacon, ResponseRow

RESPONSE_EVENT = "rr"      # CMCD v2 "response received"
EXACT_BELOW_MS = 100       # timings below this are counted exactly, above at 2 significant digits

# (response_code, ttfb_ms, ttlb_ms) of one response, each cleaned: an int, or None.
Response = tuple[Optional[int], Optional[int], Optional[int]]
Cell = tuple[str, str]     # (dimension, value) within a minute window


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
    """The accumulator of one cell, updated in place (Beam allows it in
    ``add_input`` and in the first accumulator of ``merge_accumulators``).

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


class TallyResponsesFn(beam.CombineFn):
    """Responses -> ResponseTally: requests, errors, statuses and timing Counters."""

    def create_accumulator(self) -> ResponseTally:
        return ResponseTally()

    def add_input(self, tally: ResponseTally, response: Response) -> ResponseTally:
        tally.add(response)
        return tally

    def merge_accumulators(self, tallies: Iterable[ResponseTally]) -> ResponseTally:
        tallies = iter(tallies)
        merged = next(tallies, None) or ResponseTally()
        for tally in tallies:
            merged.merge(tally)
        return merged

    def extract_output(self, tally: ResponseTally) -> ResponseTally:
        return tally


class _ToRowFn(beam.DoFn):
    """A fired pane of a cell as its row: the minute is the window's start,
    ``version`` the pane's index + 1 (1 on time, 2, 3, ... for late panes)."""

    def process(self, element: tuple[Cell, ResponseTally], win=beam.DoFn.WindowParam,
                pane=beam.DoFn.PaneInfoParam) -> Iterable[ResponseRow]:
        cell, tally = element
        yield to_response_row(win.start.micros // 1000, cell, tally, pane.index + 1)


class AggregateResponses(beam.PTransform):
    """Per-minute delivery evidence from response reports, overall, per CDN and per host.

    Input:  PCollection[Beacon], all of them, timestamped at ``event_ms``;
            only response reports count (``is_response``: CMCD ``e=rr``, or
            any beacon with a status or timings).
    Output: PCollection[ResponseRow] in the global window, timestamped at the
            end of its minute: one per (minute of event time, dimension,
            value), dimension "all" (value "all"), "cdn" or "host" (for the
            responses that name one). Written when the watermark passes the
            minute; a response up to ``allowed_lateness_s`` late re-emits the
            cell with every response so far and ``version`` + 1; a later one
            is dropped here (its beacon still goes through sessionization and
            is accounted there). In batch: one row per cell, version 1.

    Columns: ``requests`` counts every response; ``http_errors`` those with
    status >= 400; ``http_error_pct`` is over the responses that had a status;
    the TTFB p50/p95 and TTLB p50 (``metrics.percentile``'s interpolation) are
    over the responses that carried them, rounded as by ``rounded_ms``.
    Missing, negative or non-numeric values are skipped, never fatal.

    Args:
      minute_ms: width of a time bucket in ms (60 000 by default).
      allowed_lateness_s: how long after a minute's end (in watermark time) a
        response still updates its cell; the pipeline passes the sessionizer's
        ``inactivity_s``.

    A cell ("all", a big CDN) takes every response of its minute, but never
    one by one: the combine is lifted (each bundle tallies its responses per
    cell before the shuffle: the portable runners' default ``lift_combiners``
    phase, Dataflow's combiner lifting), so the key sees one small tally per
    bundle. Beam's hot-key fanout was tried and lost late panes on the
    DirectRunner (test_aggregate_responses__a_late_response_*).
    """

    def __init__(self, minute_ms: int = 60_000, allowed_lateness_s: int = 3600) -> None:
        super().__init__()
        if minute_ms <= 0 or allowed_lateness_s < 0:
            raise ValueError(f"minute_ms must be > 0 and allowed_lateness_s >= 0, "
                             f"got {minute_ms}, {allowed_lateness_s}")
        self._minute_ms = minute_ms
        self._allowed_lateness_s = allowed_lateness_s

    def expand(self, beacons: beam.PCollection) -> beam.PCollection:
        return (beacons
                | "KeepResponses" >> beam.Filter(is_response)
                | "KeyByCell" >> beam.FlatMap(response_cells)
                    .with_output_types(tuple[Cell, Response])
                | "WindowPerMinute" >> beam.WindowInto(
                    window.FixedWindows(Duration(micros=self._minute_ms * 1000)),
                    allowed_lateness=Duration(seconds=self._allowed_lateness_s),
                    accumulation_mode=AccumulationMode.ACCUMULATING)
                | "TallyPerCell" >> beam.CombinePerKey(TallyResponsesFn())
                | "ToRows" >> beam.ParDo(_ToRowFn())
                | "ToGlobalWindow" >> beam.WindowInto(window.GlobalWindows()))
