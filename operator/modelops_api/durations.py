"""Durations in specs ("90s", "5m", "1h30m", "720h", "500ms"): the one grammar, its
parser, and the bounds each field has, checked both by the API server (CEL) and by
pydantic.

The grammar is Go's duration syntax restricted to ordered units with bounded digits
(`1h30m`, never `30m1h` or a 40-digit number), so CEL's own `duration()` parses it
(cheaply: the API server bounds the cost of every rule) and the largest value the
pattern admits fits a Go duration (~292 years) and a Python `timedelta` added to any
present-day time. No value the schema accepts can overflow, and each field's own
minimum and maximum are enforced with a message naming the field. There is no day
unit (Go has none): write `24h`, `720h`.
"""

import re
from collections.abc import Callable
from typing import Annotated

from pydantic import Field

DURATION_PATTERN = r"^([0-9]{1,6}h)?([0-9]{1,6}m)?([0-9]{1,6}s)?([0-9]{1,6}ms)?$"
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
_CEL_RESERVED = {"for", "in", "as", "if", "else", "let", "loop", "return", "var", "while"}
_PART = re.compile(r"([0-9]+)(ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as 90s, 5m, 1h30m or 500ms; ValueError when invalid."""
    parts = _PART.findall(text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ValueError(f"invalid duration {text!r}")
    return float(sum(int(n) * _UNITS[u] for n, u in parts))


def cel_bounds(field: str, minimum: str, maximum: str) -> dict[str, str]:
    """The CEL rule (on the parent object) that keeps `field` within [minimum, maximum].
    A field named like a CEL keyword (`for`) is `__for__` in CEL."""
    name = f"__{field}__" if field in _CEL_RESERVED else field
    value = f"duration(self.{name})"
    return {
        "rule": f"!has(self.{name}) || ({value} >= duration('{minimum}') "
        f"&& {value} <= duration('{maximum}'))",
        "message": f"{field} must be between {minimum} and {maximum}",
        "fieldPath": f".{field}",
    }


def within(field: str, minimum: str, maximum: str) -> Callable[[str], str]:
    """A pydantic after-validator keeping the duration `field` in [minimum, maximum]."""
    low, high = parse_duration(minimum), parse_duration(maximum)

    def check(value: str) -> str:
        if not low <= parse_duration(value) <= high:
            raise ValueError(f"{field} must be between {minimum} and {maximum}, got {value}")
        return value

    return check


Duration = Annotated[str, Field(pattern=DURATION_PATTERN, min_length=2, max_length=32)]
