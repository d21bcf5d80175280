"""Field validators shared by the beacon v1 and CMCD parsers: one rule, one reason code.

Each reads ``record[name]`` and returns the typed value or None, or raises
``Rejected`` with a stable reason (``missing_field:``, ``wrong_type:``,
``invalid_value:``, ``out_of_range:`` + the field's name; docs/beacons.md).
"""

from __future__ import annotations

from typing import Optional

MAX_ID_CHARS = 256


class Rejected(ValueError):
    """A record that breaks the beacon contract; ``reason`` is the stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _missing(record: dict, name: str, required: bool):
    value = record.get(name)
    if value is None and required:
        raise Rejected(f"missing_field:{name}", f"{name} is required")
    return value


def identifier(record: dict, name: str, required: bool) -> Optional[str]:
    """A non-empty id of at most MAX_ID_CHARS (an integer is taken as its text)."""
    value = _missing(record, name, required)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Rejected(f"wrong_type:{name}", f"{name} is {type(value).__name__}")
    as_text = str(value)
    if not as_text or len(as_text) > MAX_ID_CHARS:
        raise Rejected(f"invalid_value:{name}",
                       f"{name} must have 1..{MAX_ID_CHARS} characters")
    return as_text


def text(record: dict, name: str, max_chars: int) -> Optional[str]:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Rejected(f"wrong_type:{name}", f"{name} is {type(value).__name__}")
    return str(value)[:max_chars]


def number(record: dict, name: str, low: int, high: int, required: bool = False) -> Optional[int]:
    """A number in [low, high], rounded to an integer."""
    value = _missing(record, name, required)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Rejected(f"wrong_type:{name}", f"{name} is {type(value).__name__}")
    if not low <= value <= high:
        raise Rejected(f"out_of_range:{name}", f"{name}={value!r} not in [{low}, {high}]")
    return int(round(value))


def flag(record: dict, name: str) -> Optional[bool]:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise Rejected(f"wrong_type:{name}", f"{name} is {type(value).__name__}")
    return value


def token(record: dict, name: str, required: bool = False) -> Optional[str]:
    """A string-only value (a CMCD token such as ``e=ps``)."""
    value = _missing(record, name, required)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected(f"wrong_type:{name}", f"{name} is {type(value).__name__}")
    return value
