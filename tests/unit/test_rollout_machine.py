"""The rollout state machine as a property-based stateful test (issue 15).

Hypothesis drives random sequences of: new candidates (good or bad metrics, ordinary or
an UnlearnRequest version of the serving one), the evaluation Job finishing (or
failing), approve/reject annotations (naming the candidate or another version), the
KServe stand-in reporting the InferenceService (or not yet), time passing, the analysis
returning in bounds / out of bounds / an error / no data (only when `analysis_due`
says the service would query, as the service does), hand edits of the ISVC and their
undoing, operator restarts (nothing survives but what the API server stored) and
crashes between the actions of a plan (only a prefix is carried out). Every status
patch goes through RFC 7386 merge-patch semantics and is re-parsed with the status
models (tests/rollout_world.py).

A small reference model says what the documented behaviour implies (the gate's verdict
per version, approval, what a step needs to advance); independent history checks say:
never promoted without every canary step's analysis in bounds for a whole interval
ending after the step's interval; never more than one candidate taking traffic; never
a promotion on missing data; a rolled-back or gate-failed version never gets traffic
again; the ISVC equals `applied` after every complete plan (except after a hand edit);
the history stays bounded.
"""

import json
import os
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from tests.rollout_world import SERVED, T0, World, rollout_spec, version

from modelops_api.durations import parse_duration
from modelops_operator.drift.state import QueryOutcome
from modelops_operator.reconcile.actions import PatchInferenceService
from modelops_operator.reconcile.rollout import analysis_due

GOOD, BAD = 30.0, 50.0
"""A candidate's perplexity: within the gate (<= 40, or <= serving 35 + 2%) or not."""
EVAL_GATE = {
    "rules": [{"metric": "perplexity", "comparison": "LessOrEqual", "tolerance": 0.02}],
    "evaluation": {"data": {"uri": "pvc://d/heldout.jsonl"}},
}
HAND = "pvc://m/by-hand"


def parse(t: str | None) -> datetime | None:
    return datetime.fromisoformat(t.replace("Z", "+00:00")) if t else None


class RolloutMachine(RuleBasedStateMachine):
    @initialize(
        steps=st.sampled_from([[10, 50, 100], [100], [1, 99, 100], [50, 100]]),
        interval=st.sampled_from(["0s", "2s", "10s"]),
        analysis=st.booleans(),
        approval=st.booleans(),
        evaluation=st.booleans(),
        registry=st.booleans(),
    )
    def setup(self, steps, interval, analysis, approval, evaluation, registry):
        canary: dict[str, Any] = {"steps": steps, "interval": interval}
        if analysis:
            canary["analysis"] = {
                "prometheusUrl": "http://prometheus:9090",
                "query": "canary_error_rate",
                "max": 0.1,
                "interval": "1s",
            }
        spec = rollout_spec(canary=canary, requireApproval=approval)
        if evaluation:
            spec["gate"] = EVAL_GATE
        if registry:
            spec["registry"] = {"modelName": "llm"}
        self.w = World(spec=spec, registry_configured=registry)
        self.w.add(version("v0", T0 - timedelta(hours=1), uri=SERVED))
        self.steps, self.interval = steps, parse_duration(interval)
        self.analysis, self.approval, self.evaluation = analysis, approval, evaluation
        self.quality: dict[str, float] = {"v0": 35.0}
        self.count = 0
        self.sample = "in"
        self.hand_edited = False
        self.feeds: list[tuple[datetime, str, int, str]] = []
        """(time, version, step, kind) of every analysis outcome fed to the machine."""
        self.no_traffic: set[str] = set()
        """Versions that must never get traffic again (rolled back, gate failed, ...)."""
        self.approved: set[str] = set()

    # -- the world -------------------------------------------------------------------
    @rule(good=st.sampled_from([True, True, False]), unlearning=st.booleans())
    def new_candidate(self, good, unlearning):
        self.count += 1
        name = f"v{self.count}"
        self.w.tick(0.001)  # strictly newer than anything before
        serving = self.w.status.get("servingVersion")
        source = ("UnlearnRequest", "forget") if unlearning else ("ModelAdaptation", "adapt")
        parents = [{"role": "base", "uri": SERVED, "version": serving}] if serving else []
        quality = GOOD if good else BAD
        self.w.add(version(name, self.w.now, source, {"perplexity": quality}, parents))
        self.quality[name] = quality

    @rule(ok=st.booleans())
    def eval_completes(self, ok):
        current = self.w.status.get("current") or {}
        job = self.w.jobs.get(current.get("evaluationJob", ""))
        if job is None or job.complete or job.failed_terminally:
            return
        baseline = {"perplexity": 35.0}
        self.w.finish_eval({"perplexity": self.quality[current["version"]]}, baseline, ok)

    @rule(current=st.booleans())
    def approve(self, current):
        name = (self.w.status.get("current") or {}).get("version") if current else "v0"
        if name:
            self.w.annotations["modelops.dev/approve"] = name
            self.approved.add(name)

    @rule(current=st.booleans())
    def reject(self, current):
        name = (self.w.status.get("current") or {}).get("version") if current else "v0"
        if name:
            self.w.annotations["modelops.dev/reject"] = name

    @rule(ready=st.booleans())
    def kserve_reports(self, ready):
        self.w.kserve(ready)

    @rule(ms=st.integers(0, 2500) | st.integers(2500, 15_000))
    def advance(self, ms):
        self.w.tick(ms / 1000)

    @rule(sample=st.sampled_from(["in", "in", "in", "out", "error", "nodata", "nan"]))
    def set_analysis(self, sample):
        self.sample = sample

    @precondition(lambda self: self.w.status.get("applied") is not None)
    @rule(dice=st.integers(0, 5))
    def hand_edit(self, dice):
        if dice > 1:  # rarer than the other events, so that rollouts also get to the end
            return
        if dice == 0:
            self.w.isvc.uri = HAND
        else:  # the traffic split only
            self.w.isvc.percent = 37 if self.w.isvc.percent != 37 else 38
        self.hand_edited = True

    @precondition(lambda self: self.hand_edited)
    @rule()
    def undo_hand_edit(self):
        applied = self.w.status.get("applied") or {}
        self.w.isvc.uri = applied.get("storageUri", SERVED)
        self.w.isvc.percent = applied.get("canaryTrafficPercent")
        self.hand_edited = False

    @rule()
    def restart(self):
        """A new operator process: all it has is what the API server stored."""
        self.w.status = json.loads(json.dumps(self.w.status, allow_nan=False))

    # -- the operator ----------------------------------------------------------------
    def outcome(self) -> QueryOutcome | None:
        if not analysis_due(self.w.resource(), self.w.now):
            return None
        now, s = self.w.now, self.sample
        if s == "error":
            return QueryOutcome(
                now, error="connection refused", error_reason="PrometheusUnreachable"
            )
        value = {"in": 0.01, "out": 0.5, "nodata": None, "nan": float("nan")}[s]
        return QueryOutcome(now, value)

    @rule(crash=st.booleans(), cut=st.integers(0, 8))
    def reconcile(self, crash, cut):
        before = json.loads(json.dumps(self.w.status))
        outcome = self.outcome()
        cur = before.get("current") or {}
        if outcome is not None:
            self.feeds.append((self.w.now, cur["version"], cur["step"], self.sample))
        reported = self.reported(before)
        expected = self.expected_pick(before)
        actions = self.w.plan(outcome)
        done = actions[:cut] if crash else actions
        self.check_plan(before, actions)
        self.w.apply(done)
        self.check_after(before, crash and cut < len(actions), reported)
        self.check_pick(before, expected)
        applied = self.w.status.get("applied") or {}
        if (self.w.isvc.uri, self.w.isvc.percent) == (
            applied.get("storageUri"),
            applied.get("canaryTrafficPercent"),
        ):
            self.hand_edited = False  # matches the rollout again (or it rolled back over it)

    @rule(rounds=st.integers(1, 12), ready=st.booleans(), approve=st.booleans())
    def progress(self, rounds, ready, approve):
        """The usual course: KServe reports, time passes, the operator reconciles (and
        someone approves the candidate)."""
        if approve:
            self.approve(current=True)
        for _ in range(rounds):
            self.w.kserve(ready)
            self.w.tick(max(self.interval / 2, 0.5))
            self.reconcile(crash=False, cut=0)
            self.eval_completes(ok=True)

    def expected_pick(self, before: dict[str, Any]) -> str | None:
        """The reference: which version a plan takes when it takes one (documented in
        rollout_select.py): undecided, newer than the serving one, from the candidate
        source or an UnlearnRequest version of the serving one; unlearning first, then
        the newest."""
        serving = before.get("servingVersion")
        current = (before.get("current") or {}).get("version")
        decided = {h["version"] for h in before.get("history", [])}
        decided |= {serving, before.get("previousVersion"), current}
        final = {"GateFailed", "Rejected", "RolledBack", "Superseded", "Retired"}
        order = {name: i for i, name in enumerate(self.w.versions)}
        best: tuple[bool, int, str] | None = None
        for name, view in self.w.versions.items():
            if name in decided or view.status.get("phase") in final:
                continue
            if serving is not None and order[name] <= order[serving]:
                continue
            if view.spec["uri"] == before.get("servingUri"):
                continue
            source = view.spec["source"]["kind"]
            parents = {p.get("version") for p in view.spec["parents"]}
            unlearning = source == "UnlearnRequest" and serving is not None and serving in parents
            if source != "ModelAdaptation" and not unlearning:
                continue
            key = (unlearning, order[name], name)
            best = key if best is None or key > best else best
        return best[2] if best else None

    def check_pick(self, before: dict[str, Any], expected: str | None) -> None:
        old = (before.get("current") or {}).get("version")
        new = (self.w.status.get("current") or {}).get("version")
        if new is not None and new != old:
            assert new == expected, (new, expected, old)

    def reported(self, status: dict[str, Any]) -> bool:
        """KServe reports the applied state: spec, Ready, caught up, the traffic split."""
        isvc, applied = self.w.isvc, status.get("applied") or {}
        percent = applied.get("canaryTrafficPercent")
        return (
            (isvc.uri, isvc.percent) == (applied.get("storageUri"), percent)
            and isvc.ready
            and isvc.observed_generation == isvc.generation
            and isvc.latest_percent == (100 if percent is None else percent)
        )

    def check_plan(self, before: dict[str, Any], actions: list[Any]) -> None:
        writes = [a for a in actions if isinstance(a, PatchInferenceService)]
        for w in writes:
            uri = w.patch["spec"]["predictor"]["model"]["storageUri"]
            cur = (before.get("current") or {}).get("version")
            assert uri not in {f"pvc://m/{n}" for n in self.no_traffic} or uri == before.get(
                "servingUri"
            ), uri
            if self.hand_edited:
                # only a rejection may act over a hand edit, and only to restore serving
                assert uri == before.get("servingUri"), (uri, before)
                assert self.w.annotations.get("modelops.dev/reject") == cur
        assert len(writes) <= 1

    def check_after(self, before: dict[str, Any], crashed: bool, reported: bool) -> None:
        st_ = self.w.status
        history = st_.get("history", [])
        assert len(history) <= 20
        for h in history:
            if h["outcome"] in ("RolledBack", "GateFailed", "Rejected", "Superseded"):
                self.no_traffic.add(h["version"])
            if h["outcome"] == "GateFailed":
                # the reference: the gate fails exactly for bad candidates (or a failed Job)
                assert self.quality[h["version"]] == BAD or self.evaluation, h
        assert st_.get("servingVersion") not in self.no_traffic
        self.check_advance(before, st_, reported)
        self.check_gate_and_approval(st_)
        aliases = st_.get("registryAliases") or {}
        if not crashed:
            assert aliases.get("challenger") not in self.no_traffic
            if aliases.get("champion"):
                assert aliases["champion"] == st_.get("servingVersion"), aliases
        applied = st_.get("applied")
        isvc = self.w.isvc
        if not crashed and not self.hand_edited:
            assert st_.get("phase") != "Paused", st_.get("conditions")
        if not crashed and not self.hand_edited and applied is not None:
            assert isvc.uri == applied["storageUri"], (isvc.uri, applied)
            assert isvc.percent == applied.get("canaryTrafficPercent")

    def check_gate_and_approval(self, st_: dict[str, Any]) -> None:
        cur = st_.get("current")
        if cur is None or cur["step"] < 0:
            return
        name = cur["version"]
        if self.quality.get(name) == BAD:
            raise AssertionError(f"{name} failed its gate but takes traffic")
        if self.approval:
            assert name in self.approved, f"{name} takes traffic without approval"

    def check_advance(self, before: dict[str, Any], after: dict[str, Any], reported: bool) -> None:
        """A step that advanced (or a promotion) held its interval with the analysis
        in bounds for a whole interval, the last query after the interval elapsed."""
        old, new = before.get("current"), after.get("current")
        promoted = after.get("servingVersion") != before.get("servingVersion")
        if old is None or old["step"] < 0:
            return
        advanced = (
            new is not None and new["version"] == old["version"] and new["step"] > old["step"]
        ) or (
            promoted
            and after.get("servingVersion") == old["version"]
            and old["step"] < len(self.steps) - 1
        )
        if not advanced:
            return
        assert new is None or new["step"] == old["step"] + 1
        start = parse(old.get("stepStartTime"))
        if start is None and reported and self.interval == 0 and not self.analysis:
            start = self.w.now  # reported now: a 0s step with no analysis ends at once
        assert start is not None, "advanced before KServe reported the step"
        assert self.w.now >= start + timedelta(seconds=self.interval)
        if not self.analysis:
            return
        feeds = [
            f
            for f in self.feeds
            if f[1] == old["version"] and f[2] == old["step"] and f[0] >= start
        ]
        assert feeds and feeds[-1][3] == "in", feeds[-3:]
        last = feeds[-1][0]
        first = last
        for t, _, _, kind in reversed(feeds):
            if kind != "in":
                break
            first = t
        assert last >= start + timedelta(seconds=self.interval)
        assert (last - first).total_seconds() >= self.interval, (first, last)

    @invariant()
    def one_candidate_at_most_takes_traffic(self):
        w = getattr(self, "w", None)
        if w is None or w.isvc is None:
            return
        if w.isvc.percent is not None:
            cur = (w.status.get("current") or {}).get("uri")
            assert self.hand_edited or w.isvc.uri in (
                cur,
                (w.status.get("applied") or {}).get("storageUri"),
            )

    @invariant()
    def status_is_strict_json(self):
        w = getattr(self, "w", None)
        if w is not None:
            json.dumps(w.status, allow_nan=False)


RolloutMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("ROLLOUT_EXAMPLES", "200")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_rollout_state_machine = RolloutMachine.TestCase
