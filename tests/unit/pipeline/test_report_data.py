"""The data behind the report's charts and tables, worked out by hand."""

import dataclasses
import json

import pyarrow as pa

from pipeline.io import files
from pipeline.results import report_data
from tests.builders import make_view, ms


def table(views):
    return pa.Table.from_pylist([files.view_row(v) for v in views], schema=files.VIEW_SCHEMA)


def test_content_profile__distinct_stalled_and_exposed_viewers_per_bucket():
    views = table([
        make_view("a", "u1", played=((0, 30, None),), stalls=((12, 12.5),)),
        make_view("a2", "u1", played=((0, 30, None),), stalls=((500, 13),)),   # same viewer again
        make_view("b", "u2", played=((0, 9, None),)),                            # leaves at 9 s
        make_view("c", "u3", played=((20, 30, None),), stalls=((40, 25),)),      # joined at 20 s
    ])
    alert = {"video_id": "vid", "rendition": None}
    p = report_data.content_profile(report_data.video_rows(views, "vid"), alert,
                                    bucket_ms=10_000, lo_ms=0, hi_ms=30_000)
    assert p["bucket_starts_ms"] == [0, 10_000, 20_000]
    assert p["stalls"] == [0, 1, 1]          # u1 counted once in [10, 20); u3 at 25 s
    assert p["exposure"] == [2, 1, 2]        # u1+u2 | u1 | u1+u3 (u3's 20 s is bucket 2)


def test_content_profile__rendition_alert_counts_that_rendition_only():
    views = table([
        make_view("a", "u1", played=((0, 30, "1080p"),), stalls=((12, 12),), rendition="1080p"),
        make_view("b", "u2", played=((0, 30, "480p"),), stalls=((12, 12),), rendition="480p"),
    ])
    p = report_data.content_profile(report_data.video_rows(views, "vid"),
                                    {"video_id": "vid", "rendition": "1080p"}, 10_000, 0, 30_000)
    assert p["stalls"] == [0, 1, 0] and p["exposure"] == [1, 1, 1]


def test_content_profile__a_live_alert_counts_on_program_time():
    # u1 and u2 play different playheads of one live stream; program time puts
    # their stalls together. u3's player reported no program time: left out.
    live = [dataclasses.replace(make_view(v, u, played=((a, a + 30, None),), stalls=((9, a + 12),),
                                          stream_type="live"), program_offset_ms=off)
            for v, u, a, off in (("a", "u1", 100, ms(0) - 100_000), ("b", "u2", 7000, ms(0) - 7_000_000))]
    live.append(make_view("c", "u3", played=((0, 30, None),), stalls=((9, 12),), stream_type="live"))
    rows = report_data.video_rows(table(live), "vid")
    alert = {"video_id": "vid", "rendition": None, "timeline": "program"}
    assert report_data.position_range(rows, program=True) == (ms(0), ms(30))
    p = report_data.content_profile(rows, alert, 10_000, ms(0), ms(30))
    assert p["bucket_starts_ms"] == [ms(0), ms(10), ms(20)]
    assert p["stalls"] == [0, 2, 0] and p["exposure"] == [2, 2, 2]


def test_content_profile__an_ad_alert_counts_the_ad_in_the_views_that_showed_it():
    # u1 and u2 watch different videos with ad-7 in a break; u1 stalls 12 s
    # into the ad and at 25 s of the content. u3 saw no ad.
    from tests.builders import watched
    from transforms.viewstate import summarize_views
    views = [summarize_views(b[0].view_id, b)[0] for b in (
        watched("a", "u1", "vid", to_s=60, ad_at_s=20, ad_stall_at_s=12, stall_at_s=25),
        watched("b", "u2", "other", to_s=60, ad_at_s=5),
        watched("c", "u3", "vid", to_s=60))]
    rows = report_data.video_rows(table(views), "ad-7")
    assert [r["view_id"] for r in rows] == ["a", "b"]
    p = report_data.content_profile(rows, {"video_id": "ad-7", "rendition": None}, 10_000, 0, 30_000)
    assert p["stalls"] == [0, 1, 0] and p["exposure"] == [2, 2, 2]
    content = report_data.content_profile(report_data.video_rows(table(views), "vid"),
                                          {"video_id": "vid", "rendition": None}, 10_000, 0, 30_000)
    assert content["stalls"] == [0, 0, 1] and content["exposure"] == [2, 2, 2]


def test_delivery_profile__alert_value_first_then_biggest_then_other():
    views = [make_view(f"v{i}", f"u{i}", start_s=0, played=((0, 900, None),),
                       stalls=((120, 10), (130, 20)) if i < 3 else ((400, 10),), cdn=cdn)
             for i, cdn in enumerate(["b", "b", "b", "a", "c", "d", "e", "f", "g"])]
    alert = {"dimension": "cdn", "value": "b", "start_ts": ms(60), "end_ts": ms(180)}
    p = report_data.delivery_profile(table(views), alert, pad_ms=5 * 60_000, top=3)
    names = list(p["series"])
    assert names[0] == "b" and names[-1] == "other (4)" and len(names) == 4
    assert sum(p["series"]["b"]) == 6
    assert sum(sum(v) for v in p["series"].values()) == 6 + 6    # every stall once
    assert len(p["minutes_ms"]) == len(p["series"]["b"])


def test_main_range__ignores_far_off_clocks_and_counts_them():
    metrics = [{"dimension": "all", "minute_ms": m * 60_000, "views": 10} for m in range(100, 200)]
    metrics += [{"dimension": "all", "minute_ms": 5 * 60_000, "views": 1},
                {"dimension": "cdn", "minute_ms": 9_000 * 60_000, "views": 50}]
    lo, hi, outside = report_data.main_range(metrics, pad_ms=0)
    assert (lo, hi, outside) == (100 * 60_000, 199 * 60_000, 1)


def test_breakdown_rows__top_values_then_other():
    views = [make_view(f"v{i}", f"u{i}", cdn=c, stalls=((5, 5),) if c == "x" else ())
             for i, c in enumerate("xxxyyz")]
    rows = report_data.breakdown_rows(table(views), "cdn", top=2)
    assert [(r["value"], r["views"]) for r in rows] == [("x", 3), ("y", 2), ("other (1 values)", 1)]
    assert rows[0]["rebuffer_pct"] > 0 and rows[1]["rebuffer_pct"] == 0


def test_qoe__headline_numbers():
    views = [make_view("a", "u1", played=((0, 60, None),), stalls=((10, 10),)),
             make_view("b", "u2", played=((0, 60, None),))]
    q = report_data.qoe(table(views))
    assert q["views"] == 2 and q["viewers"] == 2
    assert q["rebuffer_pct"] == 100 * 3000 / 120_000
    assert q["startup_p50_s"] == 1.0 and q["failure_pct"] == 0.0


def test_dead_letter_examples__at_most_n_per_reason(tmp_path):
    with open(tmp_path / "dead_letter-00000-of-00001.jsonl", "w") as f:
        for i in range(10):
            f.write(json.dumps({"reason": "invalid_json" if i % 2 else "oversize",
                                "payload": str(i), "source": f"f:{i}"}) + "\n")
    examples = report_data.dead_letter_examples(str(tmp_path), per_reason=2)
    assert {k: [e["payload"] for e in v] for k, v in examples.items()} == {
        "oversize": ["0", "2"], "invalid_json": ["1", "3"]}
