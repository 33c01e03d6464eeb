"""Plans for the one-shot kinds: PruneRetrain, UnlearnRequest, LoRATransfer.

One request, one ConfigMap, one Job. Level-based: the plan depends only on what is
observed now, so the same state always gives the same (possibly empty) plan, and a
restarted operator creates nothing twice. A Job that disappears before the request
finished is reported in a condition and never recreated in a loop.
"""

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from modelops_api.kinds import KindInfo
from modelops_api.status import Phase
from modelops_api.unlearn_request import DeletionReceipt
from modelops_operator.build.jobs import (
    ResourceIdentity,
    build_configmap,
    spec_document,
)
from modelops_operator.build.jobsets import build_workload
from modelops_operator.build.names import job_name
from modelops_operator.config import OperatorConfig
from modelops_operator.reconcile.actions import (
    Action,
    CreateJob,
    EnsureConfigMap,
    PatchStatus,
    RecordEvent,
)
from modelops_operator.reconcile.conditions import iso, set_condition
from modelops_operator.reconcile.job_outcome import job_outcome
from modelops_operator.reconcile.observed import JobView, Observed, ResourceView
from modelops_operator.reconcile.policy import cleared_conditions, refusal, refused_plan
from modelops_operator.reconcile.serving import apply_serving
from modelops_operator.reconcile.status_patch import status_patch

TERMINAL = {Phase.SUCCEEDED.value, Phase.FAILED.value}


def identity(res: ResourceView) -> ResourceIdentity:
    return ResourceIdentity(res.kind, res.name, res.namespace, res.uid, res.generation)


SIGNIFICANT_DIGITS = 5


def rounded(value: Any) -> Any:
    """Floats to 5 significant digits: the printer columns show results as they are
    stored (the PPL column printed 54.39131537753751); the Job's manifest keeps them
    exact."""
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def spec_error_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"spec.{loc}: {err['msg']}" if loc else f"spec: {err['msg']}")
    return "; ".join(parts)


def phase_conditions(
    conditions: list[dict[str, Any]],
    phase: str,
    reason: str,
    message: str,
    now: datetime,
    generation: int,
) -> list[dict[str, Any]]:
    """Ready/Running/Succeeded/Failed conditions that agree with the phase."""
    conds = conditions
    conds = set_condition(
        conds,
        "Running",
        "True" if phase == "Running" else "False",
        reason,
        message,
        now,
        generation,
    )
    # All four always present, so `kubectl wait --for=condition=<type>` works on every
    # kind and `--for=condition=Succeeded=false` does too.
    conds = set_condition(
        conds,
        "Succeeded",
        "True" if phase == "Succeeded" else "False",
        reason,
        message,
        now,
        generation,
    )
    conds = set_condition(
        conds,
        "Failed",
        "True" if phase == "Failed" else "False",
        reason,
        message,
        now,
        generation,
    )
    ready = "True" if phase == "Succeeded" else "False"
    conds = set_condition(conds, "Ready", ready, reason, message, now, generation)
    return conds


def invalid_spec_plan(res: ResourceView, message: str, now: datetime) -> list[Action]:
    status = res.status
    if status.get("phase") == "Failed" and status.get("message") == message:
        return []
    conds = set_condition(
        status.get("conditions", []),
        "SpecValid",
        "False",
        "InvalidSpec",
        message,
        now,
        res.generation,
    )
    conds = phase_conditions(conds, "Failed", "InvalidSpec", message, now, res.generation)
    return [
        PatchStatus(
            {
                "phase": "Failed",
                "message": message,
                "conditions": conds,
                "observedGeneration": res.generation,
            }
        ),
        RecordEvent("Warning", "InvalidSpec", message),
    ]


def spec_changed_plan(res: ResourceView, job: JobView, now: datetime) -> list[Action] | None:
    """The Job runs another spec than the resource now holds: fail, never claim the new one.

    The CRD refuses spec changes from creation on (CEL), so this guards resources admitted
    by an older CRD. The generation the Job was built from (its annotation) is compared
    with the resource's: the API server bumps the generation on every spec change and
    only then, so equal generations mean the same spec, across operator versions too.
    None when they agree (or the Job records no generation).
    """
    ran = job.generation
    if ran is None or ran == res.generation:
        return None
    if any(
        c.get("type") == "SpecChanged" and c.get("status") == "True"
        for c in res.status.get("conditions", [])
    ):
        return []  # reported already
    message = (
        f"spec changed after Job {job.name} started (it runs generation {ran}, the resource"
        f" is at generation {res.generation}); the Job's outcome is not reported for the new"
        " spec. Delete this resource and create a new one with the spec you want"
    )
    conds = set_condition(
        res.status.get("conditions", []),
        "SpecChanged",
        "True",
        "SpecChangedAfterStart",
        message,
        now,
        res.generation,
    )
    conds = phase_conditions(conds, "Failed", "SpecChangedAfterStart", message, now, ran)
    patch = {"phase": "Failed", "message": message, "conditions": conds, "observedGeneration": ran}
    return [PatchStatus(patch), RecordEvent("Warning", "SpecChangedAfterStart", message)]


def plan_oneshot(
    obs: Observed, info: KindInfo, config: OperatorConfig, now: datetime
) -> list[Action]:
    res = obs.resource
    status = res.status
    if res.deleting:
        return []
    try:
        spec = info.spec.model_validate(res.spec)
    except ValidationError as exc:
        return invalid_spec_plan(res, spec_error_message(exc), now)

    name = job_name(res.kind, res.name)
    job = obs.jobs.get(name)
    ident = identity(res)

    if job is None:
        if status.get("jobRef"):
            if status.get("phase") in TERMINAL:
                return []
            message = f"Job {name} was deleted before the request finished; not recreated"
            conds = set_condition(
                status.get("conditions", []),
                "JobMissing",
                "True",
                "JobDeleted",
                message,
                now,
                res.generation,
            )
            conds = phase_conditions(conds, "Failed", "JobDeleted", message, now, res.generation)
            return [
                PatchStatus({"phase": "Failed", "message": message, "conditions": conds}),
                RecordEvent("Warning", "JobDeleted", message),
            ]
        refused = refusal(res.kind, spec, obs.gate)
        if refused is not None:
            return refused_plan(res, refused, now)
        document = spec_document(ident, spec)  # type: ignore[arg-type]
        cm = build_configmap(ident, document)
        job_manifest = build_workload(ident, spec, config, document)  # type: ignore[arg-type]
        message = f"created Job {name}"
        conds = set_condition(
            cleared_conditions(status.get("conditions", []), now, res.generation),
            "SpecValid",
            "True",
            "Valid",
            "spec is valid",
            now,
            res.generation,
        )
        conds = set_condition(
            conds, "JobCreated", "True", "JobCreated", message, now, res.generation
        )
        conds = phase_conditions(conds, "Pending", "Pending", message, now, res.generation)
        return [
            EnsureConfigMap(cm),
            CreateJob(job_manifest),
            PatchStatus(
                {
                    "phase": "Pending",
                    "message": message,
                    "jobRef": {"name": name, "namespace": res.namespace},
                    "conditions": conds,
                    "observedGeneration": res.generation,
                }
            ),
            RecordEvent("Normal", "JobCreated", message),
        ]

    changed = spec_changed_plan(res, job, now)
    if changed is not None:
        return changed
    outcome = job_outcome(job)
    phase = outcome.phase.value
    desired: dict[str, Any] = {
        "phase": phase,
        "message": outcome.message,
        "jobRef": {
            "name": name,
            "namespace": res.namespace,
            **({"uid": job.uid} if job.uid else {}),
        },
        "observedGeneration": res.generation,
    }
    # Every field this plan manages is in `desired`; None clears it (explicit null).
    desired["startTime"] = iso(job.start_time) if job.start_time else status.get("startTime")
    desired["retries"] = outcome.retries or None
    desired["completionTime"] = (
        (status.get("completionTime") or iso(job.completion_time or now))
        if outcome.phase.terminal
        else None
    )
    desired.update(results=None, artifact=None)
    if res.kind == "UnlearnRequest":
        desired["receipt"] = None
    result = outcome.result
    if result is not None and outcome.phase == Phase.SUCCEEDED:
        if info.results is not None:
            try:
                parsed = info.results.model_validate(result.results).to_wire()
                desired["results"] = rounded(parsed)
            except ValidationError as exc:
                desired["message"] = f"result did not parse: {spec_error_message(exc)}"
        if result.artifact is not None:
            desired["artifact"] = result.artifact.to_wire()
        receipt = result.status.get("receipt") if result.status else None
        if receipt is not None and res.kind == "UnlearnRequest":
            desired["receipt"] = DeletionReceipt.model_validate(receipt).to_wire()
    conds = list(status.get("conditions", []))
    conds = phase_conditions(conds, phase, outcome.reason, outcome.message, now, res.generation)
    if phase == "Suspended":
        conds = set_condition(
            conds, "Suspended", "True", "Suspended", outcome.message, now, res.generation
        )
    elif any(c.get("type") == "Suspended" for c in conds):
        conds = set_condition(
            conds,
            "Suspended",
            "False",
            "Resumed",
            "the Job is no longer suspended",
            now,
            res.generation,
        )
    results = desired.get("results") or {}
    if res.kind == "LoRATransfer" and results.get("filtered") is False:
        conds = set_condition(
            conds,
            "Unfiltered",
            "True",
            "NoDiscriminator",
            "synthetic data was not filtered (no discriminator stored with the source adapter)",
            now,
            res.generation,
        )
    not_serving, warn = None, False
    if res.kind == "UnlearnRequest" and phase == "Succeeded":
        conds, not_serving, warn = apply_serving(conds, results, now, res.generation)
        if not_serving:
            desired["message"] = f"{desired['message']}; {not_serving}".lstrip("; ")
    desired["conditions"] = conds
    patch = status_patch(status, desired)
    if not patch:
        return []
    actions: list[Action] = [PatchStatus(patch)]
    if status.get("phase") != phase:
        event_type = "Warning" if phase == "Failed" or not_serving else "Normal"
        actions.append(RecordEvent(event_type, outcome.reason, f"{phase}: {outcome.message}"))
    if not_serving and warn:
        actions.append(RecordEvent("Warning", "ShardsOutOfService", not_serving))
    return actions
