"""Read the JobSets a multi-node resource owns, as JobViews filed under the Job name the
planner looks up. Only resources with spec.resources.nodes > 1 cost these calls: a
list of JobSets by label (a 404 says the CRD is not installed, a 403 that the operator
may not use it) and, once a pod finished, a list of the pods (the termination
message of global rank 0's pod is the run's result)."""

from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelops_api.meta import LABEL_KIND, LABEL_NAME, LABEL_RUN
from modelops_operator.build.jobsets import (
    ANNOTATION_COMPLETION_INDEX,
    JOBSET_GROUP,
    JOBSET_PLURAL,
    JOBSET_VERSION,
    LABEL_JOBSET_NAME,
)
from modelops_operator.build.names import job_name, label_value
from modelops_operator.k8s.observe import _raw_list, _terminations
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


class JobSetObserver:
    """Lists a resource's JobSets and their pods."""

    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def _list(self, namespace: str, **kw: Any) -> Any:
        return self.custom.list_namespaced_custom_object(
            JOBSET_GROUP, JOBSET_VERSION, namespace, JOBSET_PLURAL, **kw
        )

    async def observe(self, res: ResourceView) -> tuple[dict[str, JobView], str | None]:
        """(views by the planner's Job name, None or why JobSets cannot be used)."""
        if not wants_jobset(res.spec):
            return {}, None
        selector = f"{LABEL_KIND}={res.kind},{LABEL_NAME}={label_value(res.name)}"
        try:
            items = await _raw_list(self._list, res.namespace, selector)
        except ApiException as exc:
            if exc.status == 404:
                return {}, JOBSET_NOT_INSTALLED
            if exc.status == 403:
                return {}, JOBSET_FORBIDDEN
            raise
        ours = [
            js
            for js in items
            if not res.uid
            or any(r.get("uid") == res.uid for r in js["metadata"].get("ownerReferences") or [])
        ]
        pods: list[dict[str, Any]] = []
        if any(_started_pods(js) for js in ours):
            pods = await _raw_list(self.core.list_namespaced_pod, res.namespace, selector)
        views = {}
        for js in ours:
            name = js["metadata"]["name"]
            mine = [
                p
                for p in pods
                if (p["metadata"].get("labels") or {}).get(LABEL_JOBSET_NAME) == name
            ]
            run = (js["metadata"].get("labels") or {}).get(LABEL_RUN)
            key = job_name(res.kind, res.name, int(run) if run and run.isdigit() else None)
            views[key] = _view(js, mine)
        return views, None
