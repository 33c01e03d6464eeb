"""The rollout's first steps for a candidate: the evaluation gate and the approval.

The gate's verdict is persisted on the version (`status.evaluation`, written before the
rollout's own status), and a verdict newer than the candidate's start time is reused,
so a restarted operator never evaluates twice and never forgets a failed gate. With
`gate.evaluation` a Job (build/evaluation.py) scores the candidate and the serving
version on the same held-out data; its termination message (JobResult) carries
`results: {"candidate": {...}, "baseline": {...}}`. Without it, the candidate's own
recorded metrics (`ModelVersion.spec.metrics`) meet the Absolute rules (the API requires
`gate.evaluation` for Serving rules; were one admitted without it, the serving
version's recorded metrics would be its baseline, never a pass on missing data).
A failed or result-less evaluation Job fails every rule: never a pass on missing data.
"""

from typing import Any

from modelops_api.common import JobTemplate
from modelops_api.model_rollout import (
    ANNOTATION_APPROVE,
    EvaluatedModel,
    EvaluationJobSpec,
)
from modelops_api.model_version import Evaluation, MetricCheck, VersionPhase
from modelops_api.rollout_status import RolloutPhase
from modelops_operator.build.evaluation import evaluation_manifests
from modelops_operator.build.jobs import ResourceIdentity
from modelops_operator.reconcile.actions import CreateJob, EnsureConfigMap
from modelops_operator.reconcile.gate import evaluate_gate, failure_summary
from modelops_operator.reconcile.job_outcome import job_outcome
from modelops_operator.reconcile.rollout_select import add_history, evaluation_job
from modelops_operator.reconcile.rollout_state import Draft, Version

ADAPTER_METHODS = {"lora", "translora"}


def evaluated(v: Version) -> EvaluatedModel:
    """How the evaluation Job loads a version: an adapter names its base model."""
    base = None
    if v.spec.source.method in ADAPTER_METHODS:
        role = "target" if v.spec.source.kind == "LoRATransfer" else "base"
        base = next((p.uri for p in v.spec.parents if p.role == role), None)
    return EvaluatedModel(
        version=v.name,
        uri=v.spec.uri,
        kind=v.spec.source.kind,
        method=v.spec.source.method,
        base_uri=base,
    )


def evaluation_spec(d: Draft, v: Version) -> EvaluationJobSpec:
    gate = d.spec.gate
    assert gate.evaluation is not None
    template = (d.spec.evaluation_job or JobTemplate()).model_dump(exclude_none=True)
    serving = d.versions.get(d.st.serving_version or "")
    metrics = list(dict.fromkeys(r.metric for r in gate.rules)) or ["perplexity"]
    return EvaluationJobSpec(
        **template,
        candidate=evaluated(v),
        baseline=evaluated(serving) if serving is not None else None,
        data=gate.evaluation.data,
        max_samples=gate.evaluation.max_samples,
        seq_len=gate.evaluation.seq_len,
        metrics=metrics,
    )


def _numbers(values: Any) -> dict[str, float]:
    if not isinstance(values, dict):
        return {}
    return {
        str(k): v
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def job_failed(d: Draft, message: str) -> Evaluation:
    checks = [
        MetricCheck(metric=r.metric, comparison=r.comparison, passed=False, message=message[:512])
        for r in d.spec.gate.rules
    ]
    return Evaluation(passed=False, checks=checks, time=d.now)


def run_evaluation(d: Draft, v: Version) -> Evaluation | None:
    """The evaluation Job's verdict, or None while it runs (created when missing)."""
    cur = d.st.current
    assert cur is not None and d.spec.gate.evaluation is not None
    name = evaluation_job(d, v)
    job = d.obs.eval_job if d.obs.eval_job and d.obs.eval_job.name == name else None
    serving = d.st.serving_version if d.st.serving_version in d.versions else None
    data_uri = d.spec.gate.evaluation.data.uri
    if job is None:
        res = d.obs.resource
        ident = ResourceIdentity(res.kind, res.name, res.namespace, res.uid, res.generation)
        cm, manifest = evaluation_manifests(ident, name, evaluation_spec(d, v), d.config)
        d.jobs.extend([EnsureConfigMap(cm), CreateJob(manifest)])
        if cur.evaluation_job != name:
            d.set_current(evaluation_job=name)
            d.event("Normal", "EvaluationStarted", f"{v.name}: evaluation Job {name} created")
        return None
    outcome = job_outcome(job)
    if not outcome.phase.terminal:
        return None
    result = outcome.result
    if outcome.phase.value == "Failed" or result is None or not result.ok:
        return job_failed(d, f"evaluation Job {name} failed: {outcome.reason}: {outcome.message}")
    candidate = _numbers(result.results.get("candidate"))
    baseline = _numbers(result.results.get("baseline")) if serving else None
    return evaluate_gate(d.spec.gate, candidate, baseline, d.now, serving, data_uri)


def recorded_metrics(d: Draft, v: Version) -> Evaluation:
    serving = d.versions.get(d.st.serving_version or "")
    baseline = dict(serving.spec.metrics) if serving is not None else None
    name = serving.name if serving is not None else None
    return evaluate_gate(d.spec.gate, dict(v.spec.metrics), baseline, d.now, name)


def gate_step(d: Draft) -> bool:
    """Whether the current candidate passed its gate (False: evaluating, or it failed
    and is no longer current)."""
    cur = d.st.current
    assert cur is not None
    v = d.versions.get(cur.version)
    if v is None:
        return False  # the version is gone: wait (the observer lists what exists)
    status = d.version_status(v.name)
    ev = status.evaluation if status is not None else None
    if ev is None or ev.time < cur.start_time:
        ev = run_evaluation(d, v) if d.spec.gate.evaluation else recorded_metrics(d, v)
        if ev is None:
            d.set(phase=RolloutPhase.EVALUATING.value, message=f"evaluating {v.name}")
            return False
        d.change_version(v.name, evaluation=ev)
        if ev.passed:
            d.event("Normal", "GatePassed", f"{v.name}: {failure_summary(ev)}")
    summary = failure_summary(ev)
    d.condition(
        "GatePassed",
        "True" if ev.passed else "False",
        "Passed" if ev.passed else "MetricFailed",
        f"{v.name}: {summary}"[:2048],
    )
    if ev.passed:
        return True
    add_history(d, v.name, "GateFailed", summary)
    d.change_version(v.name, phase=VersionPhase.GATE_FAILED.value, rollout_message=summary[:1024])
    d.event("Warning", "GateFailed", f"{v.name}: {summary}")
    d.set(
        current=None,
        phase=RolloutPhase.IDLE.value,
        message=f"gate failed for {v.name}: {summary}"[:2048],
    )
    return False


def approve_command(d: Draft, version: str) -> str:
    res = d.obs.resource
    return (
        f"kubectl annotate modelrollout {res.name} -n {res.namespace} --overwrite"
        f" {ANNOTATION_APPROVE}={version}"
    )


def approval_step(d: Draft) -> bool:
    """Whether the candidate may take traffic: approved, or no approval required."""
    cur = d.st.current
    assert cur is not None
    if not cur.approved and d.obs.resource.annotations.get(ANNOTATION_APPROVE) == cur.version:
        d.set_current(approved=True)
        d.event("Normal", "Approved", f"{cur.version} approved")
        cur = d.st.current
        assert cur is not None
    if cur.approved:
        if d.spec.require_approval:
            d.condition("AwaitingApproval", "False", "Approved", f"{cur.version} was approved")
        return True
    command = approve_command(d, cur.version)
    message = f"{cur.version} passed its gate and awaits approval: {command}"
    if d.st.phase != RolloutPhase.AWAITING_APPROVAL.value:
        d.event("Normal", "AwaitingApproval", message)
    d.condition("AwaitingApproval", "True", "AwaitingApproval", message)
    d.change_version(cur.version, phase=VersionPhase.AWAITING_APPROVAL.value)
    d.set(phase=RolloutPhase.AWAITING_APPROVAL.value, message=message[:2048])
    return False
