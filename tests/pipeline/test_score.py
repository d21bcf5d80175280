"""`stallwatch score`: the verdict per injected fault, the current version of
each alert, and --strict's exit code."""

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


def _score(tmp_path, capsys, alerts, *flags):
    (tmp_path / "truth.json").write_text(json.dumps(TRUTH))
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
