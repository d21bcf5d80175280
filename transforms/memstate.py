"""Beam user state and timers held in memory.

A grouped (bounded-input) path runs a stateful DoFn's own code on them, and
tests use them to look inside a key's state between watermark steps. A cell
that holds nothing has ``value`` None, so "is anything left for this key" is
one check.
"""

from __future__ import annotations

from typing import Any

from apache_beam.utils.timestamp import Timestamp


class ValueState:
    """A ReadModifyWriteState."""

    def __init__(self) -> None:
        self.value: Any = None

    def read(self) -> Any:
        return self.value

    def write(self, value: Any) -> None:
        self.value = value

    def clear(self) -> None:
        self.value = None


class BagState(ValueState):
    """A BagState: items in the order added."""

    def add(self, item: Any) -> None:
        if self.value is None:
            self.value = []
        self.value.append(item)

    def read(self) -> list:
        return list(self.value or [])


class Timer(ValueState):
    """A timer: ``value`` is the time it is set for, in ms (None: not set).
    Nothing fires by itself: the driver fires what is due."""

    def set(self, when: Timestamp) -> None:
        self.value = when.micros // 1000
