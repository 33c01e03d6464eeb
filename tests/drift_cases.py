"""The ModelAdaptation specs with a drift trigger that the drift tests of every tier
build (unit: plan steps, status writes, the state machine; e2e: the real Prometheus):
one definition of the base spec and the trigger's usual settings."""

from typing import Any

ADAPTATION = {
    "model": {"uri": "pvc://m/base"},
    "data": {"uri": "pvc://d/new"},
    "output": {"uri": "pvc://m/versions"},
}
"""A ModelAdaptation spec without its trigger."""


def drift_trigger(url: str, query: str, **settings: Any) -> dict[str, Any]:
    """A drift trigger firing above 0.5 and re-arming below 0.3, unless `settings` say
    otherwise (API names: `for`, `interval`, `cooldown`, `noData`, ...)."""
    return {
        "prometheusUrl": url,
        "query": query,
        "fireThreshold": 0.5,
        "clearThreshold": 0.3,
        **settings,
    }


def drift_adaptation(drift: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """The ModelAdaptation spec with `drift` as its trigger (and `spec` fields added)."""
    return {**ADAPTATION, **spec, "trigger": {"type": "drift", "drift": drift}}


UNIT_DRIFT = drift_trigger(
    "http://p:9090", "max(x)", **{"for": "10s", "interval": "1s", "cooldown": "30s"}
)
"""The trigger of the unit tier's drift tests (nothing is queried there)."""
