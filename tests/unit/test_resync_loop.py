"""The resync loop's drift timing (issue 11): `interval: 1s` was evaluated about every
2 s (a 1 s tick plus the query), and one failed evaluation stopped the resource's
evaluations for an hour. Here the loop runs for real (asyncio, no API server): the
reconcile is replaced by a recorder, which is the loop's only dependency."""

import asyncio
import itertools
import time

import pytest
from kubernetes import client

from modelops_operator import metrics
from modelops_operator.config import OperatorConfig
from modelops_operator.service import Reconciler


def drift_body(interval: str, name: str = "d") -> dict:
    return {
        "kind": "ModelAdaptation",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"trigger": {"type": "drift", "drift": {"interval": interval}}},
    }


class Recorder(Reconciler):
    """The real loop; reconcile records when it ran and can fail or be slow."""

    def __init__(self, fail: bool = False, delay: float = 0.0) -> None:
        super().__init__(client.ApiClient(), OperatorConfig(resync_seconds=3600))
        self.calls: dict[str, list[float]] = {}
        self.fail, self.delay = fail, delay
        self.reported: list[str] = []

    async def reconcile(self, kind, namespace, name, with_drift=False, body=None):
        if with_drift:
            self.calls.setdefault(name, []).append(time.monotonic())
        await asyncio.sleep(self.delay)
        if self.fail and with_drift:
            raise RuntimeError("status write refused")
        return []

    async def _report_drift_failure(self, key, exc):
        self.reported.append(str(exc))
        await super()._report_drift_failure(key, exc)


async def run_loop(rec: Reconciler, seconds: float) -> None:
    task = asyncio.create_task(rec.resync_forever(tick=1.0))
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_interval_one_second_is_one_evaluation_per_second():
    rec = Recorder(delay=0.2)
    rec.track(drift_body("1s"))
    asyncio.run(run_loop(rec, 4.5))
    times = rec.calls["d"]
    assert len(times) == 5, gaps(times)
    assert all(0.9 <= g <= 1.15 for g in gaps(times)), gaps(times)


def test_a_slow_resource_does_not_delay_another():
    rec = Recorder()
    rec.track(drift_body("1s", "fast"))
    rec.track(drift_body("1s", "slow"))

    async def slow_or_fast(kind, namespace, name, with_drift=False, body=None):
        rec.calls.setdefault(name, []).append(time.monotonic())
        await asyncio.sleep(3.0 if name == "slow" else 0.0)
        return []

    rec.reconcile = slow_or_fast  # type: ignore[method-assign]
    asyncio.run(run_loop(rec, 3.5))
    assert len(rec.calls["fast"]) == 4, "the fast resource kept its 1 s interval"
    slow = rec.calls["slow"]
    assert len(slow) == 2 and gaps(slow)[0] >= 3.0, "one query at a time per resource"


def test_a_failing_evaluation_is_reported_counted_and_retried_with_backoff(monkeypatch):
    rec = Recorder(fail=True)
    rec.track(drift_body("1s"))

    async def no_api(*args, **kwargs):
        return None  # the resource read in the failure report: nothing to write here

    monkeypatch.setattr(rec.observer, "get_resource", no_api)
    before = metrics.REGISTRY.get_sample_value(
        "modelops_prometheus_query_errors_total",
        {"namespace": "ns", "name": "d", "kind": "ModelAdaptation"},
    )
    asyncio.run(run_loop(rec, 7.5))
    times = rec.calls["d"]
    assert [round(g) for g in gaps(times)] == [2, 4], gaps(times)  # 1 s x 2^n, not 1 h
    assert rec.reported == ["status write refused"] * 3
    after = metrics.REGISTRY.get_sample_value(
        "modelops_prometheus_query_errors_total",
        {"namespace": "ns", "name": "d", "kind": "ModelAdaptation"},
    )
    assert after - (before or 0) == 3


def test_a_shortened_interval_takes_effect_at_once():
    rec = Recorder()
    rec.track(drift_body("1h"))
    rec.index[("ModelAdaptation", "ns", "d")].next_drift = time.monotonic() + 3600
    rec.track(drift_body("1s"))
    asyncio.run(run_loop(rec, 2.5))
    assert len(rec.calls["d"]) >= 2


def test_a_failing_scheduled_resource_backs_off_instead_of_retrying_every_tick():
    """A schedule whose time has passed was reconciled on every tick during an API
    outage, ignoring the per-resource backoff that the failure set."""
    rec = Recorder()
    body = {
        "kind": "ModelAdaptation",
        "metadata": {"name": "cron", "namespace": "ns"},
        "spec": {"trigger": {"type": "schedule", "schedule": "* * * * *"}},
        "status": {"nextScheduleTime": "2020-01-01T00:00:00Z"},
    }
    rec.track(body)
    calls: list[float] = []

    async def failing(kind, namespace, name, with_drift=False, body=None):
        calls.append(time.monotonic())
        rec._failures[(kind, namespace, name)] = rec._failures.get((kind, namespace, name), 0) + 1
        rec.index[(kind, namespace, name)].next_resync = time.monotonic() + 60
        return []

    rec.reconcile = failing  # type: ignore[method-assign]
    asyncio.run(run_loop(rec, 3.5))
    assert len(calls) == 1, gaps(calls)


# -- issue 15: RequeueAfter and waking the resources a rollout concerns ------------------


def rollout_body(name: str = "ro") -> dict:
    return {"kind": "ModelRollout", "metadata": {"name": name, "namespace": "ns"}, "spec": {}}


def test_requeue_after_brings_the_next_resync_forward():
    from modelops_operator.reconcile.actions import PatchStatus, RequeueAfter

    rec = Reconciler(client.ApiClient(), OperatorConfig(resync_seconds=3600))
    rec.track(rollout_body())
    rec.track({"kind": "UnlearnRequest", "metadata": {"name": "u", "namespace": "ns"}})
    rec.track({"kind": "UnlearnRequest", "metadata": {"name": "u2", "namespace": "other"}})
    key = ("ModelRollout", "ns", "ro")
    before = time.monotonic()
    rec._after(key, [RequeueAfter(2.0)])
    assert before + 1.9 <= rec.index[key].next_resync <= time.monotonic() + 2.1
    rec._after(key, [RequeueAfter(7200.0)])  # never later than the resync already due
    assert rec.index[key].next_resync <= time.monotonic() + 2.1
    # A rollout whose serving version changed: the namespace's UnlearnRequests are due now.
    rec._after(key, [PatchStatus({"servingVersion": "v1"})])
    assert rec.index[("UnlearnRequest", "ns", "u")].next_resync <= time.monotonic()
    assert rec.index[("UnlearnRequest", "other", "u2")].next_resync > time.monotonic() + 3000


def test_resync_soon_wakes_only_the_named_rollouts():
    rec = Reconciler(client.ApiClient(), OperatorConfig(resync_seconds=3600))
    for name in ("a", "b"):
        rec.track(rollout_body(name))
    rec.resync_soon("ModelRollout", "ns", ["b"])
    now = time.monotonic()
    assert rec.index[("ModelRollout", "ns", "b")].next_resync <= now
    assert rec.index[("ModelRollout", "ns", "a")].next_resync > now + 3000
