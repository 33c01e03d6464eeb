"""A JobSet seen as the Job the planner already understands, and the plan when JobSets
cannot be created.

The planner decides from `JobView`s (reconcile/job_outcome.py). A JobSet maps onto
one: its Completed/Failed conditions become the Job's Complete/Failed, its group
restarts become the failed attempts (so `status.retries` counts restarts), its
suspension (Kueue) the Job's, its readiness (every node's pod ready) the Job's ready
pod; the pods' termination messages come ordered so the result read is the one global
rank 0 wrote (only it writes one; torch's c10d rendezvous hands out ranks in arrival
order, so that pod is usually, not always, node 0's), and when a pod exited with the
permanent-failure code, that pod's own message first.

When the JobSet API is not there (CRD not installed: 404) or not ours to use (RBAC:
403), a plan that would create a JobSet is replaced by a condition saying so; nothing is
created, and the next reconcile after the CRD is installed creates it (level-based).
"""

from datetime import datetime
from typing import Any

from modelops_api.meta import ANNOTATION_GENERATION, ANNOTATION_SPEC_DIGEST, EXIT_PERMANENT
from modelops_operator.build.jobsets import is_jobset
from modelops_operator.reconcile.actions import Action, CreateJob, PatchStatus, RecordEvent
from modelops_operator.reconcile.conditions import set_condition
from modelops_operator.reconcile.observed import JobView, Observed, PodTermination

JOBSET_NOT_INSTALLED = "JobSetNotInstalled"
JOBSET_FORBIDDEN = "JobSetForbidden"
_MESSAGES = {
    JOBSET_NOT_INSTALLED: "resources.nodes > 1 runs as a JobSet, and the JobSet CRD"
    " (jobset.x-k8s.io/v1alpha2) is not installed in this cluster; nothing was created."
    " Install JobSet (docs/install.md); the run starts once it is there",
    JOBSET_FORBIDDEN: "resources.nodes > 1 runs as a JobSet, and the operator may not"
    " manage JobSets (install the chart with jobset.enabled=true); nothing was created",
}


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def order_terminations(
    node0: tuple[PodTermination, ...], others: tuple[PodTermination, ...]
) -> tuple[PodTermination, ...]:
    """Permanent failures (any node) first, then node 0's pods, then the rest; each
    group newest first as given. Pods without a message are skipped by the reader, so
    the first message found is a permanent failure's, else global rank 0's."""
    permanent = tuple(t for t in node0 + others if t.exit_code == EXIT_PERMANENT)
    rest = tuple(t for t in node0 + others if t.exit_code != EXIT_PERMANENT)
    return permanent + rest


def jobset_view(jobset: dict[str, Any], terminations: tuple[PodTermination, ...]) -> JobView:
    """A JobSet (the API server's JSON) as a JobView."""
    meta = jobset.get("metadata") or {}
    st = jobset.get("status") or {}
    raw = {c.get("type"): c for c in st.get("conditions") or []}
    conditions: dict[str, tuple[str, str, str]] = {}
    for theirs, ours in (("Completed", "Complete"), ("Failed", "Failed")):
        c = raw.get(theirs)
        if c is not None:
            conditions[ours] = (c.get("status", ""), c.get("reason") or "", c.get("message") or "")
    rjobs = st.get("replicatedJobsStatus") or []
    expected = sum(
        int(r.get("replicas") or 1) for r in (jobset.get("spec") or {}).get("replicatedJobs") or []
    )
    ready = sum(int(r.get("ready") or 0) for r in rjobs)
    finished = (
        conditions.get("Complete", ("",))[0] == "True"
        or conditions.get("Failed", ("",))[0] == "True"
    )
    end = next(
        (
            raw[t].get("lastTransitionTime")
            for t in ("Completed", "Failed")
            if raw.get(t, {}).get("status") == "True"
        ),
        None,
    )
    suspended_cond = raw.get("Suspended", {}).get("status") == "True"
    annotations = meta.get("annotations") or {}
    generation = annotations.get(ANNOTATION_GENERATION)
    restarts = int(st.get("restarts") or 0)
    return JobView(
        name=meta.get("name", ""),
        uid=meta.get("uid"),
        active=sum(int(r.get("active") or 0) for r in rjobs),
        ready=1 if expected and ready >= expected and not finished else 0,
        succeeded=sum(int(r.get("succeeded") or 0) for r in rjobs),
        failed=restarts + (1 if conditions.get("Failed", ("",))[0] == "True" else 0),
        suspended=bool((jobset.get("spec") or {}).get("suspend")) or suspended_cond,
        conditions=conditions,
        start_time=_time(meta.get("creationTimestamp")),
        completion_time=_time(end),
        terminations=terminations,
        spec_digest=annotations.get(ANNOTATION_SPEC_DIGEST),
        generation=int(generation) if generation and generation.isdigit() else None,
    )


def creates_jobset(actions: list[Action]) -> bool:
    return any(isinstance(a, CreateJob) and is_jobset(a.manifest) for a in actions)


def guard_jobsets(observed: Observed, actions: list[Action], now: datetime) -> list[Action]:
    """The plan, unless it creates a JobSet the cluster cannot take: then a condition
    (reason JobSetNotInstalled or JobSetForbidden) and a Warning event, written once."""
    problem = observed.jobset_api
    if problem is None or not creates_jobset(actions):
        return actions
    res = observed.resource
    message = _MESSAGES[problem]
    conds = res.status.get("conditions", [])
    already = any(
        c.get("type") == "JobCreated" and c.get("reason") == problem and c.get("message") == message
        for c in conds
    )
    if already and res.status.get("phase") == "Pending":
        return []
    for type_ in ("JobCreated", "Ready", "Running", "Succeeded", "Failed"):
        conds = set_condition(conds, type_, "False", problem, message, now, res.generation)
    patch = {"phase": "Pending", "message": message, "conditions": conds}
    return [PatchStatus(patch), RecordEvent("Warning", problem, message)]
