"""Read the JobSets a multi-node resource owns, as JobViews filed under the Job name the
planner looks up. Only resources with spec.resources.nodes > 1 are looked at here.

Where the operator watches JobSets (MODELOPS_JOBSETS, the chart's jobset.enabled),
their watch events fill the informer cache (`k8s/informer.py`, `handlers/jobs.py`) and a
run in progress costs no call. The JobSet collection is listed (through the operator's
one HTTP path, `k8s/api.py`) only while the cache cannot answer: it holds no JobSet of
the resource (before its first run), no JobSet watch event has arrived yet (kopf
watches the JobSet CRD only once the API server serves it), or JobSets are not watched
at all. That list is also what tells that the JobSet API is missing (404 on the
jobsets path: the CRD is not installed) or not the operator's to use (403). Once a
JobSet's pods have finished, they are listed once per JobSet version (the termination
message of global rank 0's pod is the run's result).
"""

from typing import Any

from kubernetes.client.exceptions import ApiException

from modelops_api.meta import LABEL_KIND, LABEL_NAME, LABEL_RUN
from modelops_operator.build.jobsets import (
    ANNOTATION_COMPLETION_INDEX,
    JOBSET_API_VERSION,
    JOBSET_PLURAL,
    LABEL_JOBSET_NAME,
)
from modelops_operator.build.names import job_name, label_value
from modelops_operator.k8s.api import ApiSession, core_path, group_path
from modelops_operator.k8s.informer import InformerCache
from modelops_operator.k8s.observe import _terminations
from modelops_operator.reconcile.jobset_outcome import (
    JOBSET_FORBIDDEN,
    JOBSET_NOT_INSTALLED,
    jobset_view,
    order_terminations,
)
from modelops_operator.reconcile.observed import JobView, ResourceView


def wants_jobset(spec: dict[str, Any]) -> bool:
    nodes = (spec.get("resources") or {}).get("nodes") or 1
    return isinstance(nodes, int) and nodes > 1


def _started_pods(jobset: dict[str, Any]) -> bool:
    st = jobset.get("status") or {}
    return bool(
        st.get("restarts")
        or st.get("conditions")
        or any(r.get("succeeded") or r.get("failed") for r in st.get("replicatedJobsStatus") or [])
    )


def _view(jobset: dict[str, Any], pods: list[dict[str, Any]]) -> JobView:
    node0: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    for pod in pods:
        index = (pod["metadata"].get("annotations") or {}).get(ANNOTATION_COMPLETION_INDEX)
        (node0 if index == "0" else others).append(pod)
    return jobset_view(jobset, order_terminations(_terminations(node0), _terminations(others)))


def _selector(res: ResourceView) -> str:
    return f"{LABEL_KIND}={res.kind},{LABEL_NAME}={label_value(res.name)}"


class JobSetObserver:
    """A resource's JobSets from the cache (or one list), and their finished pods."""

    def __init__(self, api: ApiSession, cache: InformerCache, watched: bool) -> None:
        self.api = api
        self.cache = cache
        self.watched = watched
        """Whether watch events keep `cache.jobsets` current (MODELOPS_JOBSETS)."""

    async def _jobsets(self, res: ResourceView) -> list[dict[str, Any]]:
        if self.watched and self.cache.jobsets_watched:
            held = self.cache.jobsets_of((res.kind, res.namespace, res.name))
            if held:
                return held
        path = group_path(JOBSET_API_VERSION, res.namespace, JOBSET_PLURAL)
        items = await self.api.list(path, _selector(res))
        if self.watched:
            for jobset in items:  # the watch delivers them too; not older than these
                self.cache.put_jobset(jobset)
        return items

    async def observe(self, res: ResourceView) -> tuple[dict[str, JobView], str | None]:
        """(views by the planner's Job name, None or why JobSets cannot be used)."""
        if not wants_jobset(res.spec):
            return {}, None
        try:
            items = await self._jobsets(res)
        except ApiException as exc:
            if exc.status == 404:
                return {}, JOBSET_NOT_INSTALLED
            if exc.status == 403:
                return {}, JOBSET_FORBIDDEN
            raise
        views = {}
        for js in items:
            refs = js["metadata"].get("ownerReferences") or []
            if res.uid and not any(r.get("uid") == res.uid for r in refs):
                continue  # a JobSet of an earlier resource with the same name
            run = (js["metadata"].get("labels") or {}).get(LABEL_RUN)
            key = job_name(res.kind, res.name, int(run) if run and run.isdigit() else None)
            views[key] = _view(js, await self._pods(res, js))
        return views, None

    async def _pods(self, res: ResourceView, jobset: dict[str, Any]) -> list[dict[str, Any]]:
        """The JobSet's pods once some have finished, listed once per JobSet version."""
        if not _started_pods(jobset):
            return []
        held = self.cache.pods_for(jobset)
        if held is not None:
            return held
        name = jobset["metadata"]["name"]
        pods = [
            pod
            for pod in await self.api.list(core_path(res.namespace, "pods"), _selector(res))
            if (pod["metadata"].get("labels") or {}).get(LABEL_JOBSET_NAME) == name
        ]
        self.cache.keep_pods(jobset, pods)
        return pods
