"""Notifications from a streaming run against kinesis-mock: a live audience
with a broken clip-a segment and a cdn-b outage; a PagerDuty-format
receiver on loopback gets exactly one trigger and one resolve per alert, even
though the run is killed mid-incident and restarted to read the stream again
from its start (the ledger remembers what the receiver was told)."""

import collections
import os
import signal
import threading
import time

import pytest

from pipeline.generator import live
from pipeline.io.webhook import WebhookServer
from pipeline.results import outputs
from tests import ROOT, runs
from tests.streams import new_kinesis_stream

pytestmark = pytest.mark.integration

SECRET = "integration-secret"
FIGURES = os.path.join(ROOT, "out", "notify-test-figures.json")
# Seconds from the first publish to the content trigger: the 5th affected
# viewer reaches the broken segment ~62 s after the first publish, the alert
# follows within seconds, and is told once open for --notify_pending_s (30).
TRIGGER_BOUND_S = 180


def _publish(stream, result):
    try:
        result.update(live.publish_live(stream, 200 / 30, 30, seed=3, progress=lambda _: None,
                                        outage=True))
    except Exception as exc:  # reported by the test
        result["error"] = exc


def _wait(condition, bound_s, what, run, seen):
    deadline = time.time() + bound_s
    while not condition():
        if time.time() > deadline or run.poll() is not None:
            printed = runs.kill(run)
            raise AssertionError(f"{what} within {bound_s} s; received {seen()}; "
                                 f"run printed:\n{printed[-4000:]}")
        time.sleep(0.5)


def _events(server):
    return [(r.json["dedup_key"], r.json["event_action"]) for r in server.received]


# Timeout: trigger 180 + publisher 400 + triggers 120 + 5 + drain 300 s, + 60 s
@pytest.mark.timeout(1065)
def test_kinesis__content_fault_and_cdn_outage__one_trigger_one_resolve_per_alert_across_a_kill(
        kinesis_emulator, tmp_path):
    beacons, _ = new_kinesis_stream("beacons", shards=2)
    first_out, second_out = str(tmp_path / "first"), str(tmp_path / "second")
    with WebhookServer(secret=SECRET) as pagerduty:
        flags = ["--streaming", f"--source={beacons}", "--close_after_s=60",
                 f"--notify=pagerduty:{pagerduty.url('/v2/enqueue')}?routing_key=R0UT1NG",
                 f"--notify_secret={SECRET}", f"--notify_ledger={tmp_path / 'ledger'}"]
        first = runs.start(*flags, f"--output={first_out}",
                           f"--checkpoint={tmp_path / 'first.json'}")
        published: dict = {}
        started = time.time()
        publisher = threading.Thread(target=_publish, args=(beacons, published), daemon=True)
        publisher.start()
        _wait(lambda: any(r.json.get("event_action") == "trigger" for r in pagerduty.received),
              TRIGGER_BOUND_S, "no trigger", first, lambda: _events(pagerduty))
        trigger_s = time.time() - started
        runs.kill(first)                      # a crash mid-incident: nothing drained
        told_before_kill = len(pagerduty.received)

        # Restarted with a new checkpoint: it reads the whole stream again.
        second = runs.start(*flags, f"--output={second_out}",
                            f"--checkpoint={tmp_path / 'second.json'}")
        publisher.join(timeout=400)
        assert not publisher.is_alive() and "error" not in published, published.get("error")

        def triggered():
            return {k for k, action in _events(pagerduty) if action == "trigger"}

        _wait(lambda: len(triggered()) >= 2, 120, "fewer than 2 triggers", second,
              lambda: _events(pagerduty))
        resolved_before_drain = sum(action == "resolve" for _, action in _events(pagerduty))
        time.sleep(5)
        second.send_signal(signal.SIGINT)     # the end of the input: what is still open closes
        out, _ = second.communicate(timeout=300)
        assert second.returncode == 0 and "Traceback" not in out, out[-4000:]

    summary = runs.summary(second_out)
    assert summary["accounting"]["ok"], summary["accounting"]
    assert summary["input_records"] == published["truth"]["input_records"]
    final = {a["alert_id"]: a for a in outputs.alerts(second_out) if a["cause"] != "viewer"}
    assert sorted((a["cause"], a["video_id"] or a["value"]) for a in final.values()) == [
        ("content", "clip-a"), ("delivery", "cdn-b")]
    versions = outputs.alert_versions(second_out)
    per_alert = collections.defaultdict(list)
    for key, action in _events(pagerduty):
        per_alert[key].append(action)
    # Each final alert, and any other the receiver heard of (one opened and
    # later retracted), got exactly one trigger then one resolve.
    assert set(final) <= set(per_alert) <= {a["alert_id"] for a in versions}, _events(pagerduty)
    assert all(actions == ["trigger", "resolve"] for actions in per_alert.values()), per_alert
    assert all(r.signed and r.status == 200 for r in pagerduty.received)
    trigger = next(r.json for r in pagerduty.received if r.json["event_action"] == "trigger")
    assert trigger["routing_key"] == "R0UT1NG" and trigger["payload"]["source"] == "stallwatch"

    sent = summary["notifications"]
    runs.record("kinesis_direct_pagerduty", {
        "first_trigger_after_first_publish_s": round(trigger_s, 1),
        "resolves_before_drain": resolved_before_drain,
        "requests_before_kill": told_before_kill, "requests": len(pagerduty.received),
        "alert_versions_written_second_run": len(versions),
        "alert_versions_notify_considered_second_run": sent["alert_versions"],
        "notifications_sent_second_run": sent["sent"], "retries": sent["retries"],
        "dead_letters": sent["dead_letters"], "records": summary["input_records"]}, FIGURES)
