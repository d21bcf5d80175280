"""BeaconCoder: every field survives, for every kind, set or unset."""

import dataclasses

from apache_beam import coders
from apache_beam.typehints import typehints

from tests.builders import ev
from transforms.coders import BeaconCoder
from transforms.model import Beacon, EventKind


def test_beacon_coder__round_trips_every_kind_and_every_field():
    coder = BeaconCoder()
    full = dataclasses.replace(
        ev("error", 12.5, 3.25, viewer="u9", rendition="720p", bitrate_bps=3_000_000,
           cdn="cdn-a", asn="AS1", country="DE", browser="Safari", os="iOS", device="tv",
           player_name="hls.js", player_version="1.7.4", stream_type="on-demand",
           video_duration_ms=60_000, error_code="4", error_message="é ☃ \x00",
           fatal=False, business_error=True),
        client_ms=1, seq=2**62, event_id="e" * 256, source="f.ndjson:3#1", protocol="cmcd",
        playhead_estimated=True, reported_startup_ms=0, reported_stall_ms=123)
    bare = Beacon(view_id="v", video_id="x", kind=EventKind.VIEWSTART, event_ms=0)
    for beacon in [full, bare] + [dataclasses.replace(bare, kind=k) for k in EventKind]:
        back = coder.decode(coder.encode(beacon))
        assert back == beacon and type(back) is Beacon
        assert back.kind is beacon.kind                     # the enum member, not its string
        assert [getattr(back, f.name) for f in dataclasses.fields(Beacon)] == \
               [getattr(beacon, f.name) for f in dataclasses.fields(Beacon)]
    assert len(coder.encode(full)) < len(coders.PickleCoder().encode(full))


def test_beacon_coder__is_what_beam_picks_for_beacons_and_keyed_beacons():
    assert isinstance(coders.registry.get_coder(Beacon), BeaconCoder)
    keyed = coders.registry.get_coder(typehints.Tuple[str, Beacon])
    assert isinstance(keyed, coders.TupleCoder)
    assert isinstance(keyed.coders()[1], BeaconCoder)
