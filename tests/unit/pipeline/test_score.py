"""`stallwatch score`: the verdict per injected fault, the current version of
each alert, precision and recall per cause, and --strict's exit code."""

import json

import pytest

from pipeline import cli

TRUTH = {"faults": [
    {"kind": "broken_segment", "expect": "content", "video_id": "v1", "rendition": None,
     "start_ms": 60_000, "end_ms": 64_000},
    {"kind": "seek_hotspot", "expect": "no_content", "video_id": "v2",
     "start_ms": 120_000, "end_ms": 124_000},
]}


def _alert(alert_id, video_id, start_ms, end_ms, version=1, status="open"):
    return {"alert_id": alert_id, "cause": "content", "video_id": video_id, "rendition": None,
            "start_ms": start_ms, "end_ms": end_ms, "version": version, "status": status}


def _score(tmp_path, capsys, alerts, *flags, truth=TRUTH):
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    (tmp_path / "run_summary.json").write_text(json.dumps({"mode": "batch"}))
    (tmp_path / "alerts.jsonl").write_text("".join(json.dumps(a) + "\n" for a in alerts))
    code = cli.main(["score", f"--output={tmp_path}", f"--truth={tmp_path / 'truth.json'}", *flags])
    capsys.readouterr()
    return code, json.loads((tmp_path / "score.json").read_text())


def test_score__the_fault_found_and_the_negative_silent_passes_strict(tmp_path, capsys):
    code, result = _score(tmp_path, capsys, [_alert("a", "v1", 61_000, 63_000)], "--strict")
    assert code == 0 and result["all_ok"]
    assert [r["ok"] for r in result["faults"]] == [True, True]
    assert (result["content_precision"], result["content_recall"]) == (1.0, 1.0)


@pytest.mark.parametrize("alerts, verdicts", [
    ([], [False, True]),                                               # missed
    ([_alert("a", "v1", 61_000, 63_000), _alert("b", "v2", 121_000, 123_000)],
     [True, False]),                                                   # a false content alert
    ([_alert("a", "v1", 61_000, 63_000),
      _alert("a", "v1", 61_000, 63_000, version=2, status="retracted")],
     [False, True]),                                                   # retracted: no longer found
])
def test_score__a_miss_a_false_alert_or_a_retraction_fails_strict(tmp_path, capsys, alerts,
                                                                   verdicts):
    code, result = _score(tmp_path, capsys, alerts, "--strict")
    assert code == 1 and not result["all_ok"]
    assert [r["ok"] for r in result["faults"]] == verdicts
    assert _score(tmp_path, capsys, alerts)[0] == 0                   # without --strict: a report


def test_score__an_alert_wider_than_a_segment_allows_does_not_count(tmp_path, capsys):
    code, result = _score(tmp_path, capsys, [_alert("a", "v1", 20_000, 90_000)], "--strict")
    assert code == 1 and result["faults"][0]["found"] == "missed"
    assert result["content_precision"] == 0.0


def test_score__no_alerts_is_undefined_precision_not_perfect(tmp_path, capsys):
    code, result = _score(tmp_path, capsys, [], "--strict")
    assert code == 1
    assert (result["content_precision"], result["content_recall"]) == (None, 0.0)
    assert result["delivery_recall"] is None and result["viewer_recall"] is None


DELIVERY_AND_VIEWERS = {"faults": [
    {"kind": "cdn_outage", "expect": "delivery", "dimension": "cdn", "value": "cdn-b",
     "start_ts": 1_000_000, "end_ts": 2_000_000},
    {"kind": "bad_wifi_viewers", "expect": "viewer", "viewer_ids": [f"u{i}" for i in range(5)]},
]}


def _delivery(alert_id, dimension, value, start_ts, end_ts):
    return {"alert_id": alert_id, "cause": "delivery", "dimension": dimension, "value": value,
            "start_ts": start_ts, "end_ts": end_ts}


def _viewers(*ids):
    return [{"alert_id": f"viewer-{i}", "cause": "viewer", "viewer_id": i} for i in ids]


def test_score__delivery_precision_counts_alerts_on_other_dimensions_or_times(tmp_path, capsys):
    alerts = [_delivery("d1", "cdn", "cdn-b", 1_500_000, 1_560_000),
              _delivery("d2", "asn", "AS1", 1_500_000, 1_560_000),         # wrong dimension
              _delivery("d3", "cdn", "cdn-b", 3_000_000, 3_060_000),       # after the outage
              *_viewers("u0", "u1", "u2", "u3", "u4")]
    code, result = _score(tmp_path, capsys, alerts, "--strict", truth=DELIVERY_AND_VIEWERS)
    assert code == 0 and [r["ok"] for r in result["faults"]] == [True, True]
    assert result["delivery_precision"] == 1 / 3 and result["delivery_recall"] == 1.0
    assert (result["viewer_precision"], result["viewer_recall"]) == (1.0, 1.0)


@pytest.mark.parametrize("flagged, precision, recall, ok", [
    (("u0", "u1", "u2", "u3"), 1.0, 0.8, True),
    (("u0", "u1", "u2"), 1.0, 0.6, False),                             # too few found
    (("u0", "u1", "u2", "u3", "u4", "x1", "x2"), 5 / 7, 1.0, False),   # too many others
])
def test_score__the_viewer_fault_needs_both_recall_and_precision(tmp_path, capsys, flagged,
                                                                 precision, recall, ok):
    alerts = [_delivery("d1", "cdn", "cdn-b", 1_500_000, 1_560_000), *_viewers(*flagged)]
    code, result = _score(tmp_path, capsys, alerts, "--strict", truth=DELIVERY_AND_VIEWERS)
    assert (result["viewer_precision"], result["viewer_recall"]) == (precision, recall)
    assert result["faults"][1]["ok"] is ok and code == (0 if ok else 1)


def test_score__a_directory_without_a_run_is_an_error(tmp_path, capsys):
    (tmp_path / "truth.json").write_text(json.dumps(TRUTH))
    code = cli.main(["score", f"--output={tmp_path}", f"--truth={tmp_path / 'truth.json'}"])
    err = capsys.readouterr().err
    assert code == 2 and "no run_summary.json there" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "score.json").exists()
