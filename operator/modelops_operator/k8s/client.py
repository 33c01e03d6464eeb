"""Building the Kubernetes API client: in-cluster credentials, else the kubeconfig."""

import os

from kubernetes import client, config


def load_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An ApiClient for the pod's ServiceAccount, or for $KUBECONFIG / ~/.kube/config."""
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG")
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = 32
    return client.ApiClient(cfg)
