"""CTA-5004-B (CMCD v2) §8.2, the event-mode examples, one test each.

The report lines are the spec's own, as the SVTA common-media-library
publishes them (libs/cmcd/test/data/CTA_5004_B_EXAMPLES.ts: document
whitespace removed; 8.2.5's first line carries ``bs`` and its second ``ts``
is the first plus the 1500 ms stall, as there). What stallwatch does with each
key and event: the conformance table in docs/cmcd.md.
"""

import apache_beam as beam
import orjson
from apache_beam.testing import util
from apache_beam.transforms.window import TimestampedValue

from tests.builders import fn_api_pipeline

from transforms.contributions import placed
from transforms.facts import view_facts
from transforms.model import Beacon, DeadLetter, EventKind, RawRecord, ResponseRow
from transforms.parse import parse_message
from transforms.responses import AggregateResponses
from transforms.thresholds import Thresholds
from transforms.viewstate import summarize_views

K = EventKind

EX_8_2_1 = 'e=t,ts=1764752400000,v=2'
EX_8_2_2 = (
    'bl=(0),cid="content-id-123",e=t,h="example.com",pt=0,sid="session-id-123",sn=1,sta=s,su,ts=1764752400000,v=2',
    'bl=(6000),br=(4200;v 256;a),cid="content-id-123",e=t,h="example.com",lb=(523;v 64;a),msd=812,mtp=(87000;v 49000;a),pb=(4200;v 256;a),pt=29188,sf=d,sid="session-id-123",sn=2,st=v,sta=p,tb=(4200;v 256;a),tpb=(4200;v 256;a),ts=1764752430000,v=2',
    'bl=(3200),br=(4200;v 256;a),bs,bsd=(720;v),cid="content-id-123",e=t,ec=("MEDIA_ERR_NETWORK"),h="example.com",lb=(523;v 64;a),mtp=(89000;v 52000;a),pb=(4200;v 256;a),pt=59188,sf=d,sid="session-id-123",sn=3,st=v,sta=p,tb=(4200;v 256;a),tpb=(4200;v 256;a),ts=1764752460000,v=2',
    'bl=(6000),br=(4200;v 256;a),cid="content-id-123",e=t,h="example.com",lb=(523;v 64;a),mtp=(81000;v 55000;a),pb=(4200;v 256;a),pt=89188,sf=d,sid="session-id-123",sn=4,st=v,sta=p,tb=(4200;v 256;a),tpb=(4200;v 256;a),ts=1764752490000,v=2',
    'bl=(0),br=(4200;v 256;a),cid="content-id-123",e=t,h="example.com",lb=(523;v 64;a),mtp=(82000;v 55000;a),pb=(4200;v 256;a),pr=0,pt=111000,sf=d,sid="session-id-123",sn=5,st=v,sta=e,tb=(4200;v 256;a),tpb=(4200;v 256;a),ts=1764752520000,v=2',
)
EX_8_2_3 = 'cid="bbb",cmsdd="ZXRwPTEyNTAwO3J0dD0zNTttYj02MDAwO3JkPTIwMA==",cmsds="c2lkPSI5YTNiLTIxY2QiO2JyPTQ1MDA7ZD00MDAwO290PXY7c3Q9dg==",e=rr,nor=("video/segment-6.m4v"),ot=v,rc=200,sid="session1",ts=1763657019723,ttfb=180,ttlb=200,url="video/segment-5.m4v",v=2'
EX_8_2_4 = 'cid="content-id-123",e=e,ec=("CODEC_NOT_SUPPORTED"),sid="session-id-123",ts=1764269150213,v=2'
EX_8_2_5 = (
    'bs,cid="content-id-123",e=ps,sid="session-id-123",sta=r,ts=1764269150889,v=2',
    'bs,bsd=(1500),cid="content-id-123",e=ps,sid="session-id-123",sta=p,ts=1764269152389,v=2',
)
EX_8_2_6 = 'bl=(0),cid="content-id-123",e=ps,pt=30000,sid="session-id-123",sta=k,ts=1764269150529,v=2'
EX_8_2_7 = 'cid="ad-content-555",e=sk,sid="session-id-123",ts=1764269150076,v=2'
EX_8_2_8 = (
    'cid="movie-123",e=abs,nr,sid="session-id-123",ts=1764269150186,v=2',
    'cid="ad-001",e=as,sid="session-id-123",ts=1764269150934,v=2',
    'cid="ad-001",e=ae,nr,sid="session-id-123",ts=1764269170901,v=2',
    'cid="movie-123",e=abe,sid="session-id-123",ts=1764269170331,v=2',
)


def parse(*lines: str) -> list:
    """The reports as one collector record (pipeline/collector/server.py), parsed."""
    record = {"cmcd": "\n".join(lines), "received_ms": None, "viewer_id": "viewer-1"}
    return parse_message(RawRecord(orjson.dumps(record), "collector.ndjson:1"), 1_048_576)


def views(*lines: str) -> list:
    beacons = parse(*lines)
    assert all(isinstance(b, Beacon) for b in beacons), beacons
    return summarize_views(beacons[0].view_id, beacons)


def report(line: str, **keys) -> str:
    """``line`` with keys replaced or added (``ts=...``, ``pt=...``), sorted as the spec sorts them."""
    fields = dict(part.split("=", 1) if "=" in part else (part, None) for part in line.split(","))
    fields.update({k: str(v) for k, v in keys.items()})
    return ",".join(k if v is None else f"{k}={v}" for k, v in sorted(fields.items()))


def test_cta5004b_8_2_1__a_report_without_session_is_one_dead_letter_with_its_payload():
    """§8.2.1: the minimal time-interval report (e, ts, v). Without sid and cid
    it belongs to no view: one dead letter, reason stable, payload the line."""
    [dead] = parse(EX_8_2_1)
    assert isinstance(dead, DeadLetter)
    assert (dead.reason, dead.payload) == ("missing_field:sid", EX_8_2_1)


def test_cta5004b_8_2_2__interval_reports_count_the_starvation_and_take_msd_as_startup():
    """§8.2.2: five 30 s interval reports; the third carries bs, bsd=(720;v).
    The stall counts as rebuffering, placed between the two reports' pt, too
    coarsely to cluster; startup is the player's msd, not the 30 s between
    the sta=s and sta=p samples."""
    [view] = views(*EX_8_2_2)
    assert (view.video_id, view.protocol) == ("content-id-123", "cmcd")
    assert (view.rebuffer_count, view.rebuffer_ms, view.reported_rebuffer_ms) == (1, 720, 720)
    assert (view.startup_ms, view.reported_startup_ms) == (812, 812)
    assert (view.watch_ms, view.playing_ms) == (120_000, 120_000 - 812 - 720)
    [stall] = view.stalls
    assert (stall.playhead_ms, stall.playhead_uncertainty_ms, stall.duration_ms) == (44_188, 15_000, 720)
    assert 1764752430000 < stall.start_ms < 1764752460000 - 720
    assert (view.max_playhead_ms, view.avg_bitrate_bps, view.playback_failure) == (111_000, 4_200_000, False)
    [fact] = view_facts(view, ()).stalls
    assert not placed(fact, Thresholds().bucket_ms)      # ±15 s is wider than a 5 s bucket


def test_cta5004b_8_2_2__a_starvation_between_reports_a_second_apart_is_clustered():
    """The placement rule, the other way: reports 1 s apart place the stall
    within ±500 ms, narrower than a bucket, so it enters clustering."""
    lines = [report(EX_8_2_2[1], pt=29_000, ts=1764752430000),
             report(EX_8_2_2[3], pt=30_000, ts=1764752431000, bs="?1", bsd="(300;v)", sn=3)]
    [view] = views(*lines)
    [stall] = view.stalls
    assert (stall.playhead_ms, stall.playhead_uncertainty_ms, view.rebuffer_ms) == (29_500, 500, 300)
    assert placed(view_facts(view, ()).stalls[0], Thresholds().bucket_ms)


def test_cta5004b_8_2_3__a_response_report_carries_status_and_timings():
    """§8.2.3: a response-received report. It is delivery evidence (status,
    TTFB, TTLB; docs/metrics.md), not a play state: a heartbeat of its view."""
    [b] = parse(EX_8_2_3)
    assert (b.kind, b.cmcd_event, b.video_id, b.view_id) == (K.HEARTBEAT, "rr", "bbb", "session1")
    assert (b.response_code, b.ttfb_ms, b.ttlb_ms, b.url) == (200, 180, 200, "video/segment-5.m4v")
    assert b.host is None               # a relative url and no h: no host to group by
    with_host = parse(report(EX_8_2_3, url='"https://cdn-a.example.com/video/segment-5.m4v"', rc=404))
    assert (with_host[0].host, with_host[0].response_code) == ("cdn-a.example.com", 404)
    minute = 1763657019723 // 60_000 * 60_000
    with fn_api_pipeline() as p:
        rows = (p | beam.Create([TimestampedValue(x, x.event_ms / 1000) for x in [b] + with_host])
                | AggregateResponses())
        util.assert_that(rows, util.equal_to([
            ResponseRow(minute, "all", "all", 2, 1, 50.0, 180.0, 180.0, 200.0),
            ResponseRow(minute, "host", "cdn-a.example.com", 1, 1, 100.0, 180.0, 180.0, 200.0)]))


def test_cta5004b_8_2_4__an_error_report_without_sta_is_not_a_playback_failure():
    """§8.2.4: e=e with ec and no sta. The spec reports a fatal error as
    sta=f (§8.1.5's second report); error codes alone may be recoverable, so
    the view records no failure."""
    [b] = parse(EX_8_2_4)
    assert (b.kind, b.fatal, b.error_code) == (K.ERROR, False, "CODEC_NOT_SUPPORTED")
    [view] = views(EX_8_2_4)
    assert (view.playback_failure, view.error_code) == (False, None)
    [view] = views(EX_8_2_4, report(EX_8_2_4, sta="f", ts=1764269150300))
    assert (view.playback_failure, view.error_code) == (True, "CODEC_NOT_SUPPORTED")


def test_cta5004b_8_2_5__a_starvation_reported_as_it_happens_is_one_stall_of_bsd():
    """§8.2.5: bs with sta=r, then sta=p with bsd=(1500): one 1.5 s stall,
    although no playing state was seen before it (sta=r is not sent during
    startup, so the starvation is a stall)."""
    [view] = views(*EX_8_2_5)
    assert (view.rebuffer_count, view.rebuffer_ms, view.reported_rebuffer_ms) == (1, 1500, 1500)
    [stall] = view.stalls
    assert (stall.start_ms, stall.duration_ms, stall.playhead_uncertainty_ms) == (1764269150889, 1500, 0)


def test_cta5004b_8_2_6__a_seek_and_its_empty_buffer_are_seek_latency_not_rebuffering():
    """§8.2.6: sta=k at pt=30000 with an empty buffer, inside a view that
    played: one seek; the wait for data at the target is seek latency."""
    ts = 1764269150529
    lines = [report(EX_8_2_6, sta="s", pt=0, ts=ts - 3000), report(EX_8_2_6, sta="p", pt=0, ts=ts - 2500),
             EX_8_2_6, report(EX_8_2_6, sta="r", ts=ts + 200), report(EX_8_2_6, sta="p", ts=ts + 600)]
    [view] = views(*lines)
    assert (view.seek_count, view.seek_ms, view.rebuffer_count) == (1, 600, 0)
    assert view.startup_ms == 500


def test_cta5004b_8_2_7__a_skipped_ad_ends_the_ad_not_the_view():
    """§8.2.7: e=sk on the ad's cid: the ad ends (skipped); inside a break of
    movie-123 it neither splits the view nor counts as its content."""
    [b] = parse(EX_8_2_7)
    assert (b.kind, b.ad_id) == (K.ADENDED, "ad-content-555")
    ts = 1764269150076
    lines = [report(EX_8_2_8[0], ts=ts - 5000), report(EX_8_2_8[1], cid='"ad-content-555"', ts=ts - 4000),
             EX_8_2_7, report(EX_8_2_8[3], ts=ts + 100)]
    [view] = views(*lines)
    assert (view.video_id, view.ad_breaks, view.ads, view.ad_ms, view.watch_ms) == (
        "movie-123", 1, 1, 5100, 0)


def test_cta5004b_8_2_8__an_ad_break_is_ad_time_of_one_view():
    """§8.2.8: abs (movie hidden), as and ae of ad-001, abe. One view of
    movie-123 with one break and one ad: its time is ad time, not watch time.
    (The example's abe is stamped before its ae; ordered by ts, the break
    ends first and the late ae changes nothing.)"""
    [view] = views(*EX_8_2_8)
    assert (view.video_id, view.ad_breaks, view.ads) == ("movie-123", 1, 1)
    assert (view.ad_ms, view.watch_ms, view.rebuffer_count) == (1764269170331 - 1764269150186, 0, 0)
    assert [(r.video_id, r.start_ms, r.end_ms) for r in view.played] == [
        ("ad-001", 0, 1764269170331 - 1764269150934)]


def test_cta5004b_8_2_8__content_around_the_break_keeps_its_watch_time_and_the_ad_its_stall():
    """The break inside a playing view: content time before and after is
    watch time, the 20 s break is not; a stall during the ad is the ad's
    (its video_id, at its position in the ad), not the content's rebuffering."""
    t0 = 1764269150186
    movie = 'cid="movie-123",e=ps,sid="session-id-123",v=2'
    ad = 'cid="ad-001",e=ps,sid="session-id-123",v=2'
    lines = [report(movie, sta="s", ts=t0 - 11_000, pt=0), report(movie, sta="p", ts=t0 - 10_000, pt=0),
             *EX_8_2_8[:2],
             report(ad, sta="r", ts=t0 + 5_748), report(ad, sta="p", ts=t0 + 7_748),
             *EX_8_2_8[2:],
             report(movie, sta="p", ts=1764269170331 + 1, pt=10_000),
             report(movie, sta="e", ts=1764269170331 + 30_001, pt=40_000)]
    [view] = views(*lines)
    assert (view.video_id, view.ad_breaks, view.ads) == ("movie-123", 1, 1)
    assert (view.startup_ms, view.rebuffer_count, view.rebuffer_ms) == (1000, 0, 0)
    assert view.watch_ms == 1_000 + 10_000 + 30_001
    assert view.ad_ms == 1764269170331 - t0
    [stall] = view.stalls
    assert (stall.video_id, stall.playhead_ms, stall.duration_ms) == ("ad-001", 5_000, 2_000)
    facts = view_facts(view, ())
    assert facts.stalls == () and [a.video_id for a in facts.ads] == ["ad-001"]
    assert facts.ads[0].stalls[0].playhead_ms == 5_000


RESERVED_KEYS = set(
    "ab bg bl br bs bsa bsd bsda cen cid cmsdd cmsds cs d dfa dl e ec h lab lb ltc msd mtp nor nr "
    "nrr ot pb pr pt rc rtp sf sid smrt sn st sta su tab tb tbl tpb ts ttfb ttfbb ttlb url v".split())


def test_conformance_table__names_every_reserved_key_once_and_the_used_ones_are_read():
    """docs/cmcd.md's table covers CTA-5004-B's 50 keys, each once, and a key
    it calls used is read by the parser (transforms/cmcd.py), a kept or
    ignored one is not."""
    import pathlib
    import re
    root = pathlib.Path(__file__).resolve().parents[3]
    doc = (root / "docs" / "cmcd.md").read_text()
    table = doc[doc.index("### Keys"):doc.index("**Keys:")]
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| `")]
    status = {cells[1].strip().strip("`"): cells[3].strip() for cells in rows}
    assert len(rows) == len(status) == 50 and set(status) == RESERVED_KEYS
    source = (root / "transforms" / "cmcd.py").read_text()
    read = set(re.findall(r'fields(?:\.get\(|, )"(\w+)"', source))
    used = {k for k, v in status.items() if v == "used"}
    assert used <= read, used - read
    assert not ({k for k, v in status.items() if v != "used"} & read)
    counts = re.search(r"\*\*Keys: (\d+) used, (\d+) kept, (\d+) ignored", doc).groups()
    assert tuple(map(int, counts)) == tuple(
        sum(1 for v in status.values() if v == s) for s in ("used", "kept", "ignored"))
