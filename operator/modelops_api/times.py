"""Times as the API writes and reads them (RFC 3339, UTC, `Z`): the one parser and the
two formatters, so status fields, Job annotations and receipts all round-trip alike."""

from datetime import datetime


def parse_time(value: str | datetime | None) -> datetime | None:
    """An RFC 3339 / ISO 8601 time (`Z` or an offset) as an aware datetime; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def iso(t: datetime | None) -> str | None:
    """A time to the second, as conditions and run records store it."""
    if t is None:
        return None
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_precise(t: datetime) -> str:
    """RFC 3339 with microseconds when there are any: for times a decision compares
    against (a cooldown end), where cutting to the second would shorten the wait."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if t.microsecond else "%Y-%m-%dT%H:%M:%SZ")
