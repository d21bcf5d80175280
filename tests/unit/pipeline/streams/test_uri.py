"""Stream URIs parse to typed values or fail with one clear line."""

import pytest

from pipeline.io.streams import uri


def test_parse__pubsub_topic_and_subscription():
    topic = uri.parse("pubsub://projects/my-proj/topics/beacons")
    assert topic.is_topic and topic.path == "projects/my-proj/topics/beacons"
    # A topic is read through a subscription named after it, the same on every restart.
    assert topic.subscription_for() == topic.subscription_for()
    assert topic.subscription_for().startswith("projects/my-proj/subscriptions/stallwatch-beacons-")
    sub = uri.parse("pubsub://projects/my-proj/subscriptions/qoe")
    assert not sub.is_topic and sub.subscription_for() == "projects/my-proj/subscriptions/qoe"


def test_parse__kinesis_with_endpoint_region_and_start():
    k = uri.parse("kinesis://beacons?endpoint=http://127.0.0.1:4568&region=eu-west-1&start=latest")
    assert (k.stream, k.endpoint, k.region, k.start) == (
        "beacons", "http://127.0.0.1:4568", "eu-west-1", "latest")
    assert uri.parse("kinesis://beacons") == uri.KinesisUri("beacons", None, "us-east-1",
                                                            "trim_horizon")


@pytest.mark.parametrize("text, message", [
    ("pubsub://projects/p/subscriptions/x", "expected pubsub://"),   # names need 3+ chars
    ("pubsub://topics/beacons", "expected pubsub://"),
    ("kinesis://", "expected kinesis://STREAM"),
    ("kinesis://s?start=yesterday", "start must be trim_horizon or latest"),
    ("kafka://broker/topic", "not a stream URI"),
])
def test_parse__bad_uris(text, message):
    with pytest.raises(uri.StreamUriError, match=message):
        uri.parse(text)


def test_parse__sinks_need_a_topic():
    with pytest.raises(uri.StreamUriError, match="publishing needs a topic"):
        uri.parse("pubsub://projects/p/subscriptions/alerts", want_topic=True)
