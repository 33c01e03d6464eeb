"""The drift trigger as a property-based stateful test (issue 11).

Hypothesis drives random sequences of Prometheus answers (values past and between the
thresholds, exactly at them, NaN, +Inf/-Inf, absent, many series, outages), clock
advances (many below the interval), operator restarts, watch-event reconciles without
a query, and runs finishing. Every evaluation goes the whole way the operator goes:
the answer is encoded as a Prometheus HTTP body and parsed by `parse_response`, the
resource is planned by `reconcile.plan()`, the plan's status patch is checked to be
strict JSON and applied with RFC 7386 merge-patch semantics (what the API server
does), the stored status must validate against `ModelAdaptationStatus`, and the next
step reads it back. A small reference model of the documented semantics says when a
run must start; independent history checks say a run started only after the value
held past fireThreshold for `for` without a break, never while disarmed, in cooldown
or with a run active.
"""

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from tests.drift_cases import drift_adaptation, drift_trigger

from modelops_api.model_adaptation import ModelAdaptationStatus, parse_duration
from modelops_operator.config import OperatorConfig
from modelops_operator.drift.prometheus import parse_response
from modelops_operator.drift.state import QueryOutcome, state_from_status
from modelops_operator.reconcile import plan
from modelops_operator.reconcile.actions import CreateJob, PatchStatus, RecordEvent
from modelops_operator.reconcile.observed import JobView, Observed, ResourceView
from modelops_operator.reconcile.status_patch import apply_merge_patch

T0 = datetime(2026, 3, 1, tzinfo=UTC)
FIRE, CLEAR = 0.5, 0.3
# Values around the thresholds (for direction above; mirrored for below).
VALUES = [0.9, 0.5000001, FIRE, 0.4, CLEAR, 0.2999999, 0.1, -5.0, 1e300]
SPECIALS = ["nan", "+inf", "-inf", "absent", "many", "down", "garbage"]


def body_for(sample: Any) -> tuple[int, bytes]:
    """The HTTP answer Prometheus (or something else) gives for this sample."""

    def vector(*values: str) -> bytes:
        result = [{"metric": {"i": str(i)}, "value": [1.0, v]} for i, v in enumerate(values)]
        return json.dumps(
            {"status": "success", "data": {"resultType": "vector", "result": result}}
        ).encode()

    if sample == "nan":
        return 200, vector("NaN")
    if sample == "+inf":
        return 200, vector("+Inf")
    if sample == "-inf":
        return 200, vector("-Inf")
    if sample == "absent":
        return 200, vector()
    if sample == "many":
        return 200, vector("0.9", "0.1")
    if sample == "garbage":
        return 200, b'{"Code": "Success", "AccessKeyId": "x"}'
    return 200, vector(repr(float(sample)))


class Reference:
    """The documented semantics, as plainly as they can be written."""

    def __init__(self, direction: str, for_s: float, no_data: str) -> None:
        self.direction, self.for_s, self.no_data = direction, for_s, no_data
        self.fire, self.clear = (FIRE, CLEAR) if direction == "above" else (CLEAR, FIRE)
        self.armed = True
        self.pending: datetime | None = None

    def classify(self, sample: Any) -> str:
        """fail | gap | fire | clear | band for one sample."""
        if sample in ("down", "many", "garbage", "+inf", "-inf"):
            return "fail"
        if sample in ("nan", "absent"):
            return {"ignore": "gap", "error": "fail", "trigger": "fire"}[self.no_data]
        v = float(sample)
        if self.direction == "above":
            return "fire" if v > self.fire else "clear" if v < self.clear else "band"
        return "fire" if v < self.fire else "clear" if v > self.clear else "band"

    def step(self, sample: Any, now: datetime, run_allowed: bool) -> bool:
        kind = self.classify(sample)
        if not self.armed:
            if kind == "clear":
                self.armed = True
            self.pending = None
            return False
        if kind != "fire":
            self.pending = None
            return False
        self.pending = self.pending or now
        if (now - self.pending).total_seconds() >= self.for_s and run_allowed:
            self.armed, self.pending = False, None
            return True
        return False


# The same values for direction below (fire 0.3, clear 0.5): exact thresholds stay exact.
MIRROR = {0.9: -0.1, 0.5000001: 0.2999999, FIRE: CLEAR, 0.4: 0.4, CLEAR: FIRE}
MIRROR.update({0.2999999: 0.5000001, 0.1: 0.7, -5.0: 5.8, 1e300: -1e300})


def mirrored(value: float, direction: str) -> float:
    return value if direction == "above" else MIRROR[value]


class DriftMachine(RuleBasedStateMachine):
    @initialize(
        direction=st.sampled_from(["above", "below"]),
        for_=st.sampled_from(["0s", "2s", "10s", "1500ms"]),
        cooldown=st.sampled_from(["0s", "5s", "30s"]),
        no_data=st.sampled_from(["ignore", "trigger", "error"]),
    )
    def setup(self, direction, for_, cooldown, no_data):
        fire, clear = (FIRE, CLEAR) if direction == "above" else (CLEAR, FIRE)
        self.spec = drift_adaptation(
            drift_trigger(
                "http://p:9090",
                "max(x)",
                fireThreshold=fire,
                clearThreshold=clear,
                direction=direction,
                interval="1s",
                cooldown=cooldown,
                noData=no_data,
                **{"for": for_},
            )
        )
        self.direction = direction
        self.for_s = parse_duration(for_)
        self.cooldown_s = parse_duration(cooldown)
        self.ref = Reference(direction, self.for_s, no_data)
        self.now = T0
        self.status: dict[str, Any] = {}
        self.jobs: dict[str, JobView] = {}
        self.active: str | None = None
        self.cooldown_until: datetime | None = None
        self.history: list[tuple[datetime, str]] = []
        self.fires: list[int] = []
        """Indexes into history of the evaluations that started a run."""
        self.sample: Any = 0.1

    # -- the world -------------------------------------------------------------------
    @rule(ms=st.integers(0, 3000) | st.integers(3000, 40_000))
    def advance(self, ms):
        self.now += timedelta(milliseconds=ms)

    @rule(value=st.sampled_from(VALUES))
    def set_value(self, value):
        self.sample = mirrored(value, self.direction)

    @rule(special=st.sampled_from(SPECIALS))
    def set_special(self, special):
        self.sample = special

    @rule(ok=st.booleans())
    def finish_run(self, ok):
        if self.active is None:
            return
        outcome = "Complete" if ok else "Failed"
        self.jobs[self.active] = JobView(self.active, conditions={outcome: ("True", "", "")})

    @rule()
    def restart(self):
        """A new operator process: all it has is what the API server stored."""
        self.status = json.loads(json.dumps(self.status, allow_nan=False))

    # -- the operator ----------------------------------------------------------------
    def plan_once(self, outcome: QueryOutcome | None) -> list[Any]:
        res = ResourceView("ModelAdaptation", "r", "ns", "uid", 1, self.spec, self.status, {}, T0)
        actions = plan(
            Observed(res, jobs=dict(self.jobs), drift=outcome), OperatorConfig(), self.now
        )
        for action in actions:
            if isinstance(action, PatchStatus):
                json.dumps(action.patch, allow_nan=False)
                self.status = apply_merge_patch(self.status, action.patch)
        ModelAdaptationStatus.model_validate(self.status)
        return actions

    def run_allowed(self) -> bool:
        done = self.active is None or (
            self.jobs[self.active].complete or self.jobs[self.active].failed_terminally
        )
        return done and (self.cooldown_until is None or self.now >= self.cooldown_until)

    def started(self, actions: list[Any]) -> bool:
        created = [a for a in actions if isinstance(a, CreateJob)]
        for action in created:
            name = action.manifest["metadata"]["name"]
            self.jobs[name] = JobView(name)
            self.active = name
            self.cooldown_until = self.now + timedelta(seconds=self.cooldown_s)
        return bool(created)

    @rule()
    def evaluate(self):
        if self.sample == "down":
            outcome = QueryOutcome(
                self.now, error="connection refused", error_reason="PrometheusUnreachable"
            )
        else:
            outcome = parse_response(*body_for(self.sample), self.now)
        allowed = self.run_allowed()
        expected = self.ref.step(self.sample, self.now, allowed)
        self.history.append((self.now, self.ref.classify(self.sample)))
        actions = self.plan_once(outcome)
        if self.active and (
            self.jobs[self.active].complete or self.jobs[self.active].failed_terminally
        ):
            self.active = None if "activeRun" not in self.status else self.active
        fired = self.started(actions)
        assert fired == expected, (fired, expected, self.sample, self.status.get("drift"))
        if fired:
            self.check_fire(actions)
            self.fires.append(len(self.history) - 1)
        drift = self.status["drift"]
        assert drift["armed"] == self.ref.armed
        pending = drift.get("pendingSince")
        assert (pending is None) == (self.ref.pending is None), (pending, self.ref.pending)
        if pending is not None:
            assert datetime.fromisoformat(pending) == self.ref.pending
        if self.ref.classify(self.sample) != "fail":
            assert "lastError" not in drift and "lastErrorReason" not in drift
        else:
            assert drift["lastErrorReason"] and drift["consecutiveErrors"] >= 1

    @rule()
    def watch_event(self):
        """A reconcile without a query (a Job or resource event): never starts a drift run,
        never changes the drift state."""
        before = self.status.get("drift")
        actions = self.plan_once(None)
        if self.active and "activeRun" not in self.status:
            self.active = None
        assert not self.started(actions)
        assert state_from_status(self.status.get("drift")) == state_from_status(before)

    def check_fire(self, actions: list[Any]) -> None:
        """Independent of the reference: the value held continuously for `for`, past a
        re-arm since the previous fire, outside cooldown, with no run active."""
        start = len(self.history)
        while start > 0 and self.history[start - 1][1] == "fire":
            start -= 1
        assert start < len(self.history), "fired on a sample that is not past fire"
        streak_start = self.history[start][0]
        assert (self.now - streak_start).total_seconds() >= self.for_s
        if self.fires:
            since = [kind for _, kind in self.history[self.fires[-1] + 1 : start]]
            assert "clear" in since, "fired again without re-arming"
        started = next(
            a for a in actions if isinstance(a, RecordEvent) and a.reason == "RunStarted"
        )
        held = float(started.message.split(" for ")[1].split("s ")[0])
        assert held >= self.for_s and math.isclose(
            held, round((self.now - streak_start).total_seconds(), 1), abs_tol=0.05
        )

    @invariant()
    def status_is_strict_json(self):
        json.dumps(getattr(self, "status", {}), allow_nan=False)


DriftMachine.TestCase.settings = settings(
    max_examples=800,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_drift_trigger_state_machine = DriftMachine.TestCase
