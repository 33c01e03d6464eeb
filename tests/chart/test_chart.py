"""The Helm chart, rendered by a real helm (built from source by hack/build-helm.sh):
`helm lint` and `helm template` for every ci/ scenario, then assertions over the
rendered YAML, table-driven: RBAC is exactly what the operator needs (and differs by
mode), the Deployment is restricted and configured from values, the monitoring
objects select what the operator and its Jobs expose, the CRDs are the generated ones,
and bad values are refused with a message that says what is wrong.

A missing helm is built on first use (minutes, once); a helm that cannot be built
fails every test here, never skips it."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import REPO_ROOT

CHART = REPO_ROOT / "charts" / "modelops"
RELEASE, RELEASE_NS = "mo", "modelops-system"
SCENARIOS = sorted(CHART.glob("ci/*-values.yaml"))

Doc = dict[str, Any]


# -- running helm ----------------------------------------------------------------------


@functools.cache
def helm_path() -> Path:
    """The helm binary: `$MODELOPS_CACHE/helm/<version>/bin/helm`, built on first use by
    hack/build-helm.sh (which holds the pinned version). Fails loudly when it cannot."""
    result = subprocess.run(
        [str(REPO_ROOT / "hack" / "build-helm.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    path = Path(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else None
    if result.returncode != 0 or path is None or not path.is_file():
        pytest.fail(
            f"helm is not available: hack/build-helm.sh exited {result.returncode}\n"
            f"{result.stderr[-3000:]}",
            pytrace=False,
        )
    return path


def helm(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm_path()), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def values_args(values: dict[str, Any] | None, tmp_dir: Path | None) -> list[str]:
    if not values:
        return []
    assert tmp_dir is not None
    path = tmp_dir / f"values-{len(list(tmp_dir.glob('values-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["-f", str(path)]


def render(
    *files: Path,
    values: dict[str, Any] | None = None,
    tmp_dir: Path | None = None,
    chart: Path = CHART,
    namespace: str = RELEASE_NS,
    extra: tuple[str, ...] = (),
) -> list[Doc]:
    args = ["template", RELEASE, str(chart), "--namespace", namespace, *extra]
    for f in files:
        args += ["-f", str(f)]
    args += values_args(values, tmp_dir)
    out = helm(*args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Doc], kind: str) -> Doc:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def container_env(docs: list[Doc]) -> dict[str, Any]:
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def pod_volumes(docs: list[Doc]) -> dict[str, Doc]:
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    return {v["name"]: v for v in spec.get("volumes", [])}


def rules_of(role: Doc) -> list[tuple[str, str, frozenset[str]]]:
    """(apiGroup, resource, verbs) for every resource a role names."""
    out = []
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.append((group, resource, frozenset(rule["verbs"])))
    return out


def verbs_on(role: Doc, group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for g, r, v in rules_of(role):
        if g == group and r == resource:
            verbs |= v
    return verbs


@pytest.fixture(scope="module")
def scenario_docs() -> dict[str, list[Doc]]:
    """Every ci/ scenario (and the defaults), rendered once."""
    out = {"defaults": render()}
    for f in SCENARIOS:
        out[f.name.removesuffix("-values.yaml")] = render(f)
    return out


def test_every_scenario_the_brief_names_exists():
    names = {f.name for f in SCENARIOS}
    assert {
        "cluster-wide-values.yaml",
        "namespaced-values.yaml",
        "peering-values.yaml",
        "monitoring-values.yaml",
    } <= names


# -- lint and template, every scenario ----------------------------------------------------


@pytest.mark.parametrize(
    "values_file", [None, *SCENARIOS], ids=lambda f: f.name if f else "defaults"
)
def test_helm_lint_strict(values_file):
    args = ["lint", "--strict", str(CHART)]
    if values_file:
        args += ["-f", str(values_file)]
    result = helm(*args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "scenario", ["defaults", *(f.name.removesuffix("-values.yaml") for f in SCENARIOS)]
)
def test_rendered_objects_are_well_formed(scenario_docs, scenario):
    docs = scenario_docs[scenario]
    seen = set()
    for d in docs:
        meta = d["metadata"]
        key = (d["apiVersion"], d["kind"], meta.get("namespace"), meta["name"])
        assert key not in seen, f"rendered twice: {key}"
        seen.add(key)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", meta["name"]), meta["name"]
        assert len(meta["name"]) <= 63 or d["kind"] == "CustomResourceDefinition"
        labels = meta.get("labels") or {}
        assert labels.get("app.kubernetes.io/part-of") == "modelops", key
        assert labels.get("app.kubernetes.io/managed-by") in ("Helm", None), (
            f"{key}: managed-by=modelops marks the operator's Jobs only"
        )
        for name, value in labels.items():
            assert isinstance(value, str) and len(value) <= 63, (key, name, value)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "Service", "NetworkPolicy"} <= kinds


# -- pod security: what Pod Security "restricted" requires, on every pod template --------

ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    problems = []
    psc = pod_spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            problems.append(flag)
    for vol in pod_spec.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"volume {vol['name']}: {kinds}")
    for c in pod_spec["containers"] + (pod_spec.get("initContainers") or []):
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{c['name']}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: allowPrivilegeEscalation")
        if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
            problems.append(f"{c['name']}: capabilities not dropped")
        if set((sc.get("capabilities") or {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{c['name']}: capabilities added")
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            problems.append(f"{c['name']}: runAsNonRoot")
        if (sc.get("runAsUser", psc.get("runAsUser")) or 1) == 0:
            problems.append(f"{c['name']}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{c['name']}: seccompProfile")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            problems.append(f"{c['name']}: hostPort")
    return problems


def pod_specs(docs: list[Doc]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in docs:
        if d["kind"] == "Pod":
            out.append((d["metadata"]["name"], d["spec"]))
        elif d["kind"] in ("Deployment", "Job", "DaemonSet", "StatefulSet"):
            out.append((d["metadata"]["name"], d["spec"]["template"]["spec"]))
    return out


@pytest.mark.parametrize(
    "scenario", ["defaults", *(f.name.removesuffix("-values.yaml") for f in SCENARIOS)]
)
def test_every_pod_is_restricted(scenario_docs, scenario):
    specs = pod_specs(scenario_docs[scenario])
    assert specs
    for name, spec in specs:
        assert restricted_violations(spec) == [], name
        for c in spec["containers"]:
            assert c["securityContext"].get("readOnlyRootFilesystem") is True, name
            assert c.get("resources", {}).get("limits", {}).get("memory"), name


# -- RBAC -------------------------------------------------------------------------------

PLURALS = ("pruneretrains", "unlearnrequests", "loratransfers", "modeladaptations")

# Exactly what the operator does in a namespace it serves (see templates/_helpers.tpl).
NAMESPACE_RULES = {
    **{("modelops.dev", p): {"get", "list", "watch"} for p in PLURALS},
    **{("modelops.dev", f"{p}/status"): {"get", "patch"} for p in PLURALS},
    # Issue 15: versions are created (never updated or deleted), rollouts only read,
    # both statuses patched; InferenceServices read and patched (never created/deleted).
    ("modelops.dev", "modelversions"): {"get", "list", "watch", "create"},
    ("modelops.dev", "modelrollouts"): {"get", "list", "watch"},
    ("modelops.dev", "modelversions/status"): {"get", "patch"},
    ("modelops.dev", "modelrollouts/status"): {"get", "patch"},
    ("serving.kserve.io", "inferenceservices"): {"get", "list", "watch", "patch"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
    ("", "pods"): {"list"},
    ("", "configmaps"): {"create"},
    ("", "events"): {"create"},
    ("", "secrets"): {"get"},
    ("modelops.dev", "modelopspolicies"): {"get", "list"},
    ("", "namespaces"): {"get"},
}


def effective(role: Doc) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for g, r, v in rules_of(role):
        out.setdefault((g, r), set()).update(v)
    return out


def test_chart_plurals_are_the_api_kinds():
    from modelops_api.kinds import KINDS

    assert tuple(k.plural for k in KINDS) == PLURALS
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert " ".join(PLURALS) in helpers


TENANT_ROLE = "tenant-role"


def operator_docs(docs: list[Doc]) -> list[Doc]:
    """Everything but the tenant ClusterRoles (aggregated into edit/admin/view)."""
    return [
        d
        for d in docs
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") != TENANT_ROLE
    ]


def tenant_roles(docs: list[Doc]) -> dict[str, Doc]:
    """The tenant ClusterRoles by the default role they aggregate into."""
    out = {}
    for d in of_kind(docs, "ClusterRole"):
        labels = d["metadata"].get("labels", {})
        if labels.get("app.kubernetes.io/component") == TENANT_ROLE:
            for key, value in labels.items():
                if key.startswith("rbac.authorization.k8s.io/aggregate-to-") and value == "true":
                    out[key.rsplit("-", 1)[-1]] = d
    return out


TENANT_WRITE = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
READ = {"get", "list", "watch"}
TENANT_EDIT = {
    **{("modelops.dev", p): TENANT_WRITE for p in (*PLURALS, "modelrollouts")},
    ("modelops.dev", "modelversions"): READ,
}
TENANT_VIEW = {
    ("modelops.dev", r): READ
    for p in (*PLURALS, "modelrollouts", "modelversions")
    for r in (p, f"{p}/status")
}


def check_tenant_roles(docs: list[Doc]) -> None:
    """Tenants: edit/admin create and change the kinds and ModelRollouts, never a
    ModelVersion (the operator's record), never a status; view reads all of them."""
    roles = tenant_roles(docs)
    assert set(roles) == {"admin", "edit", "view"}
    assert roles["admin"] is roles["edit"]
    assert effective(roles["edit"]) == TENANT_EDIT
    assert effective(roles["view"]) == TENANT_VIEW
    assert not of_kind([d for d in docs if d not in operator_docs(docs)], "ClusterRoleBinding"), (
        "the chart binds no tenant: the default roles carry the rules"
    )


def check_cluster_wide(docs: list[Doc]) -> None:
    check_tenant_roles(docs)
    docs = operator_docs(docs)
    assert not of_kind(docs, "Role") and not of_kind(docs, "RoleBinding")
    role = one(docs, "ClusterRole")
    expected = {
        **NAMESPACE_RULES,
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    }
    assert effective(role) == expected
    binding = one(docs, "ClusterRoleBinding")
    sa = one(docs, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": RELEASE_NS}
    ]
    assert container_env(docs)["MODELOPS_NAMESPACES"] == ""


def check_namespaced(docs: list[Doc]) -> None:
    check_tenant_roles(docs)  # the tenants' grants are the same in both modes
    docs = operator_docs(docs)
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")
    roles = [r for r in of_kind(docs, "Role") if r["metadata"]["namespace"] != RELEASE_NS]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    # The installation's default ModelOpsPolicy: get by name, in the release namespace only.
    (policy_role,) = [r for r in of_kind(docs, "Role") if r["metadata"]["namespace"] == RELEASE_NS]
    assert policy_role["rules"] == [
        {
            "apiGroups": ["modelops.dev"],
            "resources": ["modelopspolicies"],
            "resourceNames": [f"{RELEASE}-modelops"],
            "verbs": ["get"],
        }
    ]
    expected = {k: v for k, v in NAMESPACE_RULES.items() if k != ("", "secrets")}
    for role in roles:
        assert effective(role) == expected, "namespaced-values sets rbac.readSecrets=false"
    bindings = of_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == [
        "modelops-system",
        "team-a",
        "team-b",
    ]
    for b in bindings:
        assert b["roleRef"]["kind"] == "Role"
        assert b["subjects"][0]["namespace"] == RELEASE_NS
    assert not of_kind(docs, "CustomResourceDefinition"), "crds.enabled=false"
    for binding in of_kind(docs, "ValidatingAdmissionPolicyBinding"):
        exprs = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
        assert exprs[1] == {
            "key": "kubernetes.io/metadata.name",
            "operator": "In",
            "values": ["team-a", "team-b"],
        }, "namespaced mode: the policy binds the watched namespaces only"
    env = container_env(docs)
    assert env["MODELOPS_NAMESPACES"] == "team-a,team-b"
    job_sas = [
        d for d in of_kind(docs, "ServiceAccount") if d["metadata"]["namespace"] != RELEASE_NS
    ]
    assert sorted(d["metadata"]["namespace"] for d in job_sas) == ["team-a", "team-b"]
    assert all(d["automountServiceAccountToken"] is False for d in job_sas)
    assert env["MODELOPS_JOB_SERVICE_ACCOUNT"] == job_sas[0]["metadata"]["name"]
    assert env["MODELOPS_HF_CACHE_CLAIM"] == "hf-cache"
    assert env["MODELOPS_JOB_ENV_HF_DATASETS_OFFLINE"] == "1"


def check_peering(docs: list[Doc]) -> None:
    deploy = one(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 3
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    env = container_env(docs)
    assert env["MODELOPS_PEERING"] == "modelops"
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    peering = one(docs, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1" and peering["metadata"]["name"] == "modelops"
    assert verbs_on(one(operator_docs(docs), "ClusterRole"), "kopf.dev", "clusterkopfpeerings") == {
        "get",
        "list",
        "watch",
        "patch",
    }
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    anti = deploy["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert (
        anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"]
        == "kubernetes.io/hostname"
    )
    policy = one(docs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert {"ipBlock": {"cidr": "10.0.0.1/32"}} in policy["spec"]["egress"][1]["to"]


def check_monitoring(docs: list[Doc]) -> None:
    sm = one(docs, "ServiceMonitor")
    svc = one(docs, "Service")
    assert sm["metadata"]["labels"]["release"] == "kps"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert svc["metadata"]["labels"][sm["spec"]["jobLabel"]] == "modelops-operator", (
        "the alert rules select job=modelops-operator"
    )
    assert svc["spec"]["ports"][0]["name"] == "metrics"
    pm = one(docs, "PodMonitor")
    assert pm["metadata"]["labels"]["release"] == "kps"
    assert pm["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "modelops"}}
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    for rule in of_kind(docs, "PrometheusRule"):
        assert rule["metadata"]["labels"]["release"] == "kps"
        assert rule["spec"]["groups"]
    for cm in of_kind(docs, "ConfigMap"):
        assert cm["metadata"]["namespace"] == "monitoring"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"]["grafana_folder"] == "ML operations"
    ingress = one(docs, "NetworkPolicy")["spec"]["ingress"][0]
    assert ingress["from"][0] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }


def check_defaults(docs: list[Doc]) -> None:
    check_cluster_wide(docs)
    deploy = one(docs, "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"] == ["python", "-m", "modelops_operator"]
    assert c["image"] == "ghcr.io/modelops/modelops-operator:0.1.0"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 8080, "health": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = container_env(docs)
    assert env["MODELOPS_JOBS_IMAGE"] == "ghcr.io/modelops/modelops-jobs:0.1.0"
    assert "MODELOPS_PEERING" not in env
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert len(of_kind(docs, "CustomResourceDefinition")) == 7, (
        "four job kinds, ModelVersion, ModelRollout and ModelOpsPolicy"
    )
    check_policy(docs)
    assert not of_kind(docs, "ServiceMonitor") and not of_kind(docs, "PodMonitor")
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    test_pod = one(docs, "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert test_pod["spec"]["automountServiceAccountToken"] is False


def check_policy(docs: list[Doc]) -> None:
    """Issue 11: the ValidatingAdmissionPolicy is the generated one, its two bindings
    split namespaces on modelops.dev/policy, and the default ModelOpsPolicy allows the
    chart's own jobs image and what values.yaml lists."""
    from modelops_api.admission import validating_admission_policy

    vap = one(docs, "ValidatingAdmissionPolicy")
    assert vap["metadata"]["name"] == f"{RELEASE}-modelops-policy"
    assert vap["spec"] == validating_admission_policy()["spec"]
    bindings = {b["metadata"]["name"]: b for b in of_kind(docs, "ValidatingAdmissionPolicyBinding")}
    default = bindings[f"{RELEASE}-modelops-default"]["spec"]
    assert default["policyName"] == vap["metadata"]["name"]
    assert default["validationActions"] == ["Deny"]
    assert default["paramRef"] == {
        "name": f"{RELEASE}-modelops",
        "namespace": RELEASE_NS,
        "parameterNotFoundAction": "Deny",
    }
    assert default["matchResources"]["namespaceSelector"]["matchExpressions"] == [
        {"key": "modelops.dev/policy", "operator": "NotIn", "values": ["namespace"]}
    ]
    local = bindings[f"{RELEASE}-modelops-namespace"]["spec"]
    assert local["paramRef"] == {"selector": {}, "parameterNotFoundAction": "Deny"}
    assert local["matchResources"]["namespaceSelector"]["matchExpressions"] == [
        {"key": "modelops.dev/policy", "operator": "In", "values": ["namespace"]}
    ]
    policy = one(docs, "ModelOpsPolicy")
    assert policy["metadata"]["namespace"] == RELEASE_NS
    assert policy["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    from modelops_api.policy import ModelOpsPolicySpec

    spec = ModelOpsPolicySpec.model_validate(policy["spec"])
    assert spec.allowed_images == ["ghcr.io/modelops/modelops-jobs"]
    assert spec.allow_file_uris is False and spec.allowed_priority_classes == []
    assert spec.allowed_toleration_keys == ["nvidia.com/gpu"]
    env = container_env(docs)
    assert env["MODELOPS_POLICY_NAME"] == f"{RELEASE}-modelops"
    assert env["MODELOPS_POLICY_NAMESPACE"] == RELEASE_NS
    assert env["MODELOPS_JOB_SCRATCH_SIZE"] == "20Gi"


def check_gpu_scheduling(docs: list[Doc]) -> None:
    env = container_env(docs)
    assert env["MODELOPS_JOBS_IMAGE"] == "registry.example.com/ml/modelops-jobs:0.1.0"
    assert env["MODELOPS_GPU_RESOURCE"] == "nvidia.com/gpu"
    assert json.loads(env["MODELOPS_JOB_NODE_SELECTOR"]) == {"nvidia.com/gpu.present": "true"}
    assert json.loads(env["MODELOPS_JOB_TOLERATIONS"]) == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert env["MODELOPS_JOB_PRIORITY_CLASS"] == "ml-batch"


BASIC_AUTH_DIR = "/var/run/secrets/modelops/mlflow-basic-auth"


def basic_auth_mounted(
    docs: list[Doc], secret: str, username_key: str = "username", password_key: str = "password"
) -> bool:
    """MLflow's basic auth: the Secret's two keys mounted read-only as files, the
    operator told where (and no token)."""
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = container_env(docs)
    return (
        env.get("MODELOPS_MLFLOW_USERNAME_FILE") == f"{BASIC_AUTH_DIR}/username"
        and env.get("MODELOPS_MLFLOW_PASSWORD_FILE") == f"{BASIC_AUTH_DIR}/password"
        and "MODELOPS_MLFLOW_TOKEN_FILE" not in env
        and pod_volumes(docs)["mlflow-basic-auth"]["secret"]
        == {
            "secretName": secret,
            "defaultMode": 0o440,
            "items": [
                {"key": username_key, "path": "username"},
                {"key": password_key, "path": "password"},
            ],
        }
        and {"name": "mlflow-basic-auth", "mountPath": BASIC_AUTH_DIR, "readOnly": True}
        in container["volumeMounts"]
    )


def check_registry_token(docs: list[Doc]) -> None:
    env = container_env(docs)
    assert env["MODELOPS_MLFLOW_TOKEN_FILE"] == "/var/run/secrets/modelops/mlflow/token"
    assert env["MODELOPS_MLFLOW_CA_FILE"] == "/var/run/secrets/modelops/mlflow-ca/ca.crt"
    assert not {"MODELOPS_MLFLOW_USERNAME_FILE", "MODELOPS_MLFLOW_PASSWORD_FILE"} & set(env)
    assert "mlflow-basic-auth" not in pod_volumes(docs)


def check_registry_basic_auth(docs: list[Doc]) -> None:
    assert container_env(docs)["MODELOPS_MLFLOW_URL"] == "http://mlflow.mlflow.svc:5000"
    assert basic_auth_mounted(docs, "mlflow-basic-auth")
    assert "mlflow-token" not in pod_volumes(docs)


SCENARIO_CHECKS: list[tuple[str, Callable[[list[Doc]], None]]] = [
    ("defaults", check_defaults),
    ("cluster-wide", check_cluster_wide),
    ("cluster-wide", check_gpu_scheduling),
    ("namespaced", check_namespaced),
    ("peering", check_peering),
    ("monitoring", check_monitoring),
    ("registry", check_registry_token),
    ("registry-basic-auth", check_registry_basic_auth),
]


@pytest.mark.parametrize(
    "scenario, check", SCENARIO_CHECKS, ids=[f"{s}-{c.__name__}" for s, c in SCENARIO_CHECKS]
)
def test_scenario(scenario_docs, scenario, check):
    check(scenario_docs[scenario])


# Values -> what the rendering must (not) contain, beyond the ci/ scenarios.
VALUE_CASES: list[tuple[str, dict[str, Any], Callable[[list[Doc]], bool]]] = [
    (
        "no-secret-reads",
        {"rbac": {"readSecrets": False}},
        lambda d: verbs_on(one(operator_docs(d), "ClusterRole"), "", "secrets") == set(),
    ),
    (
        "secrets-get-only",
        {},
        lambda d: verbs_on(one(operator_docs(d), "ClusterRole"), "", "secrets") == {"get"},
    ),
    (
        "no-rbac",
        {"rbac": {"create": False}},
        lambda d: not [x for x in d if "Role" in x["kind"]],
    ),
    (
        "namespaced-peering-objects-per-namespace",
        {"watch": {"namespaces": ["a", "b"]}, "peering": {"enabled": True}, "replicaCount": 2},
        lambda d: (
            sorted(p["metadata"]["namespace"] for p in of_kind(d, "KopfPeering")) == ["a", "b"]
            and not of_kind(d, "ClusterKopfPeering")
            and all(
                verbs_on(r, "kopf.dev", "kopfpeerings")
                for r in of_kind(d, "Role")
                if not r["metadata"]["name"].endswith("-policy")  # the default policy's reader
            )
        ),
    ),
    (
        "no-tenant-roles",
        {"rbac": {"aggregateToDefaultRoles": False}},
        lambda d: not tenant_roles(d) and len(of_kind(d, "ClusterRole")) == 1,
    ),
    (
        "crds-off",
        {"crds": {"enabled": False}},
        lambda d: not of_kind(d, "CustomResourceDefinition"),
    ),
    (
        "crds-not-kept",
        {"crds": {"keep": False}},
        lambda d: all(
            "helm.sh/resource-policy" not in (c["metadata"].get("annotations") or {})
            for c in of_kind(d, "CustomResourceDefinition")
        ),
    ),
    (
        "image-digest-wins",
        {"image": {"repository": "r/op", "tag": "1.2.3", "digest": "sha256:" + "a" * 64}},
        lambda d: (
            one(d, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
            == "r/op@sha256:" + "a" * 64
        ),
    ),
    (
        "extra-monitoring-labels",
        {
            "monitoring": {"labels": {"release": "prom", "team": "ml"}},
            "metrics": {"podMonitor": {"enabled": True}},
        },
        lambda d: (
            one(d, "PodMonitor")["metadata"]["labels"].items()
            >= {"release": "prom", "team": "ml"}.items()
        ),
    ),
    (
        "jobset-off-by-default",
        {},
        lambda d: (
            verbs_on(one(operator_docs(d), "ClusterRole"), "jobset.x-k8s.io", "jobsets") == set()
            and "MODELOPS_JOBSETS" not in container_env(d)
        ),
    ),
    (
        "jobset-enabled",
        {"jobset": {"enabled": True}},
        lambda d: (
            verbs_on(one(operator_docs(d), "ClusterRole"), "jobset.x-k8s.io", "jobsets")
            == {"get", "list", "watch", "create", "delete"}
            and container_env(d)["MODELOPS_JOBSETS"] == "true"
        ),
    ),
    (
        "jobset-enabled-namespaced",
        {"jobset": {"enabled": True}, "watch": {"namespaces": ["team-a", "team-b"]}},
        lambda d: (
            [
                role["metadata"]["namespace"]
                for role in of_kind(d, "Role")
                if verbs_on(role, "jobset.x-k8s.io", "jobsets")
                == {"get", "list", "watch", "create", "delete"}
            ]
            == ["team-a", "team-b"]
        ),
    ),
    (
        "registry-off-by-default",
        {},
        lambda d: (
            not {
                "MODELOPS_MLFLOW_URL",
                "MODELOPS_MLFLOW_TOKEN_FILE",
                "MODELOPS_MLFLOW_USERNAME_FILE",
                "MODELOPS_MLFLOW_PASSWORD_FILE",
            }
            & set(container_env(d))
            and not {"mlflow-token", "mlflow-basic-auth"} & set(pod_volumes(d))
        ),
    ),
    (
        "registry-url-without-token",
        {"registry": {"mlflow": {"url": "http://mlflow:5000"}}},
        lambda d: (
            container_env(d)["MODELOPS_MLFLOW_URL"] == "http://mlflow:5000"
            and "MODELOPS_MLFLOW_TOKEN_FILE" not in container_env(d)
            and "MODELOPS_MLFLOW_USERNAME_FILE" not in container_env(d)
            and not {"mlflow-token", "mlflow-basic-auth"} & set(pod_volumes(d))
        ),
    ),
    (
        "registry-basic-auth-from-a-secret-with-own-keys",
        {
            "registry": {
                "mlflow": {
                    "url": "https://mlflow.example/prefix",
                    "basicAuthSecret": {
                        "name": "mlflow-login",
                        "usernameKey": "user",
                        "passwordKey": "pass.txt",
                    },
                }
            }
        },
        lambda d: basic_auth_mounted(d, "mlflow-login", "user", "pass.txt"),
    ),
    (
        "registry-token-from-a-secret-file",
        {
            "registry": {
                "mlflow": {
                    "url": "https://mlflow.example/prefix",
                    "tokenSecret": {"name": "mlflow-token", "key": "bearer"},
                }
            }
        },
        lambda d: (
            container_env(d)["MODELOPS_MLFLOW_TOKEN_FILE"]
            == "/var/run/secrets/modelops/mlflow/token"
            and pod_volumes(d)["mlflow-token"]["secret"]
            == {
                "secretName": "mlflow-token",
                "defaultMode": 0o440,
                "items": [{"key": "bearer", "path": "token"}],
            }
            and {
                "name": "mlflow-token",
                "mountPath": "/var/run/secrets/modelops/mlflow",
                "readOnly": True,
            }
            in one(d, "Deployment")["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        ),
    ),
    (
        "registry-private-ca-from-a-secret-file",
        {
            "registry": {
                "mlflow": {
                    "url": "https://mlflow.internal",
                    "caSecret": {"name": "mlflow-ca", "key": "bundle.pem"},
                }
            }
        },
        lambda d: (
            container_env(d)["MODELOPS_MLFLOW_CA_FILE"]
            == "/var/run/secrets/modelops/mlflow-ca/ca.crt"
            and pod_volumes(d)["mlflow-ca"]["secret"]["items"]
            == [{"key": "bundle.pem", "path": "ca.crt"}]
            and "mlflow-token" not in pod_volumes(d)
        ),
    ),
    (
        "no-networkpolicy",
        {"networkPolicy": {"enabled": False}},
        lambda d: not of_kind(d, "NetworkPolicy"),
    ),
    (
        "no-tests",
        {"tests": {"enabled": False}},
        lambda d: not of_kind(d, "Pod"),
    ),
    (
        "fullname-override",
        {"fullnameOverride": "ops"},
        lambda d: one(d, "Deployment")["metadata"]["name"] == "ops",
    ),
    (
        "policy-off",
        {"policy": {"enabled": False}},
        lambda d: (
            not of_kind(d, "ValidatingAdmissionPolicy")
            and not of_kind(d, "ValidatingAdmissionPolicyBinding")
            and not of_kind(d, "ModelOpsPolicy")
            and "MODELOPS_POLICY_NAME" not in container_env(d)
            and verbs_on(one(operator_docs(d), "ClusterRole"), "modelops.dev", "modelopspolicies")
            == set()
        ),
    ),
    (
        "policy-values",
        {
            "policy": {
                "allowedImages": ["registry.example/team/"],
                "allowedPrometheusEndpoints": ["http://prometheus.monitoring:9090"],
                "allowedPriorityClasses": ["batch-low"],
                "allowFileURIs": True,
            },
            "jobs": {"image": {"repository": "registry.example/jobs"}},
        },
        lambda d: (
            one(d, "ModelOpsPolicy")["spec"]
            == {
                "allowedImages": ["registry.example/jobs", "registry.example/team/"],
                "allowedPrometheusEndpoints": ["http://prometheus.monitoring:9090"],
                "allowedPriorityClasses": ["batch-low"],
                "allowedTolerationKeys": ["nvidia.com/gpu"],
                "allowFileURIs": True,
            }
        ),
    ),
]


@pytest.mark.parametrize(
    "values, check", [c[1:] for c in VALUE_CASES], ids=[c[0] for c in VALUE_CASES]
)
def test_values(values, check, tmp_path):
    assert check(render(values=values, tmp_dir=tmp_path))


# -- bad values are refused, with a message that says what is wrong ------------------

BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("zero-replicas", {"replicaCount": 0}, "replicaCount"),
    (
        "policy-endpoint-with-fragment",
        {"policy": {"allowedPrometheusEndpoints": ["http://prom:9090/#x"]}},
        "/policy/allowedPrometheusEndpoints/0",
    ),
    ("policy-bad-priority-class", {"policy": {"allowedPriorityClasses": ["Bad"]}}, "/policy"),
    ("replicas-without-peering", {"replicaCount": 2}, "needs peering.enabled=true"),
    ("typo-key", {"replicas": 2}, "replicas"),
    ("bad-namespace", {"watch": {"namespaces": ["Team_A"]}}, "/watch/namespaces/0"),
    ("duplicate-namespace", {"watch": {"namespaces": ["a", "a"]}}, "/watch/namespaces"),
    ("bad-pull-policy", {"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ("bad-digest", {"image": {"digest": "md5:abc"}}, "/image/digest"),
    (
        "privilege-escalation",
        {"securityContext": {"allowPrivilegeEscalation": True}},
        "/securityContext/allowPrivilegeEscalation",
    ),
    ("root", {"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
    (
        "capabilities-added",
        {"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}},
        "/securityContext/capabilities/add",
    ),
    ("bad-gpu-resource", {"jobs": {"gpu": {"resourceName": "gpu"}}}, "/jobs/gpu/resourceName"),
    ("bad-job-env-name", {"jobs": {"env": {"1BAD": "x"}}}, "invalid propertyName '1BAD'"),
    (
        "bad-toleration-operator",
        {"jobs": {"scheduling": {"tolerations": [{"key": "k", "operator": "In"}]}}},
        "/jobs/scheduling/tolerations/0/operator",
    ),
    (
        "bad-interval",
        {"metrics": {"serviceMonitor": {"enabled": True, "interval": "30"}}},
        "/metrics/serviceMonitor/interval",
    ),
    ("bad-port", {"operator": {"metricsPort": 70000}}, "/operator/metricsPort"),
    (
        "job-sa-cluster-wide",
        {"jobs": {"serviceAccount": {"create": True}}},
        "jobs.serviceAccount.create=true needs watch.namespaces",
    ),
    (
        "pdb-blocks-drains",
        {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": None}},
        "podDisruptionBudget.minAvailable=1 must be below replicaCount=1",
    ),
    (
        "servicemonitor-without-service",
        {"service": {"enabled": False}, "metrics": {"serviceMonitor": {"enabled": True}}},
        "needs service.enabled=true",
    ),
    (
        "registry-url-not-http",
        {"registry": {"mlflow": {"url": "mlflow:5000"}}},
        "/registry/mlflow/url",
    ),
    (
        "registry-url-with-credentials",
        {"registry": {"mlflow": {"url": "http://user:pw@mlflow:5000"}}},
        "/registry/mlflow/url",
    ),
    (
        "registry-token-without-url",
        {"registry": {"mlflow": {"tokenSecret": {"name": "mlflow-token"}}}},
        "registry.mlflow.tokenSecret.name needs registry.mlflow.url",
    ),
    (
        "registry-basic-auth-without-url",
        {"registry": {"mlflow": {"basicAuthSecret": {"name": "mlflow-basic-auth"}}}},
        "registry.mlflow.basicAuthSecret.name needs registry.mlflow.url",
    ),
    (
        "registry-basic-auth-and-token",
        {
            "registry": {
                "mlflow": {
                    "url": "http://mlflow",
                    "tokenSecret": {"name": "mlflow-token"},
                    "basicAuthSecret": {"name": "mlflow-basic-auth"},
                }
            }
        },
        "registry.mlflow.basicAuthSecret.name and registry.mlflow.tokenSecret.name are exclusive",
    ),
    (
        "registry-basic-auth-bad-secret-name",
        {"registry": {"mlflow": {"url": "http://mlflow", "basicAuthSecret": {"name": "Bad_Name"}}}},
        "/registry/mlflow/basicAuthSecret/name",
    ),
    (
        "registry-basic-auth-bad-key",
        {
            "registry": {
                "mlflow": {
                    "url": "http://mlflow",
                    "basicAuthSecret": {"name": "mlflow-basic-auth", "passwordKey": "a/b"},
                }
            }
        },
        "/registry/mlflow/basicAuthSecret/passwordKey",
    ),
    (
        "registry-ca-without-https",
        {"registry": {"mlflow": {"url": "http://mlflow", "caSecret": {"name": "mlflow-ca"}}}},
        "registry.mlflow.caSecret.name needs an https:// registry.mlflow.url",
    ),
    (
        "registry-bad-secret-name",
        {"registry": {"mlflow": {"url": "http://mlflow", "tokenSecret": {"name": "Bad_Name"}}}},
        "/registry/mlflow/tokenSecret/name",
    ),
    (
        "empty-dashboard-folder",
        {"grafana": {"dashboards": {"folder": ""}}},
        "/grafana/dashboards/folder",
    ),
]


@pytest.mark.parametrize(
    "values, message", [c[1:] for c in BAD_VALUES], ids=[c[0] for c in BAD_VALUES]
)
def test_bad_values_are_refused_with_a_clear_message(values, message, tmp_path):
    args = ["template", RELEASE, str(CHART), "-n", RELEASE_NS, *values_args(values, tmp_path)]
    result = helm(*args, check=False)
    assert result.returncode != 0, f"accepted: {values}"
    assert message in result.stderr, result.stderr


# -- CRDs: the generated ones, templated so that upgrades update them --------------------


def test_chart_crd_copy_is_what_make_crds_writes():
    from modelops_api.crdgen import generate_all

    generated = generate_all()
    copies = {p.name: p.read_text() for p in (CHART / "files" / "crds").glob("*.yaml")}
    assert copies.keys() == generated.keys(), "run `make crds`"
    stale = [name for name, text in generated.items() if copies[name] != text]
    assert not stale, (
        f"charts/modelops/files/crds differs from the models: {stale} (run `make crds`)"
    )


def test_rendered_crds_equal_the_generated_ones_plus_chart_metadata(scenario_docs):
    from modelops_api.crdgen import generate_all

    rendered = {
        c["metadata"]["name"]: c
        for c in of_kind(scenario_docs["defaults"], "CustomResourceDefinition")
    }
    for text in generate_all().values():
        want = yaml.safe_load(text)
        if want["kind"] != "CustomResourceDefinition":
            continue  # the ValidatingAdmissionPolicy: see check_policy
        got = rendered[want["metadata"]["name"]]
        assert got["spec"] == want["spec"]
        assert got["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert got["metadata"]["labels"].items() >= want["metadata"]["labels"].items()
        assert got["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_kopf_peering_crds_ship_in_the_crds_directory():
    docs = [yaml.safe_load(p.read_text()) for p in sorted((CHART / "crds").glob("*.yaml"))]
    by_kind = {d["spec"]["names"]["kind"]: d for d in docs}
    assert set(by_kind) == {"ClusterKopfPeering", "KopfPeering"}
    assert by_kind["ClusterKopfPeering"]["spec"]["scope"] == "Cluster"
    assert by_kind["KopfPeering"]["spec"]["scope"] == "Namespaced"
    for d in docs:
        assert d["spec"]["group"] == "kopf.dev"
        (version,) = d["spec"]["versions"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["x-kubernetes-preserve-unknown-fields"] is True
        assert "subresources" not in version, "kopf patches the peers into the main resource"


# -- the operator's environment contract ----------------------------------------------

# Env vars the chart sets that modelops_operator.config does not read yet: the operator
# needs them for the chart's jobs.gpu and jobs.scheduling values. When the operator
# reads one, this test fails until it is removed from here.
PENDING_OPERATOR_SUPPORT: set[str] = set()
NOT_OURS = {"POD_ID", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}  # kopf, Python


def test_every_env_var_the_chart_sets_is_read_by_the_operator(scenario_docs):
    source = (REPO_ROOT / "operator" / "modelops_operator" / "config.py").read_text()
    read = set(re.findall(r'"(MODELOPS_[A-Z_]+)"', source))
    prefixes = set(re.findall(r'"(MODELOPS_[A-Z_]+_)"', source))
    set_by_chart = set()
    for docs in scenario_docs.values():
        set_by_chart |= set(container_env(docs))
    unknown = {
        name
        for name in set_by_chart - NOT_OURS
        if name not in read and not any(name.startswith(p) for p in prefixes)
    }
    assert unknown == PENDING_OPERATOR_SUPPORT, (
        f"the chart sets {sorted(unknown)} that operator/modelops_operator/config.py does not "
        f"read (pending list: {sorted(PENDING_OPERATOR_SUPPORT)})"
    )
    assert "MODELOPS_PEERING" in read and "MODELOPS_NAMESPACES" in read


# -- dashboards and rules: whatever lands in files/ is templated ------------------------


@pytest.fixture
def chart_with_monitoring_files(tmp_path) -> Path:
    """A copy of the chart with one dashboard and one rule file of our own."""
    chart = tmp_path / "modelops"
    shutil.copytree(CHART, chart)
    (chart / "files" / "dashboards").mkdir(parents=True, exist_ok=True)
    (chart / "files" / "rules").mkdir(parents=True, exist_ok=True)
    dashboard = {
        "title": "Test board",
        "panels": [{"type": "stat", "title": "{{ not a template }}"}],
    }
    (chart / "files" / "dashboards" / "Test_Board.json").write_text(json.dumps(dashboard, indent=2))
    (chart / "files" / "rules" / "extra.yaml").write_text(
        "# a comment\ngroups:\n  - name: extra\n    rules:\n      - alert: X\n"
        "        expr: up == 0\n        for: 5m\n        labels: {severity: warning}\n"
    )
    return chart


def test_dashboards_and_rules_come_from_the_files_directory(chart_with_monitoring_files):
    chart = chart_with_monitoring_files
    docs = render(CHART / "ci" / "monitoring-values.yaml", chart=chart)
    cms = {c["metadata"]["name"]: c for c in of_kind(docs, "ConfigMap")}
    cm = cms[f"{RELEASE}-modelops-dashboard-test-board"]
    assert json.loads(cm["data"]["Test_Board.json"])["panels"][0]["title"] == "{{ not a template }}"
    rules = {r["metadata"]["name"]: r for r in of_kind(docs, "PrometheusRule")}
    extra = rules[f"{RELEASE}-modelops-extra"]
    assert extra["spec"]["groups"][0]["rules"][0]["alert"] == "X"
    assert len(cms) == len(list((chart / "files" / "dashboards").glob("*.json")))
    assert len(rules) == len(list((chart / "files" / "rules").glob("*.yaml")))
    off = render(chart=chart)
    assert not of_kind(off, "PrometheusRule") and not of_kind(off, "ConfigMap")


def test_a_rule_file_without_groups_is_refused(chart_with_monitoring_files):
    (chart_with_monitoring_files / "files" / "rules" / "bad.yaml").write_text("rules: []\n")
    args = [
        "template",
        RELEASE,
        str(chart_with_monitoring_files),
        "-f",
        str(CHART / "ci" / "monitoring-values.yaml"),
    ]
    result = helm(*args, check=False)
    assert result.returncode != 0 and "files/rules/bad.yaml" in result.stderr, result.stderr


def test_every_dashboard_and_rule_file_of_the_chart_is_rendered(scenario_docs):
    docs = scenario_docs["monitoring"]
    dashboards = sorted((CHART / "files" / "dashboards").glob("*.json"))
    rules = sorted((CHART / "files" / "rules").glob("*.yaml"))
    assert len(of_kind(docs, "ConfigMap")) == len(dashboards)
    assert len(of_kind(docs, "PrometheusRule")) == len(rules)
    rendered_groups = [g for r in of_kind(docs, "PrometheusRule") for g in r["spec"]["groups"]]
    file_groups = [g for f in rules for g in yaml.safe_load(f.read_text())["groups"]]
    assert sorted(json.dumps(g, sort_keys=True) for g in rendered_groups) == sorted(
        json.dumps(g, sort_keys=True) for g in file_groups
    )
    for f in dashboards:
        json.loads(f.read_text())
