"""The Helm chart, installed into the real local control plane, and the operator run
with the identity the chart gives it.

For each mode (cluster-wide; namespaced with peering): `helm install` into a release
namespace that enforces Pod Security "restricted" (the operator's pod is admitted,
created by the real Deployment and ReplicaSet controllers), then the operator runs
in-process with a token of the chart's ServiceAccount (TokenRequest API) and the
settings of the installed Deployment's environment. It must reconcile a PruneRetrain
(ConfigMap, Job, status, Event) without one Forbidden answer, and it must be refused
what the chart does not grant: listing Secrets, touching Pods or the resources' specs,
cluster-scoped reads and, in namespaced mode, anything in another namespace.
`helm upgrade` and `helm uninstall` then run on the release (the CRDs are kept).

A missing helm or control plane fails these tests; nothing is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from tests.chart.test_chart import helm_path
from tests.conftest import REPO_ROOT, poll_until
from tests.integration.kube_helpers import condition, create, get, prune

from modelops_api.meta import GROUP, VERSION
from modelops_operator.config import OperatorConfig

CHART = REPO_ROOT / "charts" / "modelops"
MODELOPS_CRDS = [
    f"{p}.modelops.dev"
    for p in (
        "pruneretrains",
        "unlearnrequests",
        "loratransfers",
        "modeladaptations",
        "modelversions",
        "modelrollouts",
        "modelopspolicies",
    )
]
pytestmark = pytest.mark.timeout(300)


# -- helpers ---------------------------------------------------------------------------


class Helm:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(helm_path()), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
        if check and result.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result


@pytest.fixture(scope="module")
def helm(control_plane) -> Helm:
    helm_path()  # build (or find) it before any cluster work, and fail loudly if impossible
    return Helm(Path(control_plane.kubeconfig))


@pytest.fixture
def uninstall_after(helm) -> Iterator[Callable[[str, str], None]]:
    """register(release, namespace): uninstalled at teardown even when the test failed.
    The chart's admission policy and bindings are cluster-scoped: a release left behind
    when its namespace (and so its default ModelOpsPolicy) is deleted would deny every
    modelops resource of the tests after it (`no params found ... Deny`)."""
    installed: list[tuple[str, str]] = []
    yield lambda release, ns: installed.append((release, ns))
    for release, ns in installed:
        helm("uninstall", release, "-n", ns, "--ignore-not-found", check=False)


def terminating_namespaces(core: client.CoreV1Api) -> set[str]:
    """Namespaces being deleted. A cluster-wide operator sees every namespace, also those
    earlier tests left terminating (pods without a kubelet can keep them so for long);
    the API server refuses new content there (Forbidden) whatever the ClusterRole says."""
    return {
        ns.metadata.name
        for ns in core.list_namespace().items
        if ns.status and ns.status.phase == "Terminating"
    }


def about_one_of(line: str, namespaces: set[str]) -> bool:
    return any(f"{ns}/" in line or f"namespace {ns}" in line for ns in namespaces)


def about_another_namespace(line: str, own: set[str]) -> bool:
    """A line such as `could not record event ... on it-1234/name: Forbidden` about a
    namespace this test did not make: an earlier test's, deleted or being deleted."""
    named = set(re.findall(r" on ([a-z0-9][-a-z0-9]*)/", line))
    return bool(named) and not named & own


@pytest.fixture
def namespaces(kube_api) -> Iterator[Callable[..., str]]:
    """make(prefix, restricted=False) -> a new namespace; all deleted afterwards."""
    core = client.CoreV1Api(kube_api)
    made: list[str] = []

    def make(prefix: str, restricted: bool = False) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        labels = {"modelops.dev/test": "e2e-helm"}
        if restricted:
            labels["pod-security.kubernetes.io/enforce"] = "restricted"
            labels["pod-security.kubernetes.io/enforce-version"] = "latest"
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
        )
        made.append(name)
        return name

    yield make
    for name in made:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def adopt_existing_crds(kube_api, release: str, namespace: str) -> None:
    """CRDs that exist already (applied by other tests with `kubectl apply -f crds/`, or
    kept by an earlier release) get Helm's ownership metadata, so the chart adopts and
    updates them instead of refusing to install: the path docs/install.md describes."""
    ext = client.ApiextensionsV1Api(kube_api)
    for name in MODELOPS_CRDS:
        patch = {
            "metadata": {
                "labels": {"app.kubernetes.io/managed-by": "Helm"},
                "annotations": {
                    "meta.helm.sh/release-name": release,
                    "meta.helm.sh/release-namespace": namespace,
                },
            }
        }
        try:
            ext.patch_custom_resource_definition(name, patch)
        except ApiException as exc:
            if exc.status != 404:
                raise


def service_account_kubeconfig(
    kube_api, admin_kubeconfig: Path, ns: str, sa: str, out: Path
) -> Path:
    """A kubeconfig that authenticates as `system:serviceaccount:<ns>:<sa>` with a token
    from the TokenRequest API (audience: the API server's own)."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    token = client.CoreV1Api(kube_api).create_namespaced_service_account_token(sa, ns, request)
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    ctx = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    cluster = next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": sa, "user": {"token": token.status.token}}],
        "contexts": [{"name": "sa", "context": {"cluster": cluster["name"], "user": sa}}],
        "current-context": "sa",
    }
    out.write_text(json.dumps(kubeconfig))
    out.chmod(0o600)
    return out


def operator_config_from(deployment: Any, **overrides: Any) -> OperatorConfig:
    """The OperatorConfig the installed Deployment's container builds from its env
    (`OperatorConfig.from_env()` under exactly that environment), with test overrides."""
    env = {
        e.name: e.value
        for e in deployment.spec.template.spec.containers[0].env
        if e.value is not None
    }
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("MODELOPS_")]:
            mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        cfg = OperatorConfig.from_env()
    return replace(cfg, **overrides)


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self) -> list[str]:
        out = []
        for r in self.records:
            text = f"{r.levelname} {r.name}: {r.getMessage()}"
            if r.exc_info and r.exc_info[1] is not None:
                text += f" [{r.exc_info[1]!r}]"
            out.append(text)
        return out


@contextmanager
def captured_logs(level: int = logging.INFO) -> Iterator[LogCapture]:
    handler = LogCapture()
    loggers = [logging.getLogger(n) for n in ("kopf", "modelops", "aiohttp")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
        lg.addHandler(handler)
    try:
        yield handler
    finally:
        for lg, lvl in zip(loggers, old, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(lvl)


def forbidden(call: Callable[[], Any]) -> int:
    """The HTTP status of `call`: 403 when RBAC refuses it."""
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def exists(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def operator_pod_admitted(core: client.CoreV1Api, ns: str) -> Any:
    pods = core.list_namespaced_pod(ns, label_selector="app.kubernetes.io/component=operator")
    return pods.items[0] if pods.items else None


def reconciled(kube_api, ns: str, name: str) -> dict[str, Any] | None:
    cr = get(kube_api, ns, "PruneRetrain", name)
    cond = condition(cr, "JobCreated")
    return cr if cond and cond["status"] == "True" and cr["status"].get("phase") else None


def assert_reconciled_with_its_own_objects(kube_api, ns: str, name: str) -> None:
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    job = poll_until(
        f"Job {ns}/{name}-prune",
        lambda: exists(lambda: batch.read_namespaced_job(f"{name}-prune", ns)),
    )
    assert job.spec.template.spec.automount_service_account_token is False
    assert exists(lambda: core.read_namespaced_config_map(f"{name}-prune", ns))
    cr = poll_until(f"status of {ns}/{name}", lambda: reconciled(kube_api, ns, name))
    assert cr["status"]["jobRef"]["name"] == f"{name}-prune"
    poll_until(
        f"event on {ns}/{name}",
        lambda: (
            [
                e
                for e in core.list_namespaced_event(
                    ns, field_selector=f"involvedObject.name={name}"
                ).items
                if e.reason == "JobCreated"
            ]
            or None
        ),
    )


def sa_clients(
    kubeconfig: Path,
) -> tuple[client.ApiClient, client.CoreV1Api, client.BatchV1Api, client.CustomObjectsApi]:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    return api, client.CoreV1Api(api), client.BatchV1Api(api), client.CustomObjectsApi(api)


def test_helm_test_pod_is_admitted(helm, kube_api, namespaces, control_plane):
    """The `helm test` pod passes Pod Security "restricted" (server-side dry run: no
    kubelet here to run it)."""
    ns = namespaces("hm-test", restricted=True)
    rendered = helm(
        "template", "mo", str(CHART), "-n", ns, "--show-only", "templates/tests/test-metrics.yaml"
    ).stdout
    result = control_plane.kubectl(
        "create", "--dry-run=server", "-n", ns, "-f", "-", input=rendered, check=False
    )
    assert result.returncode == 0, result.stderr


# -- cluster-wide ------------------------------------------------------------------------


def test_cluster_wide_release(
    helm, kube_api, control_plane, namespaces, uninstall_after, tmp_path, crds_installed
):
    release = f"mo-{uuid.uuid4().hex[:6]}"
    rel_ns = namespaces("hm-cw", restricted=True)
    work_ns = namespaces("hm-work")
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    uninstall_after(release, rel_ns)
    adopt_existing_crds(kube_api, release, rel_ns)

    out = helm(
        "install",
        release,
        str(CHART),
        "-n",
        rel_ns,
        "-f",
        str(CHART / "ci" / "cluster-wide-values.yaml"),
        "-f",
        str(CHART / "ci" / "peering-values.yaml"),
        "--set",
        f"jobs.image.repository=modelops-jobs,jobs.image.tag=test,peering.name={release}",
    ).stdout
    assert "Mode: cluster-wide" in out and f'kopf peering "{release}"' in out

    # The chart's CRDs are the live ones, owned by the release and kept on uninstall.
    ext = client.ApiextensionsV1Api(kube_api)
    for name in MODELOPS_CRDS:
        crd = ext.read_custom_resource_definition(name)
        assert crd.metadata.annotations["meta.helm.sh/release-name"] == release
        assert crd.metadata.annotations["helm.sh/resource-policy"] == "keep"
    for name in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        assert ext.read_custom_resource_definition(name)

    # The real Deployment and ReplicaSet controllers create the operator's pod, and the
    # namespace's "restricted" Pod Security admits it.
    pod = poll_until("operator pod admitted", lambda: operator_pod_admitted(core, rel_ns))
    assert pod.spec.security_context.run_as_non_root is True
    deployment = apps.read_namespaced_deployment(f"{release}-modelops", rel_ns)
    sa = deployment.spec.template.spec.service_account_name

    kubeconfig = service_account_kubeconfig(
        kube_api, Path(control_plane.kubeconfig), rel_ns, sa, tmp_path / "sa.kubeconfig"
    )
    cfg = operator_config_from(deployment, resync_seconds=5.0)
    assert cfg.namespaces == () and cfg.jobs_image == "modelops-jobs:test"
    assert cfg.peering == release and deployment.spec.replicas == 3

    from modelops_operator.main import run_in_thread

    custom = client.CustomObjectsApi(kube_api)
    with captured_logs() as logs, run_in_thread(cfg, str(kubeconfig), tick=0.2):
        create(kube_api, work_ns, prune("cw"))
        assert_reconciled_with_its_own_objects(kube_api, work_ns, "cw")
        # The keep-alive lands in the release's ClusterKopfPeering (ClusterRole rights).
        poll_until(
            "cluster peering keep-alive",
            lambda: (
                custom.get_cluster_custom_object(
                    "kopf.dev", "v1", "clusterkopfpeerings", release
                ).get("status")
                or None
            ),
        )
    leftovers = terminating_namespaces(core)
    problems = [
        line
        for line in logs.lines()
        if ("forbidden" in line.lower() or " 403" in line)
        and not about_one_of(line, leftovers)
        and not about_another_namespace(line, {work_ns, rel_ns})
    ]
    assert problems == [], "the chart's ClusterRole lacks something the operator uses"

    # What the ServiceAccount must be refused.
    api, sa_core, sa_batch, sa_custom = sa_clients(kubeconfig)
    rbac = client.RbacAuthorizationV1Api(api)
    try:
        refused = {
            "list secrets cluster-wide": lambda: sa_core.list_secret_for_all_namespaces(),
            "list secrets in a namespace": lambda: sa_core.list_namespaced_secret(work_ns),
            "watch secrets": lambda: sa_core.list_namespaced_secret(
                work_ns, watch=True, timeout_seconds=1
            ),
            "create a pod": lambda: sa_core.create_namespaced_pod(
                work_ns,
                {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "x"}]}},
            ),
            "read a pod by name": lambda: sa_core.read_namespaced_pod("x", work_ns),
            "change a resource's spec": lambda: sa_custom.patch_namespaced_custom_object(
                GROUP, VERSION, work_ns, "pruneretrains", "cw", {"spec": {"image": "evil"}}
            ),
            "delete a resource": lambda: sa_custom.delete_namespaced_custom_object(
                GROUP, VERSION, work_ns, "pruneretrains", "cw"
            ),
            "read a ConfigMap": lambda: sa_core.read_namespaced_config_map("cw-prune", work_ns),
            "patch a Job": lambda: sa_batch.patch_namespaced_job(
                "cw-prune", work_ns, {"spec": {"suspend": True}}
            ),
            "create a ClusterRoleBinding": lambda: rbac.create_cluster_role_binding(
                {
                    "metadata": {"name": "x"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": "cluster-admin",
                    },
                    "subjects": [],
                }
            ),
            "list namespaces": lambda: sa_core.list_namespace(),
            "create a ServiceAccount token": lambda: (
                sa_core.create_namespaced_service_account_token(
                    sa,
                    rel_ns,
                    client.AuthenticationV1TokenRequest(
                        spec=client.V1TokenRequestSpec(audiences=[])
                    ),
                )
            ),
        }
        statuses = {what: forbidden(call) for what, call in refused.items()}
        assert statuses == dict.fromkeys(refused, 403)
        # Reading one Secret by name is granted (drift-trigger credentials): get, never list.
        assert forbidden(lambda: sa_core.read_namespaced_secret("absent", work_ns)) == 404
    finally:
        api.close()

    # Upgrade (CRD templates updated in place) and uninstall (the CRDs stay).
    helm(
        "upgrade",
        release,
        str(CHART),
        "-n",
        rel_ns,
        "--reuse-values",
        "--set",
        "operator.resyncSeconds=10",
    )
    deployment = apps.read_namespaced_deployment(f"{release}-modelops", rel_ns)
    env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}
    assert env["MODELOPS_RESYNC_SECONDS"] == "10"
    helm("uninstall", release, "-n", rel_ns)
    for name in MODELOPS_CRDS:
        assert ext.read_custom_resource_definition(name)
    rbac_admin = client.RbacAuthorizationV1Api(kube_api)
    assert exists(lambda: rbac_admin.read_cluster_role(f"{release}-modelops")) is None


# -- namespaced, with peering ------------------------------------------------------------


def test_namespaced_release_with_peering(
    helm, kube_api, control_plane, namespaces, uninstall_after, tmp_path, crds_installed
):
    release = f"mo-{uuid.uuid4().hex[:6]}"
    rel_ns = namespaces("hm-ns", restricted=True)
    uninstall_after(release, rel_ns)
    team_a = namespaces("hm-a", restricted=True)
    team_b = namespaces("hm-b")
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "watch": {"namespaces": [team_a]},
                "crds": {"enabled": False},  # installed by a cluster admin (crds_installed)
                "rbac": {"readSecrets": True},
                "replicaCount": 2,
                "peering": {"enabled": True, "name": "modelops"},
                "podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": None},
                "jobs": {
                    "image": {"repository": "modelops-jobs", "tag": "test"},
                    "serviceAccount": {"create": True},
                },
            }
        )
    )
    out = helm(
        "install",
        release,
        str(CHART),
        "-n",
        rel_ns,
        "-f",
        str(CHART / "ci" / "namespaced-values.yaml"),
        "-f",
        str(values),
    ).stdout
    assert f"serves only: {team_a}" in out

    rbac_admin = client.RbacAuthorizationV1Api(kube_api)
    assert exists(lambda: rbac_admin.read_cluster_role(f"{release}-modelops")) is None
    assert rbac_admin.read_namespaced_role(f"{release}-modelops", team_a)
    peering = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        "kopf.dev", "v1", team_a, "kopfpeerings", "modelops"
    )
    assert peering["metadata"]["name"] == "modelops"
    poll_until("operator pods admitted", lambda: operator_pod_admitted(core, rel_ns))
    deployment = apps.read_namespaced_deployment(f"{release}-modelops", rel_ns)
    assert deployment.spec.replicas == 2
    sa = deployment.spec.template.spec.service_account_name
    kubeconfig = service_account_kubeconfig(
        kube_api, Path(control_plane.kubeconfig), rel_ns, sa, tmp_path / "sa.kubeconfig"
    )
    cfg = operator_config_from(deployment, resync_seconds=5.0)
    assert cfg.namespaces == (team_a,) and cfg.peering == "modelops"
    assert cfg.service_account == f"{release}-modelops-job"

    from modelops_operator.main import run_in_thread

    with captured_logs() as logs, run_in_thread(cfg, str(kubeconfig), tick=0.2):
        create(kube_api, team_b, prune("other"))  # first, in the namespace it must ignore
        create(kube_api, team_a, prune("mine"))
        assert_reconciled_with_its_own_objects(kube_api, team_a, "mine")
        job = client.BatchV1Api(kube_api).read_namespaced_job("mine-prune", team_a)
        assert job.spec.template.spec.service_account_name == cfg.service_account
        # The Job's pod is admitted under "restricted" with the chart's Job ServiceAccount.
        poll_until(
            "Job pod in team-a",
            lambda: (
                core.list_namespaced_pod(
                    team_a, label_selector="batch.kubernetes.io/job-name=mine-prune"
                ).items
                or None
            ),
        )
        # The peering keep-alive is written with the namespaced Role's rights.
        poll_until(
            "peering keep-alive",
            lambda: (
                client.CustomObjectsApi(kube_api)
                .get_namespaced_custom_object("kopf.dev", "v1", team_a, "kopfpeerings", "modelops")
                .get("status")
                or None
            ),
        )
    assert client.BatchV1Api(kube_api).list_namespaced_job(team_b).items == []
    assert [
        c.metadata.name
        for c in core.list_namespaced_config_map(team_b).items
        if c.metadata.name != "kube-root-ca.crt"
    ] == []
    assert "status" not in get(kube_api, team_b, "PruneRetrain", "other")

    # kopf first tries the cluster-scoped discovery of namespaces and CRDs, is refused
    # (retrying a few times), and falls back to the listed namespace, with a warning.
    # These refusals are expected (they show the Role grants nothing cluster-wide);
    # anything else refused means the Role lacks something.
    expected = (
        'cannot list resource "namespaces" in API group "" at the cluster scope',
        'cannot list resource "customresourcedefinitions" in API group "apiextensions.k8s.io"',
        "Not enough permissions to list namespaces",
        "Not enough permissions to watch for resources",
    )
    problems = [
        line
        for line in logs.lines()
        if ("forbidden" in line.lower() or " 403" in line or "permission" in line.lower())
        and not any(e in line for e in expected)
    ]
    assert problems == []

    api, sa_core, sa_batch, sa_custom = sa_clients(kubeconfig)
    try:
        refused = {
            "list resources in another namespace": lambda: sa_custom.list_namespaced_custom_object(
                GROUP, VERSION, team_b, "pruneretrains"
            ),
            "patch status in another namespace": lambda: (
                sa_custom.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    team_b,
                    "pruneretrains",
                    "other",
                    {"status": {"phase": "Failed"}},
                )
            ),
            "create a Job in another namespace": lambda: sa_batch.create_namespaced_job(
                team_b,
                {
                    "metadata": {"name": "x"},
                    "spec": {
                        "template": {
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [{"name": "x", "image": "x"}],
                            }
                        }
                    },
                },
            ),
            "create a ConfigMap in another namespace": lambda: sa_core.create_namespaced_config_map(
                team_b, {"metadata": {"name": "x"}, "data": {}}
            ),
            "get a Secret in another namespace": lambda: sa_core.read_namespaced_secret(
                "x", team_b
            ),
            "list Jobs cluster-wide": lambda: sa_batch.list_job_for_all_namespaces(),
            "list resources cluster-wide": lambda: sa_custom.list_cluster_custom_object(
                GROUP, VERSION, "pruneretrains"
            ),
            "list namespaces": lambda: sa_core.list_namespace(),
            "list CRDs": lambda: client.ApiextensionsV1Api(api).list_custom_resource_definition(),
            "list ClusterKopfPeerings": lambda: sa_custom.list_cluster_custom_object(
                "kopf.dev", "v1", "clusterkopfpeerings"
            ),
            "list Secrets in its own namespace": lambda: sa_core.list_namespaced_secret(team_a),
            "list Secrets in the release namespace": lambda: sa_core.list_namespaced_secret(rel_ns),
            "read a namespace it does not serve": lambda: sa_core.read_namespace(team_b),
            "read another ModelOpsPolicy of the release namespace": lambda: (
                sa_custom.get_namespaced_custom_object(
                    GROUP, VERSION, rel_ns, "modelopspolicies", "other"
                )
            ),
        }
        statuses = {what: forbidden(call) for what, call in refused.items()}
        assert statuses == dict.fromkeys(refused, 403)
        # What the policy check needs, and gets: the served namespace's labels, its
        # ModelOpsPolicy objects, and the installation default by name.
        assert sa_core.read_namespace(team_a).metadata.name == team_a
        sa_custom.list_namespaced_custom_object(GROUP, VERSION, team_a, "modelopspolicies")
        default = sa_custom.get_namespaced_custom_object(
            GROUP, VERSION, rel_ns, "modelopspolicies", f"{release}-modelops"
        )
        assert default["spec"]["allowedImages"][0] == "modelops-jobs"
    finally:
        api.close()
    helm("uninstall", release, "-n", rel_ns)
