"""Read the world into `reconcile.observed` snapshots: the resource, its Jobs and the
termination messages of their pods. Two list calls per reconcile, both by label."""

import asyncio
import json
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelops_api.kinds import kind_info
from modelops_api.meta import (
    ANNOTATION_GENERATION,
    ANNOTATION_SPEC_DIGEST,
    GROUP,
    LABEL_KIND,
    LABEL_NAME,
    VERSION,
)
from modelops_operator.build.names import label_value
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
                    finished_at=_parse_time(term.get("finishedAt")),
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
        start_time=_parse_time(st.get("startTime")),
        completion_time=_parse_time(st.get("completionTime")),
        terminations=_terminations(pods),
        spec_digest=annotations.get(ANNOTATION_SPEC_DIGEST),
        generation=int(generation) if generation and generation.isdigit() else None,
    )


async def _raw_list(fn: Any, namespace: str, selector: str) -> list[dict[str, Any]]:
    """A list call returning plain JSON: the client's model deserialisation is the
    most expensive part of a reconcile, and the reconciler needs a few fields only."""
    response = await asyncio.to_thread(
        fn, namespace, label_selector=selector, _preload_content=False
    )
    items: list[dict[str, Any]] = json.loads(response.data)["items"]
    return items


class Observer:
    """Reads resources and the Jobs they own."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
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
        selector = f"{LABEL_KIND}={res.kind},{LABEL_NAME}={label_value(res.name)}"
        jobs = await _raw_list(self.batch.list_namespaced_job, res.namespace, selector)
        # Termination messages matter only once a pod has finished: skip the pod list
        # (the common case while a Job is pending or running).
        finished = any(
            (st := j.get("status") or {}).get("succeeded")
            or st.get("failed")
            or st.get("conditions")
            for j in jobs
        )
        pods = (
            await _raw_list(self.core.list_namespaced_pod, res.namespace, selector)
            if finished
            else []
        )
        by_job: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            labels = pod["metadata"].get("labels") or {}
            owner = next((labels[k] for k in JOB_NAME_LABELS if k in labels), None)
            if owner:
                by_job.setdefault(owner, []).append(pod)
        views = {}
        for job in jobs:
            refs = job["metadata"].get("ownerReferences") or []
            if res.uid and not any(r.get("uid") == res.uid for r in refs):
                continue  # a Job of an earlier resource with the same name
            name = job["metadata"]["name"]
            views[name] = job_view(job, by_job.get(name, []))
        # resources.nodes > 1: the JobSet, filed under the Job's name (no calls otherwise).
        from modelops_operator.k8s.jobsets import JobSetObserver  # here: it imports us

        jobsets, jobset_api = await JobSetObserver(self.api).observe(res)
        return Observed(resource=res, jobs=views | jobsets, drift=drift, jobset_api=jobset_api)
