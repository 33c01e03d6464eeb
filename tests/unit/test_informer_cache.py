"""The informer cache (issue 16): what the watches delivered, read by every reconcile
instead of a GET and a Job list. What must hold: an older copy (a queued watch event)
never replaces a newer one (the operator's own write, written through); Jobs are found
by their controller reference, also for names too long for a label; a finished Job's
pods are listed once per Job version; and a reconcile reads nothing from the API
server when the cache holds the resource and its Jobs."""

import asyncio

import pytest
from kubernetes import client

from modelops_api.meta import API_VERSION
from modelops_operator.config import OperatorConfig
from modelops_operator.k8s.informer import InformerCache, job_owner, newer_or_same
from modelops_operator.service import Reconciler


def obj(version: str | None, **extra) -> dict:
    meta = {"name": "x", "namespace": "ns"}
    if version is not None:
        meta["resourceVersion"] = version
    return {"metadata": meta, **extra}


ORDER = [
    ("no-copy-yet", obj("5"), None, True),
    ("newer", obj("12"), obj("11"), True),
    ("same", obj("11"), obj("11"), True),
    ("older-queued-event", obj("9"), obj("11"), False),
    ("numeric-not-lexical", obj("100"), obj("99"), True),
    ("unknown-version-wins", obj(None), obj("11"), True),
]


@pytest.mark.parametrize(("new", "old", "kept"), [c[1:] for c in ORDER], ids=[c[0] for c in ORDER])
def test_only_an_older_copy_is_refused(new, old, kept):
    assert newer_or_same(new, old) is kept


def job(name: str, owner: str, version: str = "1", kind: str = "PruneRetrain", **status) -> dict:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "resourceVersion": version,
            "labels": {"modelops.dev/kind": kind},
            "ownerReferences": [
                {"apiVersion": API_VERSION, "kind": kind, "name": owner, "controller": True}
            ],
        },
        "spec": {"template": {"spec": {"containers": [{"name": "big", "args": ["x"] * 100}]}}},
        "status": status,
    }


def test_jobs_are_kept_by_owner_slim_and_newest():
    cache = InformerCache()
    long_owner = "o" * 253  # no label can hold it: the controller reference names it
    cache.put_job(job("a-prune", long_owner, "3", active=1))
    cache.put_job(job("a-prune", long_owner, "2"))  # an older event arriving late
    held = cache.jobs_of(("PruneRetrain", "ns", long_owner))
    assert [j["status"] for j in held] == [{"active": 1}]
    assert "template" not in held[0]["spec"], "the pod template is not kept"
    cache.drop_job(job("a-prune", long_owner, "4"))
    assert cache.jobs_of(("PruneRetrain", "ns", long_owner)) == []
    assert cache.size() == (0, 0)


def test_a_job_of_someone_else_is_not_cached():
    foreign = job("j", "o")
    foreign["metadata"]["ownerReferences"][0]["apiVersion"] = "apps/v1"
    cache = InformerCache()
    cache.put_job(foreign)
    assert job_owner(foreign) is None and cache.size() == (0, 0)


def test_pods_are_listed_once_per_job_version():
    cache = InformerCache()
    done = job("j", "o", "7", succeeded=1)
    assert cache.pods_for(done) is None
    cache.keep_pods(done, [{"metadata": {"name": "p"}}])
    assert cache.pods_for(done) == [{"metadata": {"name": "p"}}]
    assert cache.pods_for(job("j", "o", "8", succeeded=1)) is None, "a newer Job: list again"


class NoApi:
    """Records every request and answers none: a cached reconcile reads only the
    namespace's policy scope (k8s/policy.py, cached per namespace for its ttl)."""

    def __init__(self) -> None:
        self.calls: list = []

    async def request(self, method, path, *args, **kwargs):
        self.calls.append((method, path))
        if (method, path) == ("GET", "/api/v1/namespaces/ns"):
            raise client.ApiException(status=404)  # no namespace policy, no default
        raise AssertionError(f"API call during a cached reconcile: {method} {path}")


def test_a_cached_reconcile_reads_nothing_from_the_api_server():
    rec = Reconciler(client.ApiClient(), OperatorConfig())
    api = NoApi()
    rec.api.request = api.request  # type: ignore[method-assign]
    applied: list = []

    async def record(res, actions):
        applied.append(actions)

    rec.applier.apply = record  # type: ignore[method-assign]
    body = {
        "kind": "PruneRetrain",
        "metadata": {
            "name": "o",
            "namespace": "ns",
            "uid": "u1",
            "generation": 1,
            "resourceVersion": "5",
        },
        "spec": {"model": {"uri": "pvc://m/tiny"}, "output": {"uri": "pvc://m/out"}},
    }
    rec.track(body)
    running = job("o-prune", "o", "9", active=1)
    running["metadata"]["ownerReferences"][0]["uid"] = "u1"
    rec.cache.put_job(running)
    asyncio.run(rec.reconcile("PruneRetrain", "ns", "o"))
    assert not rec._failures, "no API call failed (NoApi raises on any)"
    assert api.calls == [("GET", "/api/v1/namespaces/ns")], "no resource GET, no Job list"
    assert applied, "the reconcile planned from the cache"
    assert not any(type(a).__name__ == "CreateJob" for a in applied[0]), "the Job was seen"
