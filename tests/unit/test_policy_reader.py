"""The policy read is shared (issue 16): a burst of reconciles in one namespace that
miss the policy cache together made one namespace read and one policy read each."""

import asyncio

from kubernetes import client

from modelops_operator.k8s.policy import PolicyReader
from modelops_operator.reconcile.policy import PolicyView


def test_concurrent_misses_share_one_read():
    reader = PolicyReader(client.ApiClient(), "default-policy", "ops", ttl=60)
    reads: list[str] = []

    async def slow_read(namespace: str) -> PolicyView | None:
        reads.append(namespace)
        await asyncio.sleep(0.05)
        return PolicyView(missing="none here")

    reader._read = slow_read  # type: ignore[method-assign]

    async def burst() -> list[PolicyView | None]:
        views = await asyncio.gather(*(reader.view("ns") for _ in range(50)))
        views.append(await reader.view("ns"))  # cached now
        views.append(await reader.view("other"))
        return views

    views = asyncio.run(burst())
    assert reads == ["ns", "other"]
    assert all(v is not None and v.missing == "none here" for v in views)
