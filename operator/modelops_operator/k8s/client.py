"""Reading the credentials: in-cluster (the ServiceAccount), else the kubeconfig.

The operator's own requests go through `k8s/api.py` (aiohttp) with this configuration;
the kubernetes package's client is kept for tools and tests. Its connection pool is
sized so that it never logs `Connection pool is full, discarding connection` for
calls over its size (by thousands during an API-server outage, issue 12)."""

import os

from kubernetes import client, config

EXECUTOR_WORKERS = 32
"""Threads that run blocking calls (drift queries): see handlers/lifecycle.py."""
POOL_SIZE = 2 * EXECUTOR_WORKERS
"""Room for the executor and the few calls made outside it (secrets, start-up)."""


def load_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An ApiClient for the pod's ServiceAccount, or for $KUBECONFIG / ~/.kube/config."""
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG")
    cfg = client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=cfg)
    else:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = POOL_SIZE
    return client.ApiClient(cfg)
