"""PubSubReader and PubSubWriter against Google's pstest: a topic URI gets a
subscription, nothing is acked before commit, redeliveries are dropped."""

import time
import uuid

import pytest
from google.cloud import pubsub_v1

from pipeline.io.streams import pubsub, uri

pytestmark = pytest.mark.integration


def _topic():
    topic = uri.parse(f"pubsub://projects/stallwatch-test/topics/t-{uuid.uuid4().hex[:8]}")
    pubsub.create_topic(topic)
    return topic


def _drain(reader, want, timeout_s=20):
    got, deadline = [], time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got.extend(reader.poll())
    return got


def test_reader__topic_form_reads_with_ids_and_publish_times(pubsub_emulator):
    topic = _topic()
    reader = pubsub.PubSubReader(topic)          # creates its subscription first
    before = int(time.time() * 1000)
    writer = pubsub.PubSubWriter(uri.parse(str(topic), want_topic=True))
    writer.put([("", f"m{i}".encode(), {}) for i in range(30)])
    got = _drain(reader, 30)
    assert sorted(r.payload for r in got) == sorted(f"m{i}".encode() for i in range(30))
    assert len({r.source for r in got}) == 30 and all(r.source.startswith("pubsub:") for r in got)
    assert all(before - 1_000 <= r.arrival_ms <= int(time.time() * 1000) for r in got)
    reader.commit(reader.positions())
    assert reader.poll() == [] and reader.caught_up
    # The same topic URI resolves to the same subscription: a restart resumes.
    assert pubsub.PubSubReader(topic).subscription == reader.subscription


def test_reader__uncommitted_messages_come_back_and_are_not_read_twice(pubsub_emulator,
                                                                      monkeypatch):
    monkeypatch.setattr(pubsub, "MAX_EXTENSION_S", 1)     # a bundle that failed: given up soon
    topic = _topic()
    name = f"projects/stallwatch-test/subscriptions/s-{uuid.uuid4().hex[:8]}"
    pubsub_v1.SubscriberClient().create_subscription(
        request={"name": name, "topic": topic.path, "ack_deadline_seconds": 10})
    reader = pubsub.PubSubReader(uri.parse(f"pubsub://{name}"))
    pubsub.PubSubWriter(topic).put([("", b"once", {})])
    first = _drain(reader, 1)
    reader.positions()                    # handed on, but its bundle failed: no commit comes
    time.sleep(11)                        # past the ack deadline: Pub/Sub redelivers
    again = []
    deadline = time.monotonic() + 20
    while not reader.stats["redelivered"] and time.monotonic() < deadline:
        again.extend(reader.poll())
    assert len(first) == 1 and again == [] and reader.stats["redelivered"] == 1
    reader.commit(reader.positions())


def test_missing_topic_or_subscription_is_a_lookup_error(pubsub_emulator):
    with pytest.raises(LookupError, match="topic not found"):
        pubsub.PubSubReader(uri.parse("pubsub://projects/stallwatch-test/topics/none-such"))
    with pytest.raises(LookupError, match="subscription not found"):
        pubsub.PubSubReader(uri.parse("pubsub://projects/stallwatch-test/subscriptions/none-such"))
    with pytest.raises(LookupError, match="topic not found"):
        pubsub.PubSubWriter(uri.parse("pubsub://projects/stallwatch-test/topics/none-such")).check()


def test_reader__handed_on_messages_wait_for_their_commit_however_slow(pubsub_emulator):
    topic = _topic()
    name = f"projects/stallwatch-test/subscriptions/s-{uuid.uuid4().hex[:8]}"
    pubsub_v1.SubscriberClient().create_subscription(
        request={"name": name, "topic": topic.path, "ack_deadline_seconds": 10})
    reader = pubsub.PubSubReader(uri.parse(f"pubsub://{name}"))
    pubsub.PubSubWriter(topic).put([("", b"slow", {})])
    first = _drain(reader, 1)
    token = reader.positions()             # handed on; the runner's checkpoint is slow
    deadline = time.monotonic() + 25       # 2.5 x the ack deadline, the reader polling on
    while time.monotonic() < deadline:
        assert reader.poll() == []
        time.sleep(0.5)
    assert len(first) == 1 and reader.stats["extended"] >= 1
    assert reader.stats["redelivered"] == 0          # Pub/Sub never gave it back
    reader.commit(token)
