"""ParseBeacons: every dead-letter reason, every accepted message shape."""

import json

import apache_beam as beam
import pytest
from apache_beam.testing import util

from tests.builders import fn_api_pipeline
from transforms.model import Beacon, DeadLetter, EventKind, RawRecord
from transforms.fields import Rejected
from transforms.parse import ParseBeacons, parse_message, parse_ts, to_beacon

GOOD = {"view_id": "v1", "video_id": "vid", "event": "heartbeat", "ts": 1793556000000,
        "playhead_ms": 1500}


def parse(payload, limit=1 << 20):
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_message(RawRecord(raw, "f.ndjson:3"), limit)


def reason(payload, **kw):
    [out] = parse(payload, **kw)
    assert isinstance(out, DeadLetter), out
    return out.reason


def test_parse_message__single_object_becomes_beacon():
    [b] = parse(GOOD)
    assert b == Beacon(view_id="v1", video_id="vid", kind=EventKind.HEARTBEAT,
                       event_ms=1793556000000, client_ms=1793556000000, playhead_ms=1500,
                       source="f.ndjson:3")


def test_parse_message__array_counts_each_element_and_keeps_order():
    out = parse([GOOD, {**GOOD, "event": "nope"}, 7, {**GOOD, "event": "pause"}])
    assert [type(o).__name__ for o in out] == ["Beacon", "DeadLetter", "DeadLetter", "Beacon"]
    assert [o.source for o in out] == ["f.ndjson:3#0", "f.ndjson:3#1", "f.ndjson:3#2", "f.ndjson:3#3"]
    assert out[1].reason == "unknown_event" and out[2].reason == "not_an_object"


def test_parse_message__envelope_fields_are_defaults_that_events_override():
    out = parse({"view_id": "v1", "video_id": "vid", "cdn": "cdn-a",
                 "events": [{"event": "play", "ts": 1793556000000, "playhead_ms": 0},
                            {"event": "playing", "ts": 1793556001000, "playhead_ms": 0,
                             "cdn": "cdn-b"}]})
    assert [(b.kind, b.cdn) for b in out] == [(EventKind.PLAY, "cdn-a"), (EventKind.PLAYING, "cdn-b")]


def test_parse_message__dead_letter_keeps_raw_payload_and_position():
    [d] = parse(b'{"view_id": "v1", "ev')
    assert d.payload == '{"view_id": "v1", "ev' and d.source == "f.ndjson:3"
    assert d.stage == "ParseBeacons" and d.detail


def test_parse_message__invalid_utf8_payload_is_kept_with_replacement():
    [d] = parse(b'{"view_id": "\xff"}')
    assert d.reason == "not_utf8" and "\ufffd" in d.payload


@pytest.mark.parametrize("payload, expected", [
    (b"not json", "invalid_json"),
    (b'{"a": 1,}', "invalid_json"),
    (b"42", "not_an_object"),
    (b'"text"', "not_an_object"),
    (b"null", "not_an_object"),
    (b"[]", "empty_batch"),
    ({"view_id": "v", "events": []}, "empty_batch"),
    ({"view_id": "v", "events": {"event": "play"}}, "wrong_type:events"),
    ({**GOOD, "view_id": None}, "missing_field:view_id"),
    ({k: v for k, v in GOOD.items() if k != "video_id"}, "missing_field:video_id"),
    ({k: v for k, v in GOOD.items() if k != "event"}, "missing_field:event"),
    ({k: v for k, v in GOOD.items() if k != "ts"}, "missing_field:ts"),
    ({k: v for k, v in GOOD.items() if k != "playhead_ms"}, "missing_field:playhead_ms"),
    ({**GOOD, "view_id": ["x"]}, "wrong_type:view_id"),
    ({**GOOD, "view_id": True}, "wrong_type:view_id"),
    ({**GOOD, "view_id": ""}, "invalid_value:view_id"),
    ({**GOOD, "view_id": "x" * 300}, "invalid_value:view_id"),
    ({**GOOD, "event": 3}, "wrong_type:event"),
    ({**GOOD, "event": "buffering"}, "unknown_event"),
    ({**GOOD, "ts": "yesterday"}, "invalid_timestamp"),
    ({**GOOD, "ts": True}, "wrong_type:ts"),
    ({**GOOD, "ts": {"ms": 1}}, "wrong_type:ts"),
    ({**GOOD, "ts": 1793556000}, "out_of_range:ts"),          # seconds, not ms
    ({**GOOD, "ts": "1969-07-20T20:17:00Z"}, "out_of_range:ts"),
    ({**GOOD, "playhead_ms": "12s"}, "wrong_type:playhead_ms"),
    ({**GOOD, "playhead_ms": -5}, "out_of_range:playhead_ms"),
    ({**GOOD, "playhead_ms": 10**13}, "out_of_range:playhead_ms"),
    ({**GOOD, "bitrate_bps": -1}, "out_of_range:bitrate_bps"),
    ({**GOOD, "seq": 1.5e30}, "out_of_range:seq"),
    ({**GOOD, "fatal": "yes"}, "wrong_type:fatal"),
    ({**GOOD, "business_error": 1}, "wrong_type:business_error"),
    ({**GOOD, "stream_type": "vod"}, "invalid_value:stream_type"),
    ({**GOOD, "cdn": {"name": "x"}}, "wrong_type:cdn"),
    ({**GOOD, "program_time_ms": 1793556000}, "out_of_range:program_time_ms"),   # seconds
    ({**GOOD, "program_time_ms": "18:00"}, "wrong_type:program_time_ms"),
    ({**GOOD, "live_latency_ms": -1}, "out_of_range:live_latency_ms"),
])
def test_parse_message__dead_letter_reason(payload, expected):
    assert reason(payload) == expected


def test_parse_message__oversize_is_rejected_whole():
    payload = json.dumps([GOOD] * 50).encode()
    assert reason(payload, limit=100) == "oversize"


def test_parse_message__unknown_fields_are_ignored():
    [b] = parse({**GOOD, "custom_1": "x", "nested": {"a": [1]}})
    assert isinstance(b, Beacon)


def test_parse_message__numeric_ids_and_asn_become_strings():
    [b] = parse({**GOOD, "view_id": 17, "video_id": 99, "asn": 7922})
    assert (b.view_id, b.video_id, b.asn) == ("17", "99", "7922")


def test_parse_message__playhead_optional_on_lifecycle_events():
    [b] = parse({k: v for k, v in {**GOOD, "event": "viewstart"}.items() if k != "playhead_ms"})
    assert b.kind is EventKind.VIEWSTART and b.playhead_ms is None


def test_parse_message__error_is_fatal_unless_said_otherwise():
    [fatal] = parse({**GOOD, "event": "error", "error_code": "E1"})
    [warning] = parse({**GOOD, "event": "error", "fatal": False})
    assert fatal.fatal is True and warning.fatal is False


@pytest.mark.parametrize("value, expected", [
    (1793556000123, 1793556000123),
    (1793556000123.7, 1793556000123),
    ("2026-11-01T18:00:00.123Z", 1793556000123),
    ("2026-11-01T19:00:00.123+01:00", 1793556000123),
    ("2026-11-01T18:00:00.123", 1793556000123),           # naive = UTC
])
def test_parse_ts__accepts_epoch_ms_and_iso8601(value, expected):
    assert parse_ts(value) == expected


def _with_ts(beacon, ts=beam.DoFn.TimestampParam):
    return beacon.view_id, beacon.kind.value, int(ts.micros // 1000)


def test_parse_beacons__routes_every_record_and_sets_event_time():
    lines = [json.dumps(GOOD).encode(), b"garbage",
             json.dumps([{**GOOD, "event": "pause", "ts": 1793556009000}, 5]).encode()]
    with fn_api_pipeline() as p:
        parsed = (p | beam.Create([RawRecord(l, f"f:{i}") for i, l in enumerate(lines, 1)])
                  | ParseBeacons())
        util.assert_that(parsed.beacons | beam.Map(_with_ts),
                         util.equal_to([("v1", "heartbeat", 1793556000000),
                                        ("v1", "pause", 1793556009000)]), label="Beacons")
        util.assert_that(parsed.dead_letters | beam.Map(lambda d: (d.reason, d.source)),
                         util.equal_to([("invalid_json", "f:2"), ("not_an_object", "f:3#1")]),
                         label="DeadLetters")


def test_parse_beacons__rejects_bad_limit():
    with pytest.raises(ValueError):
        ParseBeacons(max_message_bytes=0)


@pytest.mark.parametrize("ts, arrival, expected", [
    (1793556000000, 1793556002000, 1793556000000),                  # 2 s of delivery: kept
    (1793556000000 + 3 * 86_400_000, 1793556002000, 1793556002000),  # 3 days ahead: arrival
    (1793556000000 - 3_600_000, 1793556002000, 1793556002000),       # 1 h behind: arrival
    (1793556000000 + 59_000, 1793556000000, 1793556059000),          # 59 s ahead: plausible
])
def test_parse_message__implausible_ts_is_replaced_by_arrival(ts, arrival, expected):
    from transforms.parse import TimeBounds
    raw = RawRecord(json.dumps({**GOOD, "ts": ts}).encode(), "s", arrival_ms=arrival)
    [b] = parse_message(raw, 1 << 20, TimeBounds(300_000, 60_000))
    assert (b.event_ms, b.client_ms) == (expected, ts)


def test_parse_message__collector_received_ms_is_the_arrival_when_the_source_has_none():
    from transforms.parse import TimeBounds
    payload = json.dumps({"events": [{**GOOD, "ts": 1793556000000 + 86_400_000}],
                          "received_ms": 1793556001000}).encode()
    [b] = parse_message(RawRecord(payload, "s"), 1 << 20, TimeBounds(300_000, 60_000))
    assert b.event_ms == 1793556001000 and b.client_ms == 1793556000000 + 86_400_000
    assert reason({**GOOD, "received_ms": "now"}) == "wrong_type:received_ms"


def test_parse_message__live_program_time_and_latency():
    [b] = parse({**GOOD, "stream_type": "live", "program_time_ms": 1793555990000,
                 "live_latency_ms": 10_000})
    assert (b.stream_type, b.program_time_ms, b.live_latency_ms) == ("live", 1793555990000, 10_000)


def test_to_beacon__ad_events_need_no_playhead_and_carry_their_ad_id():
    b = to_beacon({"event": "adplaying", "view_id": "v", "video_id": "movie", "ts": 1_700_000_000_000,
                   "ad_id": "ad-7"})
    assert (b.kind, b.playhead_ms, b.ad_id, b.video_id) == (EventKind.ADPLAYING, None, "ad-7", "movie")
    for name in ("adbreakstart", "adbreakend", "adplay", "adended", "aderror"):
        assert to_beacon({"event": name, "view_id": "v", "video_id": "m", "ts": 1_700_000_000_000}).kind.value == name
    with pytest.raises(Rejected) as err:
        to_beacon({"event": "adplay", "view_id": "v", "video_id": "m", "ts": 1_700_000_000_000, "ad_id": 1.5})
    assert err.value.reason == "wrong_type:ad_id"
