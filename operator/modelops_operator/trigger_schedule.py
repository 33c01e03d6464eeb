"""When each tracked resource is next due: the periodic resync, a drift trigger's
evaluation interval (with backoff after failed evaluations), and a ModelAdaptation's
cron time (`status.nextScheduleTime`, which `plan()` computes).

Plain data and arithmetic on monotonic times, no I/O and no asyncio: the resync loop in
`service.py` asks `due()` which resources to reconcile now and `next_wake()` how long
it may sleep, and reports back through `drift_done()`.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modelops_api.model_adaptation import parse_duration
from modelops_api.times import parse_time
from modelops_operator.drift.state import backoff_seconds


@dataclass
class Tracked:
    """What the resync loop knows about one resource (times are time.monotonic())."""

    body: dict[str, Any]
    next_resync: float
    next_drift: float | None = None
    drift_errors: int = 0
    """Failed drift evaluations in a row, as this process saw them (backoff)."""
    schedule_seen: str | None = None
    """The nextScheduleTime a reconcile was already started for: a schedule wakes the
    loop once per time, never on every tick (a failing reconcile backs off instead)."""


def drift_interval(body: dict[str, Any]) -> float | None:
    """Seconds between drift evaluations, or None for a resource without a drift trigger."""
    trigger = (body.get("spec") or {}).get("trigger") or {}
    if not isinstance(trigger, dict) or trigger.get("type") != "drift":
        return None
    drift = trigger.get("drift")
    if not drift:
        return None
    try:
        return parse_duration(drift.get("interval", "1m"))
    except ValueError:
        return None


def start(body: dict[str, Any], now: float, resync_seconds: float) -> Tracked:
    """A newly seen resource: resync after the interval, evaluate drift at once."""
    return Tracked(body, now + resync_seconds, now if drift_interval(body) else None)


def update(entry: Tracked, body: dict[str, Any], now: float) -> bool:
    """A newer body of a tracked resource; True when its drift evaluation moved earlier
    (new, or the interval was shortened: the old one is not waited out)."""
    entry.body = body
    interval = drift_interval(body)
    if interval is None:
        entry.next_drift = None
        return False
    if entry.next_drift is None or entry.next_drift > now + interval:
        entry.next_drift = now if entry.next_drift is None else now + interval
        return True
    return False


def schedule_due(entry: Tracked, wall: datetime | None = None) -> bool:
    """Whether a cron time has passed that no reconcile was started for yet (marks it)."""
    nxt = (entry.body.get("status") or {}).get("nextScheduleTime")
    if not nxt or nxt == entry.schedule_seen:
        return False
    at = parse_time(nxt)
    if at is None or (wall or datetime.now(UTC)) < at:
        return False
    entry.schedule_seen = nxt
    return True


def due(entry: Tracked, now: float) -> tuple[bool, bool]:
    """(reconcile now, with a drift evaluation)."""
    drift_due = entry.next_drift is not None and now >= entry.next_drift
    return drift_due or now >= entry.next_resync or schedule_due(entry), drift_due


def drift_done(entry: Tracked, started: float, now: float) -> None:
    """After a drift evaluation that started at `started`: the next one an interval
    later, backed off by the failures in a row."""
    if entry.next_drift is None:
        return
    interval = drift_interval(entry.body) or 60.0
    entry.next_drift = max(started + backoff_seconds(interval, entry.drift_errors), now)
