"""Read the world into `reconcile.observed` snapshots: the resource, its Jobs and the
termination messages of their pods. Two list calls per reconcile, both by label."""

import asyncio
from datetime import datetime
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelops_api.kinds import kind_info
from modelops_api.meta import GROUP, LABEL_KIND, LABEL_NAME, VERSION
from modelops_operator.reconcile.observed import JobView, Observed, PodTermination, ResourceView

JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


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
        creation_time=_parse_time(meta.get("creationTimestamp")),
        deleting=bool(meta.get("deletionTimestamp")),
    )


def _terminations(pods: list[Any]) -> tuple[PodTermination, ...]:
    out = []
    for pod in pods:
        for cs in (pod.status.container_statuses or []) if pod.status else []:
            term = cs.state.terminated if cs.state else None
            if term is None:
                continue
            out.append(
                PodTermination(
                    pod=pod.metadata.name,
                    exit_code=int(term.exit_code),
                    message=term.message or "",
                    finished_at=term.finished_at,
                )
            )
    out.sort(key=lambda t: (t.finished_at is not None, t.finished_at or datetime.min), reverse=True)
    return tuple(out)


def job_view(job: Any, pods: list[Any]) -> JobView:
    st = job.status
    conditions = (
        {c.type: (c.status, c.reason or "", c.message or "") for c in (st.conditions or [])}
        if st
        else {}
    )
    return JobView(
        name=job.metadata.name,
        uid=job.metadata.uid,
        active=int(st.active or 0) if st else 0,
        ready=int(st.ready or 0) if st else 0,
        succeeded=int(st.succeeded or 0) if st else 0,
        failed=int(st.failed or 0) if st else 0,
        suspended=bool(job.spec.suspend),
        conditions=conditions,
        start_time=st.start_time if st else None,
        completion_time=st.completion_time if st else None,
        terminations=_terminations(pods),
    )


class Observer:
    """Reads resources and the Jobs they own."""

    def __init__(self, api: client.ApiClient) -> None:
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    async def get_resource(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        info = kind_info(kind)
        try:
            body: Any = await asyncio.to_thread(
                self.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                info.plural,
                name,
            )
            return body
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def list_resources(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        info = kind_info(kind)
        if namespace:
            result: Any = await asyncio.to_thread(
                self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, info.plural
            )
        else:
            result = await asyncio.to_thread(
                self.custom.list_cluster_custom_object, GROUP, VERSION, info.plural
            )
        items: list[dict[str, Any]] = cast(Any, result).get("items", [])
        for item in items:
            item.setdefault("kind", info.kind)
        return items

    async def observe(self, body: dict[str, Any], drift: Any = None) -> Observed:
        res = resource_view(body)
        selector = f"{LABEL_KIND}={res.kind},{LABEL_NAME}={res.name}"
        jobs: Any = await asyncio.to_thread(
            self.batch.list_namespaced_job, res.namespace, label_selector=selector
        )
        # Termination messages matter only once a pod has finished: skip the pod list
        # (the common case while a Job is pending or running).
        finished = any(
            j.status is not None
            and ((j.status.succeeded or 0) + (j.status.failed or 0) > 0 or j.status.conditions)
            for j in jobs.items
        )
        pods: Any = (
            await asyncio.to_thread(
                self.core.list_namespaced_pod, res.namespace, label_selector=selector
            )
            if finished
            else client.V1PodList(items=[])
        )
        by_job: dict[str, list[Any]] = {}
        for pod in pods.items:
            labels = pod.metadata.labels or {}
            owner = next((labels[k] for k in JOB_NAME_LABELS if k in labels), None)
            if owner:
                by_job.setdefault(owner, []).append(pod)
        views = {}
        for job in jobs.items:
            refs = job.metadata.owner_references or []
            if res.uid and not any(r.uid == res.uid for r in refs):
                continue  # a Job of an earlier resource with the same name
            views[job.metadata.name] = job_view(job, by_job.get(job.metadata.name, []))
        return Observed(resource=res, jobs=views, drift=drift)
