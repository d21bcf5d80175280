"""Notifications against a real HTTP server on loopback (pipeline/io/webhook.py):
receipt, signatures, retries with backoff, Retry-After, timeouts, a receiver
down, the payload of each format, and the Notify transform end to end with
its ledger across a restart."""

import json
import socket
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import assert_that, equal_to

from pipeline.io import notify
from pipeline.io.notify import Delivery, Ledger, Notify, deliver, payload, receiver, verify
from pipeline.io.webhook import WebhookServer
from tests.builders import alert, fn_api_pipeline, ms
from transforms.model import Notice, Notification
from transforms.notices import Notified

FAST = Delivery(timeout_s=2.0, retries=3, backoff_s=0.05, backoff_cap_s=0.2, rate_per_min=60_000,
                burst=1_000, trip_after=2, trip_s=60.0)
SECRET = "s3cret"


def _script(*answers):
    """Answer the n-th request with answers[n] (status, headers, delay); 200 after them."""
    return lambda index, path: answers[index] if index < len(answers) else (200, {}, 0.0)


def _headers(body, secret=SECRET):
    def make():
        now = int(time.time())
        return {"Content-Type": "application/json", notify.TIMESTAMP_HEADER: str(now),
                notify.SIGNATURE_HEADER: notify.signature(secret, now, body)}
    return make


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- delivery -----------------------------------------------------------------------

def test_deliver__received_and_signature_verifies():
    body = b'{"x":1}'
    with WebhookServer(secret=SECRET) as server:
        outcome = deliver(server.url("/hook"), body, _headers(body), FAST)
    assert outcome == (200, 1, None, "")
    [got] = server.received
    assert got.body == body and got.signed is True and got.path == "/hook"


def test_deliver__wrong_secret__refused_401_not_retried():
    body = b'{"x":1}'
    with WebhookServer(secret=SECRET) as server:
        outcome = deliver(server.url(), body, _headers(body, secret="other"), FAST)
    assert (outcome.status, outcome.attempts, outcome.reason) == (401, 1, "http_401")
    assert [r.signed for r in server.received] == [False]


def test_verify__tampered_body_or_stale_timestamp_refused():
    body = b'{"x":1}'
    signed = notify.signature(SECRET, 1_000, body)
    assert verify(SECRET, "1000", signed, body, now_s=1_010)
    assert not verify(SECRET, "1000", signed, b'{"x":2}', now_s=1_010)
    assert not verify(SECRET, "1000", signed, body, now_s=1_000 + 301)
    assert not verify(SECRET, "soon", signed, body, now_s=1_000)


def test_deliver__500s_then_success__retried_with_growing_backoff():
    with WebhookServer(script=_script((500, {}, 0), (503, {}, 0))) as server:
        outcome = deliver(server.url(), b"{}", lambda: {}, FAST, jitter=lambda: 1.0)
    assert (outcome.status, outcome.attempts, outcome.reason) == (200, 3, None)
    gaps = [b.at_s - a.at_s for a, b in zip(server.received, server.received[1:])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1          # backoff_s, then doubled


def test_deliver__429_with_retry_after__waits_as_told():
    with WebhookServer(script=_script((429, {"Retry-After": "1"}, 0))) as server:
        outcome = deliver(server.url(), b"{}", lambda: {}, FAST)
    assert (outcome.status, outcome.attempts) == (200, 2)
    first, second = server.received
    assert second.at_s - first.at_s >= 1.0              # not the 0.05 s backoff


def test_deliver__retry_after_beyond_the_limit__given_up_at_once():
    with WebhookServer(script=_script((429, {"Retry-After": "3600"}, 0))) as server:
        outcome = deliver(server.url(), b"{}", lambda: {}, FAST)
    assert (outcome.attempts, outcome.reason) == (1, "retry_after_too_long")
    assert len(server.received) == 1


def test_retry_after__http_date_form():
    assert notify.retry_after_s("Thu, 03 Dec 2026 10:00:30 GMT", now_s=1_796_292_000) == 30
    assert notify.retry_after_s("soon", now_s=0) is None


def test_deliver__timeout_then_success():
    policy = Delivery(timeout_s=0.3, retries=2, backoff_s=0.01)
    with WebhookServer(script=_script((200, {}, 1.0))) as server:
        outcome = deliver(server.url(), b"{}", lambda: {}, policy)
    assert (outcome.status, outcome.attempts) == (200, 2)


def test_deliver__timeouts_throughout__gives_up_with_reason():
    policy = Delivery(timeout_s=0.2, retries=1, backoff_s=0.01)
    with WebhookServer(script=lambda index, path: (200, {}, 0.6)) as server:
        outcome = deliver(server.url(), b"{}", lambda: {}, policy)
    assert (outcome.status, outcome.attempts, outcome.reason) == (None, 2, "timeout")


def test_deliver__400_is_final():
    with WebhookServer(script=_script((400, {}, 0))) as server:
        outcome = deliver(server.url(), b"{}", lambda: {}, FAST)
    assert (outcome.attempts, outcome.reason) == (1, "http_400")


def test_deliver__nobody_listening__refused_after_every_attempt():
    outcome = deliver(f"http://127.0.0.1:{_free_port()}/", b"{}", lambda: {}, FAST)
    assert (outcome.status, outcome.attempts, outcome.reason) == (None, 4, "connection_refused")


# -- receivers and payloads -----------------------------------------------------------

def test_receiver__pagerduty_routing_key_moves_from_url_to_body():
    target = receiver("pagerduty:https://events.example/v2/enqueue?routing_key=R123&x=1")
    assert (target.url, target.routing_key) == ("https://events.example/v2/enqueue?x=1", "R123")
    assert target.name == "pagerduty:events.example" and "R123" not in target.key


@pytest.mark.parametrize("text, message", [
    ("teams:https://x/", "FORMAT one of slack, pagerduty, json"),
    ("json:ftp://x/", "must be http"),
    ("pagerduty:https://events.example/v2/enqueue", "no routing key"),
])
def test_receiver__bad_specs_refused(text, message, monkeypatch):
    monkeypatch.delenv(notify.ROUTING_KEY_ENV, raising=False)
    with pytest.raises(ValueError, match=message):
        receiver(text)


def test_payload__pagerduty_trigger_resolve_and_no_worse():
    target = receiver("pagerduty:http://127.0.0.1/v2/enqueue?routing_key=R")
    trigger = json.loads(payload(target, Notice.OPENED, alert(1, "open", 6)))
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == "a1"
    assert trigger["routing_key"] == "R" and trigger["payload"]["severity"] == "error"
    assert trigger["payload"]["summary"].startswith("stallwatch opened: content vid-12 playhead 12:00.0")
    assert trigger["payload"]["custom_details"]["affected_viewers"] == 6
    assert json.loads(payload(target, Notice.RETRACTED, alert(2, "retracted"))) == {
        "dedup_key": "a1", "event_action": "resolve", "routing_key": "R"}
    assert payload(target, Notice.WORSE, alert(2, "open", 12)) is None


def test_payload__slack_headline_and_numbers_json_whole_record():
    slack = json.loads(payload(receiver("slack:http://h/"), Notice.WORSE, alert(2, "open", 12)))
    assert slack["text"].startswith("stallwatch worse: content vid-12")
    assert "12/40 viewers stalled" in slack["text"]
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in slack["blocks"][1]["fields"]}
    assert fields["*Viewers stalled*"] == "12 of 40"
    record = json.loads(payload(receiver("json:http://h/"), Notice.CLOSED, alert(3, "closed")))
    assert record["notice"] == "closed" and record["alert"]["version"] == 3
    assert record["alert"]["status"] == "closed" and record["headline"].startswith("stallwatch closed")


# -- the transform ---------------------------------------------------------------------

_SEEN: dict = {}


def _keep(item, token):
    _SEEN.setdefault(token, []).append(item)


def _run_stream(alerts, targets, ledger, policy=FAST, causes=None, secret=SECRET, pending_s=0,
                resolve_s=0):
    """Alerts as a stream on the DirectRunner (one element at a time, the
    watermark after each): the notifications and dead letters produced."""
    stream, watermark = test_stream.TestStream(), 0
    for a in alerts:
        stream = stream.add_elements([beam.window.TimestampedValue(a, a.as_of_ms / 1000)])
        if a.as_of_ms / 1000 + 1 > watermark:
            watermark = a.as_of_ms / 1000 + 1
            stream = stream.advance_watermark_to(watermark)
    token = f"{id(stream)}-{time.monotonic()}"
    kwargs = {} if causes is None else {"causes": causes}
    with test_pipeline.TestPipeline(options=PipelineOptions(["--streaming"])) as p:
        result = p | stream | Notify(targets, ledger, secret, policy, pending_s=pending_s,
                                     resolve_s=resolve_s, **kwargs)
        _ = result.notifications | "KeepSent" >> beam.Map(_keep, f"{token}/sent")
        _ = result.dead_letters | "KeepDead" >> beam.Map(_keep, f"{token}/dead")
    return _SEEN.pop(f"{token}/sent", []), _SEEN.pop(f"{token}/dead", [])


def _actions(server):
    return [(r.json["event_action"], r.json["dedup_key"]) for r in server.received]


def test_notify__stream_of_versions__pagerduty_one_trigger_one_resolve_slack_also_worse(tmp_path):
    versions = [alert(1, "open", 6, as_of_s=600), alert(2, "open", 7, as_of_s=610),
                alert(3, "open", 12, as_of_s=620), alert(4, "closed", 12, as_of_s=1300)]
    with WebhookServer(secret=SECRET) as pd, WebhookServer(secret=SECRET) as slack:
        sent, dead = _run_stream(versions, [receiver(f"pagerduty:{pd.url('/v2/enqueue')}?routing_key=R"),
                                            receiver(f"slack:{slack.url('/s')}")], str(tmp_path))
    assert _actions(pd) == [("trigger", "a1"), ("resolve", "a1")]
    assert [r.json["text"].split(":")[0] for r in slack.received] == [
        "stallwatch opened", "stallwatch worse", "stallwatch closed"]
    assert all(r.signed for r in pd.received + slack.received)
    assert sorted((n.receiver.split(":")[0], n.notice, n.version) for n in sent) == [
        ("pagerduty", Notice.CLOSED, 4), ("pagerduty", Notice.OPENED, 1),
        ("slack", Notice.CLOSED, 4), ("slack", Notice.OPENED, 1), ("slack", Notice.WORSE, 3)]
    assert dead == []


def test_notify__restart_mid_incident__no_duplicate_trigger(tmp_path):
    target_url = "/v2/enqueue?routing_key=R"
    with WebhookServer() as server:
        target = receiver(f"pagerduty:{server.url(target_url)}")
        # The first run sees the alert open, then stops (crash: no close).
        _run_stream([alert(1, "open", 6, as_of_s=600), alert(2, "open", 7, as_of_s=610)],
                    [target], str(tmp_path))
        assert Ledger(str(tmp_path)).read(target, "a1") == Notified(ms(600), 1, True, 6, incidents=1)
        # The restarted run reads part of the same input again, then the rest.
        sent, _ = _run_stream([alert(1, "open", 6, as_of_s=600), alert(2, "open", 7, as_of_s=610),
                               alert(3, "open", 8, as_of_s=620),
                               alert(4, "closed", 8, as_of_s=1300)], [target], str(tmp_path))
    assert _actions(server) == [("trigger", "a1"), ("resolve", "a1")]
    assert [(n.notice, n.version) for n in sent] == [(Notice.CLOSED, 4)]


def test_notify__pending_period__an_alert_retracted_within_it_is_never_sent(tmp_path):
    flicker = [alert(1, "open", 5, alert_id="f", as_of_s=600),
               alert(2, "retracted", 5, alert_id="f", as_of_s=603)]
    with WebhookServer() as server:
        _run_stream(flicker, [receiver(f"json:{server.url()}")], str(tmp_path), pending_s=30)
    assert server.received == []


def test_notify__pending_period__sustained_alert_sent_by_a_later_version_or_the_timer(tmp_path):
    grows = [alert(1, "open", 6, alert_id="g", as_of_s=600), alert(2, "open", 8, alert_id="g", as_of_s=615),
             alert(3, "open", 9, alert_id="g", as_of_s=640)]            # 40 s open: v3 tells it
    quiet = [alert(1, "open", 6, alert_id="q", as_of_s=600),            # no later version:
             alert(1, "open", 1, alert_id="other", as_of_s=700)]        # the watermark passes 630
    with WebhookServer() as server:
        sent, _ = _run_stream(grows, [receiver(f"json:{server.url()}")], str(tmp_path / "a"),
                              pending_s=30)
        timed, _ = _run_stream(quiet, [receiver(f"json:{server.url()}")], str(tmp_path / "b"),
                               pending_s=30)
    assert [(n.alert_id, n.notice, n.version) for n in sent] == [("g", Notice.OPENED, 3)]
    # q at its timer (630); "other" when the input ended (the watermark at infinity).
    assert sorted((n.alert_id, n.notice, n.version) for n in timed) == [
        ("other", Notice.OPENED, 1), ("q", Notice.OPENED, 1)]
    assert [r.json["alert"]["affected_viewers"] for r in server.received] == [9, 6, 1]


def test_notify__viewer_alerts_off_by_default(tmp_path):
    with WebhookServer() as server:
        _run_stream([alert(1, "open", 1, alert_id="v9", cause="viewer"),
                     alert(1, "open", 6, alert_id="d1", cause="delivery")],
                    [receiver(f"json:{server.url()}")], str(tmp_path))
    assert [(r.json["alert"]["alert_id"], r.json["notice"]) for r in server.received] == [
        ("d1", "opened")]


def test_notify__receiver_down_whole_run__dead_letters_and_no_stall(tmp_path):
    target = receiver(f"json:http://127.0.0.1:{_free_port()}/")
    alerts = [alert(1, "open", 6, alert_id=f"a{i}", as_of_s=600 + i) for i in range(6)]
    notify._GATES.clear()
    started = time.monotonic()
    sent, dead = _run_stream(alerts, [target], str(tmp_path))
    took = time.monotonic() - started
    assert sent == []
    reasons = sorted(d.reason for d in dead)
    # trip_after=2 notices given up after all attempts; the other 4 skipped at once.
    assert reasons == ["notify:connection_refused"] * 2 + ["notify:receiver_down"] * 4
    assert all(d.stage == "notify" and json.loads(d.payload)["notice"] == "opened" for d in dead)
    assert took < 30
    assert Ledger(str(tmp_path)).read(target, "a0") is None     # a later version tries again


def test_notify__failed_close_is_tried_again_by_the_next_delivery(tmp_path):
    with WebhookServer(script=_script((200, {}, 0), (400, {}, 0))) as server:
        target = receiver(f"json:{server.url()}")
        notify._GATES.clear()
        _, dead = _run_stream([alert(2, "closed", 6)], [target], str(tmp_path))
        assert [d.reason for d in dead] == ["notify:http_400"]
        # Redelivered (a restart re-reads it): only the close is sent again.
        sent, _ = _run_stream([alert(2, "closed", 6)], [target], str(tmp_path))
    assert [r.json["notice"] for r in server.received] == ["opened", "closed", "closed"]
    assert [n.notice for n in sent] == [Notice.CLOSED]


def test_notify__bounded_input__final_version_only(tmp_path):
    with WebhookServer() as server:
        p = fn_api_pipeline()
        result = (p | beam.Create([alert(1, "open", 6), alert(2, "open", 7), alert(3, "closed", 7)])
                  | Notify([receiver(f"json:{server.url()}")], str(tmp_path), policy=FAST))
        assert_that(result.notifications | beam.Map(lambda n: (n.notice, n.version)),
                    equal_to([(Notice.OPENED, 3), (Notice.CLOSED, 3)]))
        p.run().wait_until_finish()
    assert [r.json["notice"] for r in server.received] == ["opened", "closed"]


def test_notify__rate_limit_spaces_requests(tmp_path):
    policy = Delivery(rate_per_min=600, burst=1, backoff_s=0.01)       # 10/s after one
    alerts = [alert(1, "open", 6, alert_id=f"a{i}", as_of_s=600 + i) for i in range(6)]
    notify._GATES.clear()
    with WebhookServer() as server:
        _run_stream(alerts, [receiver(f"json:{server.url()}")], str(tmp_path), policy=policy)
    times = [r.at_s for r in server.received]
    assert len(times) == 6 and times[-1] - times[0] >= 0.45      # 5 waits of 0.1 s


# -- what the review found ---------------------------------------------------------------

def test_notify__an_older_version_arriving_late_changes_nothing(tmp_path):
    """v2 (retracted) after v3 (open), while pending: v3 stands, the alert is
    told open at its timer and closed by v4."""
    out_of_order = [alert(1, "open", 6, as_of_s=600), alert(3, "open", 7, as_of_s=610),
                    alert(2, "retracted", 6, as_of_s=605),
                    alert(1, "open", 6, alert_id="b", as_of_s=700),   # the watermark passes 630
                    alert(4, "closed", 7, as_of_s=1300)]
    with WebhookServer() as server:
        _run_stream(out_of_order, [receiver(f"json:{server.url()}")], str(tmp_path), pending_s=30)
    assert [(r.json["notice"], r.json["alert"]["version"]) for r in server.received
            if r.json["alert"]["alert_id"] == "a1"] == [("opened", 3), ("closed", 4)]


def test_notify__idempotency_key_is_the_same_after_a_restart(tmp_path):
    with WebhookServer(script=_script((200, {}, 0), (500, {}, 0))) as server:
        target = receiver(f"json:{server.url()}")
        notify._GATES.clear()
        policy = Delivery(retries=0, trip_after=5)
        _run_stream([alert(1, "open"), alert(2, "closed", as_of_s=1300)], [target], str(tmp_path),
                    policy=policy)                                # the close fails (500)
        _run_stream([alert(1, "open", as_of_s=700), alert(2, "closed", as_of_s=1300)], [target],
                    str(tmp_path), policy=policy)                 # renumbered, re-sent
    keys = [r.headers["Idempotency-Key"] for r in server.received]
    assert keys == ["a1-1-opened", "a1-1-closed", "a1-1-closed"]


def test_notify__dead_letters_do_not_carry_the_routing_key(tmp_path):
    target = receiver(f"pagerduty:http://127.0.0.1:{_free_port()}/v2/enqueue?routing_key=S3CR3T")
    notify._GATES.clear()
    _, dead = _run_stream([alert(1, "open")], [target], str(tmp_path),
                          policy=Delivery(retries=0))
    assert dead and all("S3CR3T" not in d.payload + d.detail + d.source for d in dead)
    assert json.loads(dead[0].payload)["routing_key"] == "<redacted>"


def test_notify__unreadable_ledger_and_unwritable_ledger_do_not_fail_the_bundle(tmp_path):
    target = receiver(f"json:http://127.0.0.1:{_free_port()}/")
    ledger = tmp_path / "ledger"
    (ledger / target.key).mkdir(parents=True)
    (ledger / target.key / "a1.json").write_text("{not json")
    assert Ledger(str(ledger)).read(target, "a1") is None
    blocked = tmp_path / "file"
    blocked.write_text("")
    Ledger(str(blocked)).write(target, "a1", Notified(1, 1, True, 6))      # logged, not raised


@pytest.mark.parametrize("answer, reason", [
    (b"garbage\r\n\r\n", "protocol_error"),                         # not HTTP
    (b"HTTP/1.1 301 Moved\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n", "http_301"),
])
def test_deliver__answers_that_are_not_a_delivery(answer, reason):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]

        def serve():
            for _ in range(2):
                conn, _ = listener.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(answer)

        import threading
        threading.Thread(target=serve, daemon=True).start()
        outcome = deliver(f"http://127.0.0.1:{port}/", b"{}", lambda: {},
                          Delivery(retries=1, backoff_s=0.01))
    assert outcome.reason == reason and outcome.attempts == (2 if reason == "protocol_error" else 1)


def test_retry_after__non_ascii_digits_and_junk_are_unreadable():
    assert notify.retry_after_s("\u00b2", now_s=0) is None
    assert notify.retry_after_s("Thu, 99 Foo 2026 99:99:99 GMT", now_s=0) is None


@pytest.mark.parametrize("text", ["json:http://h:abc/", "json:http://h/a b", "json:http://h/\u00fc"])
def test_receiver__urls_urllib_cannot_send_to_are_refused(text):
    with pytest.raises(ValueError):
        receiver(text)


def test_deliver__retries_stop_at_the_time_budget():
    with WebhookServer(script=lambda index, path: (503, {"Retry-After": "1"}, 0)) as server:
        outcome = deliver(server.url(), b"{}", lambda: {},
                          Delivery(retries=10, budget_s=1.5, max_wait_s=5))
    assert outcome.reason == "out_of_time" and len(server.received) == 2


def test_notify__resolve_hold__a_close_reopened_within_it_is_never_sent(tmp_path):
    flapping = [alert(1, "open", 6, as_of_s=600), alert(2, "closed", 6, as_of_s=1200),
                alert(3, "open", 7, as_of_s=1400),                  # 200 s after the close
                alert(4, "closed", 7, as_of_s=2000),
                alert(1, "open", 1, alert_id="b", as_of_s=3000)]     # the watermark passes 2900
    with WebhookServer() as server:
        sent, _ = _run_stream(flapping, [receiver(f"json:{server.url()}")], str(tmp_path),
                              resolve_s=900)
    assert [(n.notice, n.version) for n in sent if n.alert_id == "a1"] == [
        (Notice.OPENED, 1), (Notice.CLOSED, 4)]
