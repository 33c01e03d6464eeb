"""What the operator asks of the API server (issue 16), counted at its one HTTP path
(`k8s/api.py`) while it runs for real against the local control plane: reconciles read
the informer cache, so there is no GET of a resource and no list of Jobs or pods per
reconcile (also not in the periodic resync), and a new resource costs its ConfigMap,
its Job, at most two status writes (created; the Job's start and UID once the Job
controller reports them) and its JobCreated Event."""

import time
from collections import Counter

from kubernetes import client
from tests.integration.kube_helpers import create, get, read_or_none

MODEL = {"uri": "pvc://models/tiny"}
RESOURCES = [
    ("PruneRetrain", "p", {"model": MODEL, "output": {"uri": "pvc://models/out"}}, "p-prune"),
    ("UnlearnRequest", "u", {"model": MODEL, "sampleIds": ["a1"]}, "u-unlearn"),
    (
        "LoRATransfer",
        "t",
        {
            "sourceModel": MODEL,
            "sourceAdapter": {"uri": "pvc://a/b"},
            "targetModel": MODEL,
            "output": {"uri": "pvc://o/t"},
        },
        "t-transfer",
    ),
    (
        "ModelAdaptation",
        "m",
        {"model": MODEL, "data": {"uri": "pvc://d/new"}, "output": {"uri": "pvc://o/v"}},
        "m-adapt-1",
    ),
]


def what(method: str, path: str) -> str:
    """'POST jobs', 'PATCH pruneretrains/status', 'GET namespaces', ..."""
    parts = path.strip("/").split("/")
    if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
        rest = parts[parts.index("namespaces") + 2 :]
    else:
        rest = parts[-1:] if parts[-2:-1] != ["namespaces"] else ["namespaces"]
    resource = rest[0] + ("/" + rest[2] if len(rest) > 2 else "")
    return f"{method} {resource}"


POLICY_SCOPE = "GET namespaces"
"""The policy reader's read of the namespace labels, at most once per ttl (2 s) while
reconciles run: the resync's only request."""


def settled(requests, quiet: float):
    """The requests so far, once none but the policy-scope read came for `quiet` s."""
    ours = [r for r in requests if what(r[0], r[1]) != POLICY_SCOPE]
    if ours and time.monotonic() - ours[-1][2] < quiet:
        return None
    return list(requests)


def test_reconciles_read_the_cache_and_write_little(
    requests, kube_api, namespace, operator, wait_for
):
    batch = client.BatchV1Api(kube_api)
    for kind, name, spec, _ in RESOURCES:
        create(kube_api, namespace, {"kind": kind, "metadata": {"name": name}, "spec": spec})
    for kind, name, _, job in RESOURCES:
        wait_for(f"Job {job}", lambda j=job: read_or_none(batch.read_namespaced_job, j, namespace))
        wait_for(
            f"{kind} {name} has a phase",
            lambda k=kind, n=name: get(kube_api, namespace, k, n).get("status", {}).get("phase"),
        )
        wait_for(
            f"{kind} {name} records its Job's UID",
            lambda k=kind, n=name: (
                get(kube_api, namespace, k, n).get("status", {}).get("jobRef", {}).get("uid")
                or (get(kube_api, namespace, k, n).get("status", {}).get("runs") or [{}])[-1]
                .get("jobRef", {})
                .get("uid")
            ),
        )
    # Past two resync intervals (5 s in the fixture): resyncs of unchanged resources
    # must not read or write anything.
    counted = wait_for(
        f"the operator idle: {Counter(what(m, p) for m, p, _ in requests)}",
        lambda: settled(requests, 12.0),
        timeout=90,
    )
    by = Counter(what(m, p) for m, p, _ in counted)
    n = len(RESOURCES)
    reads = {k: v for k, v in by.items() if k.split()[0] == "GET"}
    assert set(reads) <= {POLICY_SCOPE}, f"only the policy scope is read: {by}"
    assert not any(k.startswith("LIST") for k in by), by
    assert by["POST configmaps"] == n and by["POST jobs"] == n, by
    status_writes = sum(v for k, v in by.items() if k.endswith("/status"))
    assert status_writes <= 2 * n, by
    assert by["POST events"] == n, f"one JobCreated Event each: {by}"
    assert not any(k.startswith(("DELETE", "PUT")) for k in by), by
