"""Read the world into `reconcile.observed` snapshots: the resource, its Jobs and the
termination messages of their pods. The resource and its Jobs come from the informer
cache (`k8s/informer.py`); the only list call is of a finished Job's pods, once per
Job version. A resource with resources.nodes > 1 runs as a JobSet, read by
`k8s/jobsets.py` (handed in by the service: that module builds on this one)."""

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from modelops_api.meta import (
    ANNOTATION_GENERATION,
    ANNOTATION_SPEC_DIGEST,
    GROUP,
    LABEL_KIND,
    LABEL_NAME,
    VERSION,
)
from modelops_api.times import parse_time
from modelops_operator.build.names import label_value
from modelops_operator.k8s.api import ApiSession, core_path, group_path
from modelops_operator.k8s.informer import InformerCache
from modelops_operator.k8s.kinds import plural
from modelops_operator.reconcile.observed import JobView, Observed, PodTermination, ResourceView

if TYPE_CHECKING:
    from modelops_operator.k8s.jobsets import JobSetObserver

JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


def resource_view(body: dict[str, Any]) -> ResourceView:
    meta = body.get("metadata", {})
    return ResourceView(
        kind=body["kind"],
        name=meta["name"],
        namespace=meta.get("namespace", "default"),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 1),
        spec=dict(body.get("spec") or {}),
        status=dict(body.get("status") or {}),
        annotations=dict(meta.get("annotations") or {}),
        creation_time=parse_time(meta.get("creationTimestamp")),
        deleting=bool(meta.get("deletionTimestamp")),
    )


def _terminations(pods: list[dict[str, Any]]) -> tuple[PodTermination, ...]:
    out = []
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if term is None:
                continue
            out.append(
                PodTermination(
                    pod=pod["metadata"]["name"],
                    exit_code=int(term.get("exitCode", 0)),
                    message=term.get("message") or "",
                    finished_at=parse_time(term.get("finishedAt")),
                )
            )
    out.sort(
        key=lambda t: (
            t.finished_at is not None,
            t.finished_at or datetime.min.replace(tzinfo=UTC),
        ),
        reverse=True,
    )
    return tuple(out)


def job_view(job: dict[str, Any], pods: list[dict[str, Any]]) -> JobView:
    """A Job (as the API server's JSON) and its pods, as the reconciler sees them."""
    st = job.get("status") or {}
    conditions = {
        c["type"]: (c.get("status", ""), c.get("reason") or "", c.get("message") or "")
        for c in st.get("conditions") or []
    }
    annotations = job["metadata"].get("annotations") or {}
    generation = annotations.get(ANNOTATION_GENERATION)
    return JobView(
        name=job["metadata"]["name"],
        uid=job["metadata"].get("uid"),
        active=int(st.get("active") or 0),
        ready=int(st.get("ready") or 0),
        succeeded=int(st.get("succeeded") or 0),
        failed=int(st.get("failed") or 0),
        suspended=bool((job.get("spec") or {}).get("suspend")),
        conditions=conditions,
        start_time=parse_time(st.get("startTime")),
        completion_time=parse_time(st.get("completionTime")),
        terminations=_terminations(pods),
        spec_digest=annotations.get(ANNOTATION_SPEC_DIGEST),
        generation=int(generation) if generation and generation.isdigit() else None,
    )


class Observer:
    """Builds snapshots from the informer cache; lists pods only for finished Jobs."""

    def __init__(
        self, api: ApiSession, cache: InformerCache, jobsets: "JobSetObserver | None" = None
    ) -> None:
        self.api = api
        self.cache = cache
        self.jobsets = jobsets

    async def get_resource(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A GET of the resource: only where no watch event delivered it (a drift
        failure report after the cache dropped it)."""
        body = await self.api.get(group_path(f"{GROUP}/{VERSION}", namespace, plural(kind), name))
        if body is not None:
            body.setdefault("kind", kind)
        return body

    async def observe(self, body: dict[str, Any]) -> Observed:
        """The resource and its Jobs as the cache holds them. Termination messages matter
        only once a Job has finished: its pods are listed then, once per Job version."""
        res = resource_view(body)
        jobs = self.cache.jobs_of((res.kind, res.namespace, res.name))
        views = {}
        for job in jobs:
            refs = job["metadata"].get("ownerReferences") or []
            if res.uid and not any(r.get("uid") == res.uid for r in refs):
                continue  # a Job of an earlier resource with the same name
            views[job["metadata"]["name"]] = job_view(job, await self._pods(res, job))
        if self.jobsets is None:
            return Observed(resource=res, jobs=views)
        # resources.nodes > 1: the JobSets, filed under the Job names (no calls otherwise).
        jobsets, jobset_api = await self.jobsets.observe(res)
        return Observed(resource=res, jobs=views | jobsets, jobset_api=jobset_api)

    async def _pods(self, res: ResourceView, job: dict[str, Any]) -> list[dict[str, Any]]:
        st = job.get("status") or {}
        if not (st.get("succeeded") or st.get("failed") or st.get("conditions")):
            return []
        held = self.cache.pods_for(job)
        if held is not None:
            return held
        name = job["metadata"]["name"]
        selector = f"{LABEL_KIND}={res.kind},{LABEL_NAME}={label_value(res.name)}"
        pods = [
            pod
            for pod in await self.api.list(core_path(res.namespace, "pods"), selector)
            if any(((pod["metadata"].get("labels") or {}).get(k)) == name for k in JOB_NAME_LABELS)
        ]
        self.cache.keep_pods(job, pods)
        return pods
