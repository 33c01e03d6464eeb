"""Cron expressions for `spec.trigger.schedule`: a strict per-field pattern the API
server checks at admission, and the operator-side check for what a pattern cannot
see (a date that never comes, such as 30 February).

Five fields, UTC: minute 0-59, hour 0-23, day of month 1-31, month 1-12 or JAN-DEC,
day of week 0-7 (0 and 7 are Sunday) or SUN-SAT; each a `*`, a value or a range,
optionally with a `/step`, and comma-separated lists of those; or one of the
@yearly/@annually/@monthly/@weekly/@daily/@midnight/@hourly macros.
"""

from datetime import UTC, datetime

_MINUTE = r"[0-5]?[0-9]"
_HOUR = r"(2[0-3]|[01]?[0-9])"
_DOM = r"(3[01]|[12][0-9]|0?[1-9])"
_MONTH = r"(1[0-2]|0?[1-9]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec))"
_DOW = r"([0-7]|(?i:sun|mon|tue|wed|thu|fri|sat))"


def _field(value: str) -> str:
    item = rf"(\*|{value}(-{value})?)(/[0-9]{{1,2}})?"
    return rf"{item}(,{item})*"


CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|"
    + r"\s+".join(_field(v) for v in (_MINUTE, _HOUR, _DOM, _MONTH, _DOW))
    + r")$"
)


def next_cron_time(expression: str, after: datetime) -> datetime:
    """The next time of `expression` strictly after `after` (UTC). A ValueError naming
    `spec.trigger.schedule` when the expression is invalid or never fires (searched
    over the next 50 years)."""
    from croniter import croniter

    field = "spec.trigger.schedule"
    try:
        valid = croniter.is_valid(expression)
        if not valid:
            raise ValueError(f"{field}: invalid cron expression {expression!r}")
        result: datetime = croniter(expression, after.astimezone(UTC)).get_next(datetime)
    except ValueError as exc:
        if str(exc).startswith(field):
            raise
        raise ValueError(f"{field}: {expression!r} never fires ({exc})") from None
    except Exception as exc:  # croniter raises a variety of errors; all are spec errors
        raise ValueError(f"{field}: {expression!r} is not usable: {exc}") from None
    return result.astimezone(UTC)
