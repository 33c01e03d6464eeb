"""Whether an S3T model still serves after a deletion, as a condition and a message.

A deletion truncates the slice orders that saw a deleted sample; a shard whose every
order is truncated is out of service, and once every shard is, the model answers no
request. The deletion itself succeeded (phase Succeeded), so without this the request
looked like any other: Normal Events, and `testAccuracy` silently gone (issue 12).
"""

from datetime import datetime
from typing import Any

from modelops_operator.reconcile.conditions import get_condition, set_condition

CONDITION = "Serving"
ALL_IN_SERVICE = "AllShardsInService"
SOME_OUT = "ShardsOutOfService"
NONE_IN_SERVICE = "NoShardInService"
GUIDANCE = (
    "set retrainAffected: true on the next UnlearnRequest for this store, or start a new"
    " s3t ModelAdaptation run, to retrain the truncated orders"
)


def serving_state(results: dict[str, Any]) -> tuple[str, str, str] | None:
    """(status, reason, message) of the Serving condition; None when not reported."""
    total, live = results.get("shards"), results.get("shardsInService")
    if total is None or live is None:
        return None
    out = results.get("shardsOutOfService") or []
    if live == 0:
        return (
            "False",
            NONE_IN_SERVICE,
            f"the model no longer serves: all {total} shards are out of service"
            f" (shards {out}); {GUIDANCE}",
        )
    if out:
        return (
            "True",
            SOME_OUT,
            f"{live} of {total} shards serve; shards {out} are out of service and the"
            f" model answers from the others with less capacity; {GUIDANCE}",
        )
    return "True", ALL_IN_SERVICE, f"all {total} shards serve"


def apply_serving(
    conditions: list[dict[str, Any]], results: dict[str, Any], now: datetime, generation: int
) -> tuple[list[dict[str, Any]], str | None, bool]:
    """The conditions with Serving set; the message to show while shards are out of
    service (None when all serve); and whether that state is new (warn once)."""
    state = serving_state(results)
    if state is None:
        return conditions, None, False
    status, reason, message = state
    before = get_condition(conditions, CONDITION)
    conds = set_condition(conditions, CONDITION, status, reason, message, now, generation)
    if reason == ALL_IN_SERVICE:
        return conds, None, False
    return conds, message, before is None or before.get("reason") != reason
