"""Stream URIs: ``pubsub://projects/P/{topics,subscriptions}/N`` and
``kinesis://STREAM?endpoint=URL&region=R`` (docs/io.md)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Optional, Union
from urllib.parse import parse_qs, urlparse

_PUBSUB = re.compile(r"^projects/([a-z][-a-z0-9.:]*)/"
                     r"(topics|subscriptions)/([A-Za-z][-A-Za-z0-9._~%+]{2,254})$")
_STREAM = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_KINESIS_KEYS = {"endpoint", "region", "start"}
_STARTS = ("trim_horizon", "latest")


class StreamUriError(ValueError):
    """A stream URI that cannot work; the message is one line for the user."""


@dataclasses.dataclass(frozen=True)
class PubSubUri:
    project: str
    kind: str            # "topics" or "subscriptions"
    name: str

    @property
    def path(self) -> str:
        return f"projects/{self.project}/{self.kind}/{self.name}"

    @property
    def is_topic(self) -> bool:
        return self.kind == "topics"

    def subscription_for(self, reader: str = "stallwatch") -> str:
        """The subscription a reader uses: the named one, or for a topic one
        named after it, stable across restarts so a restarted reader resumes."""
        if not self.is_topic:
            return self.path
        digest = hashlib.sha1(self.name.encode()).hexdigest()[:8]
        return f"projects/{self.project}/subscriptions/{reader}-{self.name[:200]}-{digest}"

    def __str__(self) -> str:
        return f"pubsub://{self.path}"


@dataclasses.dataclass(frozen=True)
class KinesisUri:
    stream: str
    endpoint: Optional[str] = None   # e.g. http://127.0.0.1:4568 for kinesis-mock
    region: str = "us-east-1"
    start: str = "trim_horizon"      # where a reader without a checkpoint begins

    def __str__(self) -> str:
        query = [f"endpoint={self.endpoint}"] if self.endpoint else []
        return f"kinesis://{self.stream}" + ("?" + "&".join(query + [f"region={self.region}"]))


StreamUri = Union[PubSubUri, KinesisUri]


def is_stream(uri: Optional[str]) -> bool:
    return bool(uri) and uri.split("://", 1)[0] in ("pubsub", "kinesis") and "://" in uri


def parse(uri: str, want_topic: Optional[bool] = None) -> StreamUri:
    """Parse a stream URI. ``want_topic`` True: a Pub/Sub sink needs a topic."""
    scheme, _, rest = uri.partition("://")
    if scheme == "pubsub":
        match = _PUBSUB.match(rest)
        if not match:
            raise StreamUriError(f"{uri}: expected pubsub://projects/PROJECT/topics/TOPIC "
                                 "or pubsub://projects/PROJECT/subscriptions/SUBSCRIPTION")
        parsed = PubSubUri(*match.groups())
        if want_topic and not parsed.is_topic:
            raise StreamUriError(f"{uri}: publishing needs a topic (pubsub://projects/P/topics/T)")
        return parsed
    if scheme == "kinesis":
        url = urlparse(uri)
        stream = url.netloc
        if not _STREAM.match(stream or ""):
            raise StreamUriError(f"{uri}: expected kinesis://STREAM[?endpoint=URL&region=R], "
                                 "STREAM of letters, digits, '_', '.', '-'")
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        unknown = sorted(set(query) - _KINESIS_KEYS)
        if unknown:
            raise StreamUriError(f"{uri}: unknown parameter {unknown[0]!r} "
                                 f"(known: {', '.join(sorted(_KINESIS_KEYS))})")
        endpoint = query.get("endpoint") or None
        if endpoint and urlparse(endpoint).scheme not in ("http", "https"):
            raise StreamUriError(f"{uri}: endpoint must be an http(s):// URL, got {endpoint!r}")
        start = query.get("start", "trim_horizon").lower()
        if start not in _STARTS:
            raise StreamUriError(f"{uri}: start must be trim_horizon or latest, got {start!r}")
        return KinesisUri(stream, endpoint, query.get("region") or "us-east-1", start)
    raise StreamUriError(f"{uri}: not a stream URI (pubsub://... or kinesis://...)")
