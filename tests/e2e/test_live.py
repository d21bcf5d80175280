"""A live HLS event in a real browser: viewers who joined at different times, each at
their own playhead, stall at one moment of program time.

The origin serves the e2e VOD as a live event (tests.e2e.origin.live_playlist: a sliding
window of 2 s segments, each published when complete, dated with EXT-X-PROGRAM-DATE-TIME
= the wall clock) and holds one segment for every viewer. Headless Chromium viewers on
hls.js join 3 s apart; stallwatch.js sends beacon v1 with the program time hls.js reads
from the playlist (``playingDate``). The pipeline runs over the collector's beacons. Needs
`make e2e-tools browser` (make test).
"""

from __future__ import annotations

import os
import signal
import time
from urllib.parse import urlencode

import pytest

from tests import runs
from tests.e2e.test_players import DELAY_S, _record, _split, vod  # noqa: F401  (vod: a fixture)

pytestmark = pytest.mark.integration

VIEWERS = 5
STAGGER_S = 3.0
# Published 24 s after the event began (tests.e2e.origin: 4 segments at the start, one
# every 2 s): after the last viewer joined at 12 s and settled.
HELD_SEGMENT = 16
PLAY_S = 46.0
VIDEO_ID = "live-1"
TOLERANCE_MS = 1_000


@pytest.fixture(scope="module")
def live(vod, tmp_path_factory):  # noqa: F811
    from tests.e2e.browsers import watch
    from tests.e2e.origin import Origin
    tmp = tmp_path_factory.mktemp("live")
    sink = str(tmp / "sink")
    collector, collector_url = runs.start_collector(f"file://{sink}")
    origin = Origin(vod["dir"], delay_segment=HELD_SEGMENT, delay_s=DELAY_S,
                    live_since=time.time()).start()
    try:
        urls = [f"{origin.url}/clients/examples/hls.html?" + urlencode(
                    {"src": f"{origin.url}/hls/master.m3u8", "collector": collector_url,
                     "vid": f"live-{i}", "cid": VIDEO_ID, "beacons": "1"})
                for i in range(VIEWERS)]
        browsers = watch(urls, PLAY_S, stagger_s=STAGGER_S)
    finally:
        origin.stop()
        collector.send_signal(signal.SIGTERM)
        out, _ = collector.communicate(timeout=60)
    assert collector.returncode == 0, out
    output = str(tmp / "run")
    summary = runs.stallwatch(f"--source={_split(sink, str(tmp))['beacons']}",
                              f"--output={output}")[0]
    held_ms = origin.program_start_ms + (HELD_SEGMENT - vod["first_segment"]) * vod["segment_s"] * 1000
    return {"browsers": browsers, "summary": summary, "views": runs.views(output),
            "held_program_ms": held_ms, "delayed": origin.delayed()}


def test_live_viewers_stall_at_one_program_time_from_different_playheads(live):
    for result in live["browsers"]:
        assert result["page_errors"] == [], result["url"]
    assert live["summary"]["dead_letters"] == 0
    views = [v for v in live["views"] if v["play_requested"]]
    assert len(views) == VIEWERS
    stalls = {}
    for v in views:
        assert (v["stream_type"], v["program_time_from"]) == ("live", "program_time"), v["viewer_id"]
        stalls[v["viewer_id"]] = [(s["playhead_ms"], s["playhead_ms"] + v["program_offset_ms"])
                                  for s in v["stalls"]]
    _record("live.stalls", {"held_program_ms": live["held_program_ms"], "stalls": stalls,
                            "held_requests": len(live["delayed"])})
    at_held = {viewer: [ph for ph, program in placed
                        if abs(program - live["held_program_ms"]) <= TOLERANCE_MS]
               for viewer, placed in stalls.items()}
    assert all(at_held.values()), (live["held_program_ms"], stalls)
    playheads = sorted(found[0] for found in at_held.values())
    assert playheads[-1] - playheads[0] > 2 * TOLERANCE_MS, stalls
