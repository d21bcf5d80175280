"""Pub/Sub: a pull reader that acks only what was delivered, and a publisher
keyed for de-duplication. google-cloud-pubsub, no Beam; both honour
PUBSUB_EMULATOR_HOST (docs/io.md)."""

from __future__ import annotations

import collections
import time
from typing import Callable, Iterable, Optional

from pipeline.io.streams.uri import PubSubUri
from transforms.model import RawRecord

ACK_DEADLINE_S = 60
_ACK_CHUNK = 1000
_RECENT_IDS = 200_000         # message ids remembered to drop redeliveries
# Messages handed on but not yet committed (a runner commits when its
# checkpoint completes) have their deadline extended, for at most this long:
# a bundle that failed never commits, and its messages must come back.
MAX_EXTENSION_S = 600
_MIN_DEADLINE_S = 10          # Pub/Sub's shortest ack deadline


def check_service(timeout_s: float = 3.0) -> None:
    """ConnectionError, within ``timeout_s``, when Pub/Sub cannot be reached:
    no emulator answers at PUBSUB_EMULATOR_HOST, or (without it) there are no
    Google Cloud credentials. The client itself retries for a minute first."""
    import os
    import socket
    emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
    if emulator:
        host, _, port = emulator.rpartition(":")
        try:
            socket.create_connection((host.strip("[]") or "localhost", int(port)),
                                     timeout=timeout_s).close()
        except (OSError, ValueError):
            raise ConnectionError(f"no Pub/Sub emulator answers at PUBSUB_EMULATOR_HOST="
                                  f"{emulator} (start one: make emulators-up)") from None
        return
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError
    try:
        google.auth.default()
    except DefaultCredentialsError:
        raise ConnectionError("no Google Cloud credentials for Pub/Sub: set PUBSUB_EMULATOR_HOST="
                              "HOST:PORT for an emulator (make emulators-up), or run "
                              "'gcloud auth application-default login'") from None


class PubSubReader:
    """Pulls messages of a subscription (created for a topic URI).

    ``poll()`` returns RawRecords (``source`` = ``pubsub:MESSAGE_ID``,
    ``arrival_ms`` = publish time). Nothing is acked until ``commit()`` gets
    the ack ids that ``positions()`` returned after the records were handed
    on: a reader that dies before that leaves them to be redelivered. A
    redelivered message id seen recently is acked and dropped (counted in
    ``stats["redelivered"]``), since Pub/Sub delivers at least once. Handed
    on but not yet committed, a message's ack deadline is extended on each
    poll (``stats["extended"]``), for up to MAX_EXTENSION_S, so a runner whose
    checkpoints are slow does not get everything again.
    """

    def __init__(self, uri: PubSubUri, max_messages: int = 1000, pull_timeout_s: float = 2.0,
                 subscriber=None, clock: Callable[[], float] = time.time) -> None:
        from google.api_core import exceptions
        from google.cloud import pubsub_v1
        self._uri, self._max, self._timeout, self._clock = uri, max_messages, pull_timeout_s, clock
        self._subscriber = subscriber or pubsub_v1.SubscriberClient()
        self.subscription = uri.subscription_for()
        if uri.is_topic:
            try:
                self._subscriber.create_subscription(request={
                    "name": self.subscription, "topic": uri.path,
                    "ack_deadline_seconds": ACK_DEADLINE_S})
            except exceptions.AlreadyExists:
                pass
            except exceptions.NotFound:
                raise LookupError(f"{uri}: topic not found") from None
        else:
            try:
                self._subscriber.get_subscription(request={"subscription": self.subscription})
            except exceptions.NotFound:
                raise LookupError(f"{uri}: subscription not found") from None
        self._pending: list[str] = []
        self._outstanding: dict[str, tuple[float, float]] = {}   # ack id -> (since, deadline)
        self._extended_at = 0.0
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._empty = False
        self._oldest_ms: Optional[int] = None
        self.stats = {"pulls": 0, "redelivered": 0, "extended": 0}

    def _extend(self) -> None:
        """Push back the deadline of what is handed on and not yet committed,
        before it runs out (assuming Pub/Sub's shortest deadline, 10 s, for a
        subscription we did not create)."""
        now = self._clock()
        if now < self._extended_at + 2:
            return
        self._extended_at = now
        due = []
        for ack_id, (since, until) in list(self._outstanding.items()):
            if now - since > MAX_EXTENSION_S:
                del self._outstanding[ack_id]             # given up: it will be redelivered
            elif until - now < _MIN_DEADLINE_S:
                due.append(ack_id)
                self._outstanding[ack_id] = (since, now + ACK_DEADLINE_S)
        for start in range(0, len(due), _ACK_CHUNK):
            self._subscriber.modify_ack_deadline(request={
                "subscription": self.subscription, "ack_ids": due[start:start + _ACK_CHUNK],
                "ack_deadline_seconds": ACK_DEADLINE_S})
        self.stats["extended"] += len(due)

    def poll(self) -> list[RawRecord]:
        from google.api_core import exceptions
        self.stats["pulls"] += 1
        self._extend()
        try:
            response = self._subscriber.pull(
                request={"subscription": self.subscription, "max_messages": self._max},
                timeout=self._timeout)
        except (exceptions.DeadlineExceeded, exceptions.ServiceUnavailable):
            response = None
        received = response.received_messages if response is not None else []
        out, oldest = [], None
        for item in received:
            message = item.message
            self._pending.append(item.ack_id)
            if message.message_id in self._recent:
                self.stats["redelivered"] += 1
                continue
            self._recent[message.message_id] = None
            if len(self._recent) > _RECENT_IDS:
                self._recent.popitem(last=False)
            published = int(message.publish_time.timestamp() * 1000)
            oldest = published if oldest is None else min(oldest, published)
            out.append(RawRecord(bytes(message.data), f"pubsub:{message.message_id}", published))
        self._empty = not received
        self._oldest_ms = oldest
        return out

    @property
    def caught_up(self) -> bool:
        """The last pull found nothing waiting."""
        return self._empty

    def watermark_ms(self) -> Optional[int]:
        """Now when the subscription is drained, else the oldest publish time
        of the last pull (Pub/Sub keeps no per-partition order to do better)."""
        now = int(self._clock() * 1000)
        return now if self._empty or self._oldest_ms is None else min(now, self._oldest_ms)

    def positions(self) -> list[str]:
        pending, self._pending = self._pending, []
        now = self._clock()
        self._outstanding.update((ack_id, (now, now + _MIN_DEADLINE_S)) for ack_id in pending)
        return pending

    def commit(self, ack_ids: list[str]) -> None:
        for ack_id in ack_ids:
            self._outstanding.pop(ack_id, None)
        for start in range(0, len(ack_ids), _ACK_CHUNK):
            self._subscriber.acknowledge(request={"subscription": self.subscription,
                                                  "ack_ids": ack_ids[start:start + _ACK_CHUNK]})

    def close(self) -> None:
        self._subscriber.close()


class PubSubWriter:
    """Publishes messages to a topic with an ordering key and attributes;
    ``put`` returns once the service has accepted every message."""

    def __init__(self, uri: PubSubUri, publisher=None) -> None:
        from google.cloud import pubsub_v1
        self._uri = uri
        self._publisher = publisher or pubsub_v1.PublisherClient(
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))

    def check(self) -> None:
        """Raise LookupError when the topic does not exist, ConnectionError
        when Pub/Sub cannot be reached (check_service)."""
        from google.api_core import exceptions
        check_service()
        try:
            self._publisher.get_topic(request={"topic": self._uri.path})
        except exceptions.NotFound:
            raise LookupError(f"{self._uri}: topic not found") from None

    def put(self, entries: Iterable[tuple[str, bytes, dict]]) -> int:
        """Publish (ordering key, data, attributes) triples; returns how many."""
        futures = [self._publisher.publish(self._uri.path, data, ordering_key=key, **attributes)
                   for key, data, attributes in entries]
        for future in futures:
            future.result(timeout=60)
        return len(futures)


def create_topic(uri: PubSubUri) -> None:
    """Create a topic if it does not exist (emulators, tests, the live generator)."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1
    try:
        pubsub_v1.PublisherClient().create_topic(request={"name": uri.path})
    except exceptions.AlreadyExists:
        pass
