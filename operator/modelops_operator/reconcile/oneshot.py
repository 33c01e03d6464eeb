"""Plans for the one-shot kinds: PruneRetrain, UnlearnRequest, LoRATransfer.

One request, one ConfigMap, one Job. Level-based: the plan depends only on what is
observed now, so the same state always gives the same (possibly empty) plan, and a
restarted operator creates nothing twice. A Job that disappears before the request
finished is reported in a condition and never recreated in a loop.
"""

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from modelops_api.kinds import KindInfo, kind_info
from modelops_api.status import JobResult, Phase
from modelops_api.unlearn_request import DeletionReceipt
from modelops_api.validation import spec_error_message
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
    EnsureModelVersion,
    PatchStatus,
    RecordEvent,
)
from modelops_operator.reconcile.conditions import iso, set_condition
from modelops_operator.reconcile.job_outcome import JobOutcome, job_outcome
from modelops_operator.reconcile.observed import JobView, Observed, ResourceView
from modelops_operator.reconcile.policy import cleared_conditions, refusal, refused_plan
from modelops_operator.reconcile.serving import apply_serving
from modelops_operator.reconcile.status_patch import desired_status, typed_status_patch
from modelops_operator.reconcile.versions import UnrecordableVersion, oneshot_version

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


def failed_patch(
    res: ResourceView, message: str, conds: list[dict[str, Any]], gen: int
) -> PatchStatus:
    """Phase Failed with `message`, built through the kind's status model."""
    model = kind_info(res.kind).status
    return PatchStatus(
        desired_status(
            model, phase="Failed", message=message, conditions=conds, observed_generation=gen
        )
    )


def invalid_spec_plan(res: ResourceView, message: str, now: datetime) -> list[Action]:
    status = res.status
    message = message[:2048]
    if status.get("phase") == "Failed" and status.get("message") == message:
        return []
    gen = res.generation
    conds = set_condition(
        status.get("conditions", []), "SpecValid", "False", "InvalidSpec", message, now, gen
    )
    conds = phase_conditions(conds, "Failed", "InvalidSpec", message, now, gen)
    return [failed_patch(res, message, conds, gen), RecordEvent("Warning", "InvalidSpec", message)]


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
    return [
        failed_patch(res, message, conds, ran),
        RecordEvent("Warning", "SpecChangedAfterStart", message),
    ]


def job_deleted_plan(res: ResourceView, name: str, now: datetime) -> list[Action]:
    """The Job is gone before the request finished: Failed, and never recreated."""
    status = res.status
    if status.get("phase") in TERMINAL:
        return []
    gen = res.generation
    message = f"Job {name} was deleted before the request finished; not recreated"
    conds = set_condition(
        status.get("conditions", []), "JobMissing", "True", "JobDeleted", message, now, gen
    )
    conds = phase_conditions(conds, "Failed", "JobDeleted", message, now, gen)
    model = kind_info(res.kind).status
    patch = desired_status(model, phase="Failed", message=message, conditions=conds)
    return [PatchStatus(patch), RecordEvent("Warning", "JobDeleted", message)]


def create_plan(
    res: ResourceView, spec: Any, config: OperatorConfig, name: str, now: datetime
) -> list[Action]:
    """The request's ConfigMap and Job, and status Pending with the Job's reference."""
    ident = identity(res)
    gen = res.generation
    document = spec_document(ident, spec)
    message = f"created Job {name}"
    conds = set_condition(
        cleared_conditions(res.status.get("conditions", []), now, gen),
        "SpecValid",
        "True",
        "Valid",
        "spec is valid",
        now,
        gen,
    )
    conds = set_condition(conds, "JobCreated", "True", "JobCreated", message, now, gen)
    conds = phase_conditions(conds, "Pending", "Pending", message, now, gen)
    patch = desired_status(
        kind_info(res.kind).status,
        phase="Pending",
        message=message,
        job_ref={"name": name, "namespace": res.namespace},
        conditions=conds,
        observed_generation=gen,
    )
    return [
        EnsureConfigMap(build_configmap(ident, document)),
        CreateJob(build_workload(ident, spec, config, document)),
        PatchStatus(patch),
        RecordEvent("Normal", "JobCreated", message),
    ]


def result_fields(kind: str, info: KindInfo, result: JobResult) -> dict[str, Any]:
    """A succeeded Job's results (rounded), artifact and receipt, as status fields;
    results that do not parse become the message instead."""
    fields: dict[str, Any] = {}
    if info.results is not None:
        try:
            parsed = info.results.model_validate(result.results).to_wire()
            fields["results"] = rounded(parsed)
        except ValidationError as exc:
            fields["message"] = f"result did not parse: {spec_error_message(exc)}"[:2048]
    if result.artifact is not None:
        fields["artifact"] = result.artifact
    receipt = result.status.get("receipt") if result.status else None
    if receipt is not None and kind == "UnlearnRequest":
        fields["receipt"] = DeletionReceipt.model_validate(receipt)
    return fields


def outcome_conditions(
    res: ResourceView, outcome: JobOutcome, results: dict[str, Any], now: datetime
) -> tuple[list[dict[str, Any]], str | None, bool]:
    """The conditions for the Job's outcome: the four phase conditions, Suspended,
    Unfiltered (LoRATransfer) and Serving (UnlearnRequest); with the not-serving
    message and whether to warn about it."""
    gen = res.generation
    phase = outcome.phase.value
    conds = list(res.status.get("conditions", []))
    conds = phase_conditions(conds, phase, outcome.reason, outcome.message, now, gen)
    if phase == "Suspended":
        conds = set_condition(conds, "Suspended", "True", "Suspended", outcome.message, now, gen)
    elif any(c.get("type") == "Suspended" for c in conds):
        message = "the Job is no longer suspended"
        conds = set_condition(conds, "Suspended", "False", "Resumed", message, now, gen)
    if res.kind == "LoRATransfer" and results.get("filtered") is False:
        conds = set_condition(
            conds,
            "Unfiltered",
            "True",
            "NoDiscriminator",
            "synthetic data was not filtered (no discriminator stored with the source adapter)",
            now,
            gen,
        )
    if res.kind == "UnlearnRequest" and phase == "Succeeded":
        return apply_serving(conds, results, now, gen)
    return conds, None, False


def follow_plan(
    res: ResourceView, info: KindInfo, job: JobView, name: str, now: datetime
) -> list[Action]:
    """Status follows the Job: phase, times, retries, results, conditions, Events."""
    status = res.status
    outcome = job_outcome(job)
    phase = outcome.phase.value
    # Every field this plan manages is here; None clears it (explicit null).
    fields: dict[str, Any] = {
        "phase": phase,
        "message": outcome.message[:2048],
        "job_ref": {
            "name": name,
            "namespace": res.namespace,
            **({"uid": job.uid} if job.uid else {}),
        },
        "observed_generation": res.generation,
        "start_time": iso(job.start_time) if job.start_time else status.get("startTime"),
        "retries": outcome.retries or None,
        "completion_time": (
            (status.get("completionTime") or iso(job.completion_time or now))
            if outcome.phase.terminal
            else None
        ),
        "results": None,
        "artifact": None,
    }
    if res.kind == "UnlearnRequest":
        fields["receipt"] = None
    if outcome.result is not None and outcome.phase == Phase.SUCCEEDED:
        fields.update(result_fields(res.kind, info, outcome.result))
    conds, not_serving, warn = outcome_conditions(res, outcome, fields["results"] or {}, now)
    if not_serving:
        fields["message"] = f"{fields['message']}; {not_serving}".lstrip("; ")[:2048]
    fields["conditions"] = conds
    patch = typed_status_patch(info.status, status, **fields)
    if not patch:
        return []
    actions: list[Action] = [PatchStatus(patch)]
    if status.get("phase") != phase:
        event_type = "Warning" if phase == "Failed" or not_serving else "Normal"
        actions.append(RecordEvent(event_type, outcome.reason, f"{phase}: {outcome.message}"))
    if not_serving and warn:
        actions.append(RecordEvent("Warning", "ShardsOutOfService", not_serving))
    return actions


def plan_oneshot(
    obs: Observed, info: KindInfo, config: OperatorConfig, now: datetime
) -> list[Action]:
    """Validate the spec; then create the Job, report its loss, or follow it."""
    res = obs.resource
    if res.deleting:
        return []
    try:
        spec = info.spec.model_validate(res.spec)
    except ValidationError as exc:
        return invalid_spec_plan(res, spec_error_message(exc), now)
    name = job_name(res.kind, res.name)
    job = obs.jobs.get(name)
    if job is None:
        if res.status.get("jobRef"):
            return job_deleted_plan(res, name, now) + record_version_plan(obs, info, now)
        refused = refusal(res.kind, spec, obs.gate)
        if refused is not None:
            return refused_plan(res, refused, now)
        return create_plan(res, spec, config, name, now)
    changed = spec_changed_plan(res, job, now)
    if changed is not None:
        return changed
    return follow_plan(res, info, job, name, now) + record_version_plan(obs, info, now)


def record_version_plan(obs: Observed, info: KindInfo, now: datetime) -> list[Action]:
    """A succeeded request that published an artifact gets its ModelVersion, then its
    name in status.modelVersion. Level-based: re-emitted until the status shows it
    (creating the version tolerates AlreadyExists; its name is deterministic)."""
    res = obs.resource
    if res.status.get("modelVersion"):
        return []
    try:
        version = oneshot_version(res, obs.known_versions, now)
    except UnrecordableVersion as exc:
        return [RecordEvent("Warning", "VersionNotRecorded", str(exc)[:1024])]
    if version is None:
        return []
    name = version["metadata"]["name"]
    patch = typed_status_patch(info.status, res.status, model_version=name)
    return [
        EnsureModelVersion(version),
        PatchStatus(patch),
        RecordEvent("Normal", "VersionRecorded", f"recorded ModelVersion {name}"),
    ]
