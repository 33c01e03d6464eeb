"""JobSets on the operator's runtime (issues 13 and 16 together): a multi-node resource's
JobSets are kept in the informer cache by owner when the operator watches them, so a
reconcile of a run in progress reads nothing from the API server; the JobSet collection
is listed through the one HTTP path (`k8s/api.py`) only while the cache holds none of the
resource's JobSets (or JobSets are not watched), and that list's 404 (no CRD) or 403
(no RBAC) becomes the JobSetNotInstalled/JobSetForbidden condition with nothing
created. A JobSet's finished pods are listed once per JobSet version."""

import asyncio

import pytest
from kubernetes import client

from modelops_api.meta import API_VERSION
from modelops_operator.config import OperatorConfig
from modelops_operator.k8s.informer import InformerCache
from modelops_operator.reconcile.actions import CreateJob, EnsureConfigMap, PatchStatus
from modelops_operator.reconcile.jobset_outcome import JOBSET_FORBIDDEN, JOBSET_NOT_INSTALLED
from modelops_operator.service import Reconciler

JOBSETS = "/apis/jobset.x-k8s.io/v1alpha2/namespaces/ns/jobsets"
PODS = "/api/v1/namespaces/ns/pods"
POLICY = "/api/v1/namespaces/ns"
SPEC = {
    "model": {"uri": "pvc://m/tiny"},
    "output": {"uri": "pvc://m/out"},
    "resources": {"nodes": 2, "gpu": {"count": 0}},
    "distribution": {"processesPerNode": 2},
}


def jobset(name: str = "o-prune", version: str = "9", uid: str = "u1", **status) -> dict:
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "resourceVersion": version,
            "creationTimestamp": "2026-12-02T01:00:00Z",
            "labels": {"modelops.dev/kind": "PruneRetrain"},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "PruneRetrain",
                    "name": "o",
                    "uid": uid,
                    "controller": True,
                }
            ],
        },
        "spec": {
            "replicatedJobs": [
                {"name": "node", "replicas": 1, "template": {"spec": {"x": ["y"] * 100}}}
            ]
        },
        "status": status,
    }


def resource(spec: dict = SPEC) -> dict:
    meta = {"name": "o", "namespace": "ns", "uid": "u1", "generation": 1, "resourceVersion": "5"}
    return {"kind": "PruneRetrain", "metadata": meta, "spec": spec}


class Api:
    """Answers the namespace policy lookup (none) and, per path, what `answers` holds:
    a list of items, or an HTTP status to fail with; any other request fails the test."""

    def __init__(self, answers: dict[tuple[str, str], object]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    async def request(self, method, path, *args, **kwargs):
        self.calls.append((method, path))
        if (method, path) == ("GET", POLICY):
            raise client.ApiException(status=404)  # no namespace policy, no default
        answer = self.answers.get((method, path))
        if isinstance(answer, int):
            raise client.ApiException(status=answer)
        if answer is None:
            raise AssertionError(f"unexpected API call: {method} {path}")
        return {"items": answer}


def reconcile(
    config: OperatorConfig, api: Api, cached: list[dict] = (), watch_live: bool = True
) -> list:
    """One reconcile of `resource()` with the API answering as `api`, `cached` in the
    cache (from the watch when `watch_live`, else the operator's own creates only)."""
    rec = Reconciler(client.ApiClient(), config)
    rec.api.request = api.request  # type: ignore[method-assign]
    applied: list = []

    async def record(res, actions):
        applied.extend(actions)

    rec.applier.apply = record  # type: ignore[method-assign]
    rec.track(resource())
    for js in cached:
        (rec.cache.watched_jobset if watch_live else rec.cache.put_jobset)(js)
    asyncio.run(rec.reconcile("PruneRetrain", "ns", "o"))
    assert not rec._failures, "no API call failed"
    return applied


def test_jobsets_are_kept_by_owner_slim_and_newest():
    cache = InformerCache()
    cache.put_jobset(jobset(version="3", restarts=1))
    cache.put_jobset(jobset(version="2"))  # an older event arriving late
    held = cache.jobsets_of(("PruneRetrain", "ns", "o"))
    assert [j["status"] for j in held] == [{"restarts": 1}]
    assert held[0]["spec"]["replicatedJobs"] == [{"name": "node", "replicas": 1}], "no template"
    assert held[0]["metadata"]["creationTimestamp"] == "2026-12-02T01:00:00Z", "the start time"
    assert cache.size() == (0, 1)
    cache.drop_jobset(jobset(version="4"))
    assert cache.jobsets_of(("PruneRetrain", "ns", "o")) == [] and cache.size() == (0, 0)


def test_a_watched_running_jobset_costs_no_call():
    api = Api({})
    actions = reconcile(OperatorConfig(jobsets=True), api, [jobset(active=2)])
    assert api.calls == [("GET", POLICY)], "no JobSet list, no pod list"
    assert not any(isinstance(a, CreateJob) for a in actions), "the JobSet was seen"


def others() -> dict:
    """A JobSet of another resource: the watch is live, none of `o`'s is held."""
    js = jobset("p-prune", uid="u2")
    js["metadata"]["ownerReferences"][0]["name"] = "p"
    return js


CANNOT_ANSWER = [
    ("watched-none-of-its-own", True, [others()], True),
    ("not-watched", False, [], True),
    ("not-watched-own-create-held", False, [jobset()], False),
    # No JobSet watch event yet (the CRD came after kopf scanned): the JobSet held is
    # the operator's own create, which nothing would update.
    ("watched-no-event-yet", True, [jobset()], False),
]


@pytest.mark.parametrize(
    ("watched", "cached", "live"), [c[1:] for c in CANNOT_ANSWER], ids=[c[0] for c in CANNOT_ANSWER]
)
def test_the_collection_is_listed_when_the_cache_cannot_answer(watched, cached, live):
    api = Api({("GET", JOBSETS): [jobset(version="12", active=2)]})
    actions = reconcile(OperatorConfig(jobsets=watched), api, cached, live)
    assert api.calls == [("GET", POLICY), ("GET", JOBSETS)]
    assert not any(isinstance(a, CreateJob) for a in actions), "the listed JobSet was seen"


def test_an_empty_list_creates_the_jobset():
    api = Api({("GET", JOBSETS): []})
    actions = reconcile(OperatorConfig(jobsets=True), api)
    creates = [a for a in actions if isinstance(a, CreateJob)]
    assert [c.manifest["kind"] for c in creates] == ["JobSet"]


@pytest.mark.parametrize(
    ("status", "reason"),
    [(404, JOBSET_NOT_INSTALLED), (403, JOBSET_FORBIDDEN)],
    ids=["no-crd-404", "no-rbac-403"],
)
def test_no_jobset_api_is_a_condition_and_nothing_created(status, reason):
    api = Api({("GET", JOBSETS): status})
    actions = reconcile(OperatorConfig(jobsets=True), api)
    assert not any(isinstance(a, CreateJob | EnsureConfigMap) for a in actions)
    patch = next(a.patch for a in actions if isinstance(a, PatchStatus))
    created = next(c for c in patch["conditions"] if c["type"] == "JobCreated")
    assert (created["status"], created["reason"]) == ("False", reason)


def test_one_node_never_looks_at_jobsets():
    api = Api({})
    spec = {**SPEC, "resources": {"nodes": 1}, "distribution": {}}
    rec = Reconciler(client.ApiClient(), OperatorConfig(jobsets=True))
    rec.api.request = api.request  # type: ignore[method-assign]
    applied: list = []

    async def record(res, actions):
        applied.extend(actions)

    rec.applier.apply = record  # type: ignore[method-assign]
    rec.track(resource(spec))
    asyncio.run(rec.reconcile("PruneRetrain", "ns", "o"))
    assert api.calls == [("GET", POLICY)]
    assert [a.manifest["kind"] for a in applied if isinstance(a, CreateJob)] == ["Job"]


def test_finished_pods_are_listed_once_per_jobset_version():
    done = [("Completed", "True")]
    conds = [{"type": t, "status": s} for t, s in done]
    pod = {
        "metadata": {
            "name": "o-prune-node-0-0",
            "labels": {"jobset.sigs.k8s.io/jobset-name": "o-prune"},
            "annotations": {"batch.kubernetes.io/job-completion-index": "0"},
        },
        "status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 0}}}]},
    }
    api = Api({("GET", PODS): [pod]})
    rec = Reconciler(client.ApiClient(), OperatorConfig(jobsets=True))
    rec.api.request = api.request  # type: ignore[method-assign]

    async def record(res, actions):
        return None

    rec.applier.apply = record  # type: ignore[method-assign]
    rec.track(resource())
    rec.cache.watched_jobset(jobset(conditions=conds))
    asyncio.run(rec.reconcile("PruneRetrain", "ns", "o"))
    asyncio.run(rec.reconcile("PruneRetrain", "ns", "o"))
    assert api.calls.count(("GET", PODS)) == 1, "listed once for this JobSet version"
    rec.cache.watched_jobset(jobset(version="10", conditions=conds))
    asyncio.run(rec.reconcile("PruneRetrain", "ns", "o"))
    assert api.calls.count(("GET", PODS)) == 2, "a newer JobSet: listed again"
