"""ParseBeacons: raw beacon v1 messages and collector CMCD records to typed Beacons
plus dead letters."""

from __future__ import annotations

import dataclasses
import datetime
import typing
from typing import Any, Iterable, Optional, Union

import apache_beam as beam
import orjson
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from transforms import cmcd
from transforms.fields import MAX_ID_CHARS, Rejected
from transforms.fields import flag as _flag, identifier as _id, number as _number, text as _text
from transforms.model import (PLAYHEADLESS_KINDS, Beacon, DeadLetter, EventKind,
                              RawRecord)

STAGE = "ParseBeacons"
DEAD_LETTERS = "dead_letters"
METRICS_NAMESPACE = "stallwatch"

# Sanity bounds: values outside them are client bugs, not data.
MIN_TS_MS = 946_684_800_000        # 2000-01-01T00:00:00Z
MAX_TS_MS = 4_102_444_800_000      # 2100-01-01T00:00:00Z
MAX_PLAYHEAD_MS = 7 * 86_400_000   # a week-long stream
MAX_DURATION_MS = 30 * 86_400_000
MAX_BITRATE_BPS = 1_000_000_000
MAX_TEXT_CHARS = 2_048
DEAD_PAYLOAD_CHARS = 65_536        # an oversize payload is kept up to this

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_ONE_MS = datetime.timedelta(milliseconds=1)
_KINDS = {k.value: k for k in EventKind}
_DIMENSION_FIELDS = ("rendition", "cdn", "asn", "country", "browser", "os",
                     "device", "player_name", "player_version", "error_code")
_STREAM_TYPES = ("on-demand", "live")

Parsed = Union[Beacon, DeadLetter]


def _dead(reason: str, payload: str, detail: str, source: str) -> DeadLetter:
    return DeadLetter(stage=STAGE, reason=reason, payload=payload,
                      detail=detail, source=source)


@dataclasses.dataclass(frozen=True)
class TimeBounds:
    """How far a client ``ts`` may stray from the arrival time (ms)."""

    max_lag_ms: int = 300_000     # batching, retries, offline buffering
    max_lead_ms: int = 60_000     # a device clock slightly ahead

    def bound(self, client_ms: int, arrival_ms: Optional[int]) -> int:
        """The client time when it is plausible, else the arrival time: a ts
        outside [arrival - max_lag, arrival + max_lead] says nothing reliable,
        while the arrival is a close upper bound of when the event happened."""
        if arrival_ms is None or arrival_ms - self.max_lag_ms <= client_ms <= arrival_ms + self.max_lead_ms:
            return client_ms
        return arrival_ms


NO_BOUNDS = TimeBounds()


def parse_message(raw: RawRecord, max_message_bytes: int,
                  bounds: TimeBounds = NO_BOUNDS) -> list[Parsed]:
    """Split one message into its records and validate each one.

    Every record of the message yields exactly one Beacon or DeadLetter: an
    array counts each element, and a message that is not JSON counts as one.

    Args:
      raw: the message and where it came from.
      max_message_bytes: larger messages are rejected whole as ``oversize``.
      bounds: how event time is bounded around the arrival time.

    Returns:
      One Beacon or DeadLetter per record, in message order.
    """
    size = len(raw.payload)
    if size > max_message_bytes:
        text = raw.payload[:DEAD_PAYLOAD_CHARS].decode("utf-8", "replace")
        return [_dead("oversize", text,
                      f"{size} bytes > limit {max_message_bytes}", raw.source)]
    try:
        text = raw.payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [_dead("not_utf8", raw.payload.decode("utf-8", "replace"),
                      str(exc), raw.source)]
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return [_dead("invalid_json", text, str(exc), raw.source)]

    defaults: dict[str, Any] = {}
    if isinstance(message, dict) and "cmcd" in message:
        return _parse_cmcd(message, text, raw, bounds)
    if isinstance(message, dict) and "events" in message:
        events = message["events"]
        if not isinstance(events, list):
            return [_dead("wrong_type:events", text,
                          f"events is {type(events).__name__}, not a list",
                          raw.source)]
        defaults = {k: v for k, v in message.items() if k != "events"}
    elif isinstance(message, list):
        events = message
    elif isinstance(message, dict):
        return [_parse_record(message, text, raw, bounds)]
    else:
        return [_dead("not_an_object", text,
                      f"message is a JSON {type(message).__name__}", raw.source)]

    if not events:
        return [_dead("empty_batch", text, "no events in the message", raw.source)]
    out: list[Parsed] = []
    for index, element in enumerate(events):
        source = f"{raw.source}#{index}"
        if not isinstance(element, dict):
            out.append(_dead("not_an_object", _dump(element),
                             f"event is a JSON {type(element).__name__}", source))
            continue
        record = {**defaults, **element} if defaults else element
        out.append(_parse_record(record, None, raw, bounds, source))
    return out


def _parse_cmcd(message: dict, text: str, raw: RawRecord, bounds: TimeBounds) -> list[Parsed]:
    """A collector record carrying CMCD v2 event reports: ``{"cmcd": BODY,
    ...defaults}`` (pipeline/collector/server.py); each report line is one record."""
    defaults = {k: v for k, v in message.items() if k != "cmcd"}
    try:
        lines = list(cmcd.reports(message["cmcd"]))
    except Rejected as exc:
        return [_dead(exc.reason, text, str(exc), raw.source)]
    if not lines:
        return [_dead("empty_batch", text, "no CMCD reports in the body", raw.source)]
    out: list[Parsed] = []
    for index, line in enumerate(lines):
        source = f"{raw.source}#{index}" if len(lines) > 1 else raw.source
        try:
            out.append(cmcd.to_beacon(cmcd.decode(line), defaults, source, raw.arrival_ms,
                                      bounds.bound, parse_ts))
        except Rejected as exc:
            out.append(_dead(exc.reason, line, str(exc), source))
    return out


def _dump(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


def _parse_record(record: dict, payload: Optional[str], raw: RawRecord, bounds: TimeBounds,
                  source: Optional[str] = None) -> Parsed:
    """One record; a dead letter's payload is ``payload`` or, when None, the
    record as JSON (serialized only then: most records are valid)."""
    source = raw.source if source is None else source
    try:
        return to_beacon(record, source, raw.arrival_ms, bounds)
    except Rejected as exc:
        return _dead(exc.reason, _dump(record) if payload is None else payload, str(exc), source)


# Fast paths for the common, valid case of each field rule (an exact-typed
# value inside its bounds, returned as is); anything else goes through the
# full rule in transforms/fields.py, which decides and names the reason.

def _id_fast(record: dict, name: str, required: bool) -> Optional[str]:
    value = record.get(name)
    if type(value) is str and 0 < len(value) <= MAX_ID_CHARS:
        return value
    return _id(record, name, required)


def _text_fast(record: dict, name: str, max_chars: int) -> Optional[str]:
    value = record.get(name)
    if value is None or (type(value) is str and len(value) <= max_chars):
        return value
    return _text(record, name, max_chars)


def _number_fast(record: dict, name: str, low: int, high: int) -> Optional[int]:
    value = record.get(name)
    if value is None or (type(value) is int and low <= value <= high):
        return value
    return _number(record, name, low, high)


def to_beacon(record: dict, source: str = "", arrival_ms: Optional[int] = None,
              bounds: TimeBounds = NO_BOUNDS) -> Beacon:
    """Validate one event object against beacon v1.

    Args:
      record: the event (envelope defaults already applied).
      source: where it came from.
      arrival_ms: the source's arrival time; when None, a collector-stamped
        ``received_ms`` field of the record is used if present.
      bounds: how far event time may stray from the arrival time.

    Raises:
      Rejected: with a stable reason code when the record breaks the contract.
    """
    kind_name = record.get("event")
    kind = _KINDS.get(kind_name) if type(kind_name) is str else None
    view_id = _id_fast(record, "view_id", True)
    video_id = _id_fast(record, "video_id", True)
    if kind is None:
        if kind_name is None:
            raise Rejected("missing_field:event", "event is required")
        if not isinstance(kind_name, str):
            raise Rejected("wrong_type:event", f"event is {type(kind_name).__name__}")
        kind = _KINDS.get(kind_name)
        if kind is None:
            raise Rejected("unknown_event", f"unknown event {kind_name[:64]!r}")
    ts = record.get("ts")
    client_ms = ts if type(ts) is int and MIN_TS_MS <= ts < MAX_TS_MS else parse_ts(ts)
    if arrival_ms is None:
        arrival_ms = _number_fast(record, "received_ms", MIN_TS_MS, MAX_TS_MS)
    playhead = _number_fast(record, "playhead_ms", 0, MAX_PLAYHEAD_MS)
    if playhead is None and kind not in PLAYHEADLESS_KINDS:
        raise Rejected("missing_field:playhead_ms",
                       f"playhead_ms is required on {kind.value}")
    fatal = _flag(record, "fatal")
    if fatal is None and kind is EventKind.ERROR:
        fatal = True
    stream_type = _text_fast(record, "stream_type", MAX_ID_CHARS)
    if stream_type is not None and stream_type not in _STREAM_TYPES:
        raise Rejected("invalid_value:stream_type",
                       f"stream_type must be one of {_STREAM_TYPES}")
    # The remaining fields, validated in the order their reasons are documented
    # to win when a record breaks several rules.
    dims = [_text_fast(record, name, MAX_ID_CHARS) for name in _DIMENSION_FIELDS]
    viewer_id = _id_fast(record, "viewer_id", False)
    event_id = _id_fast(record, "event_id", False)
    seq = _number_fast(record, "seq", 0, 2**62)
    bitrate_bps = _number_fast(record, "bitrate_bps", 0, MAX_BITRATE_BPS)
    duration_ms = _number_fast(record, "video_duration_ms", 0, MAX_DURATION_MS)
    error_message = _text_fast(record, "error_message", MAX_TEXT_CHARS)
    business_error = bool(_flag(record, "business_error"))
    program_time = _number_fast(record, "program_time_ms", MIN_TS_MS, MAX_TS_MS)
    latency = _number_fast(record, "live_latency_ms", 0, MAX_PLAYHEAD_MS)
    ad_id = _id_fast(record, "ad_id", False)
    rendition, cdn, asn, country, browser, os_, device, player_name, player_version, \
        error_code = dims
    return Beacon(view_id=view_id, video_id=video_id, kind=kind,
                  event_ms=bounds.bound(client_ms, arrival_ms), client_ms=client_ms,
                  playhead_ms=playhead, viewer_id=viewer_id, event_id=event_id, seq=seq,
                  rendition=rendition, bitrate_bps=bitrate_bps, cdn=cdn, asn=asn,
                  country=country, browser=browser, os=os_, device=device,
                  player_name=player_name, player_version=player_version,
                  stream_type=stream_type, video_duration_ms=duration_ms,
                  error_code=error_code, error_message=error_message, fatal=fatal,
                  business_error=business_error, source=source,
                  program_time_ms=program_time, live_latency_ms=latency, ad_id=ad_id)


def parse_ts(value: Any) -> int:
    """Client timestamp to epoch ms: a number of ms, or an ISO-8601 string.

    Raises:
      Rejected: missing, wrongly typed, unparseable or outside 2000..2100.
    """
    if value is None:
        raise Rejected("missing_field:ts", "ts is required")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Rejected("wrong_type:ts", f"ts is {type(value).__name__}")
    if isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise Rejected("invalid_timestamp", str(exc)) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.timezone.utc)
        ms = (parsed - _EPOCH) // _ONE_MS          # exact integer arithmetic
    else:
        if value != value:  # NaN cannot come from JSON, but guard anyway
            raise Rejected("out_of_range:ts", "ts is NaN")
        ms = int(value)
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        raise Rejected("out_of_range:ts",
                       f"ts {value!r} is not epoch ms between 2000 and 2100")
    return ms


class _ParseFn(beam.DoFn):
    """Thin adapter over parse_message; counts every record it routes."""

    def __init__(self, max_message_bytes: int, bounds: TimeBounds) -> None:
        self._max_bytes = max_message_bytes
        self._bounds = bounds
        self._messages = Metrics.counter(METRICS_NAMESPACE, "messages")
        self._records = Metrics.counter(METRICS_NAMESPACE, "input_records")
        self._parsed = Metrics.counter(METRICS_NAMESPACE, "parsed_events")
        self._dead = Metrics.counter(METRICS_NAMESPACE, "dead_letters")

    def process(self, raw: RawRecord) -> Iterable[Any]:
        results = parse_message(raw, self._max_bytes, self._bounds)
        self._messages.inc()
        self._records.inc(len(results))
        parsed = 0
        for item in results:
            if type(item) is Beacon:
                parsed += 1
                yield TimestampedValue(item, item.event_ms / 1000.0)
            else:
                self._dead.inc()
                Metrics.counter(METRICS_NAMESPACE, f"dead_letter:{item.reason}").inc()
                yield pvalue.TaggedOutput(DEAD_LETTERS, item)
        self._parsed.inc(parsed)     # once per message, not per event


class ParsedBeacons(typing.NamedTuple):
    beacons: beam.PCollection        # of Beacon, timestamped at event_ms
    dead_letters: beam.PCollection   # of DeadLetter


class ParseBeacons(beam.PTransform):
    """Validate raw beacon v1 messages.

    Input:  PCollection[RawRecord], one message each (JSON object, array of
            objects, an ``{"events": [...], ...defaults}`` envelope, or a
            collector's ``{"cmcd": BODY, ...}`` record).
    Output: ParsedBeacons(beacons=PCollection[Beacon] timestamped at
            ``event_ms`` (the client ``ts``, bounded as below),
            dead_letters=PCollection[DeadLetter]). Every record
            lands in exactly one of the two.

    Args:
      max_message_bytes: messages larger than this are dead-lettered whole.
      max_lag_s, max_lead_s: event time is the client ``ts`` when it lies in
        [arrival - max_lag_s, arrival + max_lead_s], else the arrival time,
        when an arrival time is known (the source's, or ``received_ms``).
    """

    def __init__(self, max_message_bytes: int = 1_048_576, max_lag_s: int = 300,
                 max_lead_s: int = 60) -> None:
        super().__init__()
        if max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be > 0, got {max_message_bytes}")
        if max_lag_s < 0 or max_lead_s < 0:
            raise ValueError("max_lag_s and max_lead_s must be >= 0")
        self._max_bytes = max_message_bytes
        self._bounds = TimeBounds(max_lag_s * 1000, max_lead_s * 1000)

    def expand(self, raw: beam.PCollection) -> ParsedBeacons:
        results = (raw
                   | "Validate" >> beam.ParDo(_ParseFn(self._max_bytes, self._bounds))
                   .with_outputs(DEAD_LETTERS, main="beacons"))
        return ParsedBeacons(results.beacons, results[DEAD_LETTERS])
