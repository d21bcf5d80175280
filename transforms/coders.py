"""A compact coder for Beacon, the one type every beacon crosses a shuffle as.

Without it Beam falls back to pickling each Beacon: pickle stores the class
reference and a field-name dict per object, and unpickling a slotted frozen
dataclass goes through ``dataclasses._dataclass_setstate``, which calls
``fields()`` for every object (4.6 of 25 profiled seconds on 100 k events,
docs/benchmarks.md). This coder writes the field values as one tuple, in
declaration order, with Beam's C-accelerated primitives coder (the event kind
as its string), and rebuilds the object without the frozen ``__setattr__``.

Registered for Beacon on import (``transforms`` imports it), so any
PCollection typed ``Beacon`` or ``tuple[str, Beacon]`` uses it, on any runner.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

from apache_beam import coders

from transforms.model import Beacon, EventKind

_NAMES = tuple(f.name for f in dataclasses.fields(Beacon))
_KIND = _NAMES.index("kind")
_VALUES = operator.attrgetter(*_NAMES)
_SLOTS = tuple(getattr(Beacon, name) for name in _NAMES)   # member descriptors
_KINDS = {k.value: k for k in EventKind}


def beacon_values(beacon: Beacon) -> tuple:
    """The Beacon's fields in declaration order, the kind as its string."""
    values = list(_VALUES(beacon))
    values[_KIND] = values[_KIND].value
    return tuple(values)


def beacon_from_values(values: Any) -> Beacon:
    """Inverse of beacon_values (no validation: the values came from a Beacon)."""
    beacon = object.__new__(Beacon)
    for slot, value in zip(_SLOTS, values):
        slot.__set__(beacon, value)
    _SLOTS[_KIND].__set__(beacon, _KINDS[values[_KIND]])
    return beacon


class BeaconCoder(coders.Coder):
    """Beacon <-> bytes: its field values as one primitives-coded tuple."""

    def __init__(self) -> None:
        self._tuple = coders.FastPrimitivesCoder()

    def encode(self, value: Beacon) -> bytes:
        return self._tuple.encode(beacon_values(value))

    def decode(self, encoded: bytes) -> Beacon:
        return beacon_from_values(self._tuple.decode(encoded))

    def is_deterministic(self) -> bool:
        return False       # a value coder: Beacons are never used as keys

    def to_type_hint(self):
        return Beacon

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


coders.registry.register_coder(Beacon, BeaconCoder)
