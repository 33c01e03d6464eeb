"""Multi-node runs end to end: a ModelAdaptation (cpt) with resources.nodes=2 and two
processes per node runs through the operator, the real JobSet controller (built from
source, out-of-cluster, webhooks on 127.0.0.1) and the stand-in kubelet.

How the harness stands in for a cluster: every pod is a local process (the stand-in
kubelet, `parallel` >= nodes so both node pods run at once); there is no cluster DNS,
so the stand-in kubelet rewrites each JobSet pod's MODELOPS_RDZV_ENDPOINT
(`<jobset>-node-0-0.<jobset>:29500`) to 127.0.0.1 and a free port chosen per JobSet
attempt, and gives each pod JOB_COMPLETION_INDEX (its node rank) from the pod's
completion-index annotation. Both "nodes" share the pvc root, as a ReadWriteMany claim
(or object storage) is shared in a real cluster, so the checkpoint written before a
failure is there for the restarted group.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from tests.conftest import poll_until
from tests.jobset_harness import running_jobset_controller

from modelops_api.meta import GROUP, VERSION
from modelops_jobs.data import write_jsonl
from modelops_jobs.testing import tiny
from modelops_operator.build.jobsets import JOBSET_GROUP, JOBSET_PLURAL, JOBSET_VERSION

STEPS = 40


@pytest.fixture(scope="module")
def jobset_controller(
    control_plane: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    with running_jobset_controller(control_plane, tmp_path_factory.mktemp("jobset")) as c:
        yield c


@pytest.fixture
def pvc_root(tmp_path: Path) -> Path:
    """pvc://m/base (a tiny OPT model), pvc://d/*.jsonl (D0 replay, D1 new data)."""
    root = tmp_path / "pvc"
    d0 = tiny.grammar_corpus(400, seed=0, variant=0)
    d1 = tiny.grammar_corpus(400, seed=1, variant=1)
    for name, texts in (("d0", d0), ("d1", d1)):
        write_jsonl(root / "d" / f"{name}.jsonl", [{"text": t} for t in texts[:360]])
        write_jsonl(root / "d" / f"{name}_val.jsonl", [{"text": t} for t in texts[360:]])
    tokenizer = tiny.train_tokenizer(d0, vocab_size=128)
    model = tiny.tiny_causal_lm(len(tokenizer), hidden=32, layers=2, heads=2, ffn=64, seed=0)
    tiny.save_model_dir(model, tokenizer, root / "m" / "base")
    return root


def adaptation(name: str, steps: int = STEPS, backoff: int = 3) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelAdaptation",
        "metadata": {"name": name},
        "spec": {
            "strategy": "cpt",
            "model": {"uri": "pvc://m/base"},
            "data": {"uri": "pvc://d/d1.jsonl"},
            "output": {"uri": f"pvc://m/{name}"},
            "resources": {"nodes": 2, "gpu": {"count": 0}, "cpu": "1", "memory": "2Gi"},
            "distribution": {"processesPerNode": 2, "strategy": "ddp"},
            "runPolicy": {"backoffLimit": backoff},
            "optimization": {
                "steps": steps,
                "learningRate": 3e-3,
                "batchSize": 4,
                "gradientAccumulation": 2,
                "sequenceLength": 16,
                "checkpointEvery": 4,
            },
            "cpt": {
                "replayData": {"uri": "pvc://d/d0.jsonl"},
                "validationOld": {"uri": "pvc://d/d0_val.jsonl"},
                "validationNew": {"uri": "pvc://d/d1_val.jsonl"},
                "replayRatio": 0.25,
            },
        },
    }


@pytest.fixture
def operator_with_jobsets(control_plane: Any, crds_installed: Any, namespace: str) -> Iterator[Any]:
    from modelops_operator.config import OperatorConfig
    from modelops_operator.main import run_in_thread

    cfg = OperatorConfig(
        namespaces=(namespace,), resync_seconds=2.0, jobs_image="modelops-jobs:test", jobsets=True
    )
    with run_in_thread(cfg, str(control_plane.kubeconfig), tick=0.2) as running:
        yield running


def first_run(api: client.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, "modeladaptations", name
    )
    runs = (obj.get("status") or {}).get("runs") or []
    return runs[0] if runs and runs[0].get("phase") in ("Succeeded", "Failed") else None


def the_jobset(api: client.ApiClient, ns: str) -> dict[str, Any]:
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(
        JOBSET_GROUP, JOBSET_VERSION, ns, JOBSET_PLURAL
    )["items"]
    assert len(items) == 1, [i["metadata"]["name"] for i in items]
    return items[0]


def logs(pods: Path) -> str:
    return "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(pods.rglob("log.txt")))


def create(api: client.ApiClient, ns: str, doc: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, ns, "modeladaptations", doc
    )


@pytest.mark.timeout(300)
def test_without_the_jobset_crd_a_condition_and_nothing_created(
    kube_api, operator_with_jobsets, namespace
):
    """First in this module: the JobSet controller fixture installs the CRD (and removes
    it when it stops, so an earlier module's controller leaves none behind)."""
    ext = client.ApiextensionsV1Api(kube_api)

    def crd_absent() -> bool | None:
        names = [c.metadata.name for c in ext.list_custom_resource_definition().items]
        return None if "jobsets.jobset.x-k8s.io" in names else True

    poll_until("no JobSet CRD", crd_absent, timeout=60)
    name = f"no-crd-{uuid.uuid4().hex[:4]}"
    create(kube_api, namespace, adaptation(name))

    def condition() -> dict[str, Any] | None:
        obj = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "modeladaptations", name
        )
        conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        c = conds.get("JobCreated")
        return c if c and c.get("reason") == "JobSetNotInstalled" else None

    cond = poll_until("JobCreated=False reason JobSetNotInstalled", condition, timeout=120)
    assert cond["status"] == "False" and "not installed" in cond["message"]
    assert client.BatchV1Api(kube_api).list_namespaced_job(namespace).items == []
    assert (
        client.CoreV1Api(kube_api)
        .list_namespaced_config_map(
            namespace, label_selector="app.kubernetes.io/managed-by=modelops"
        )
        .items
        == []
    )


@pytest.mark.timeout(900)
def test_cpt_on_two_nodes_by_two_processes_succeeds(
    kube_api, jobset_controller, operator_with_jobsets, namespace, pvc_root, tmp_path
):
    from modelops_devcluster.pod_runner import LocalPodRunner

    pods = tmp_path / "pods"
    with LocalPodRunner(kube_api, pods, namespace, parallel=2, pvc_root=pvc_root) as runner:
        create(kube_api, namespace, adaptation("two-by-two"))
        run = poll_until(
            "run 1 finished", lambda: first_run(kube_api, namespace, "two-by-two"), timeout=600
        )
    assert run["phase"] == "Succeeded", (run, logs(pods))
    js = the_jobset(kube_api, namespace)
    assert js["spec"]["replicatedJobs"][0]["template"]["spec"]["completions"] == 2
    assert [c["type"] for c in js["status"]["conditions"] if c["status"] == "True"] == ["Completed"]
    assert sorted(code for _, code in runner.finished) == [0, 0], "two node pods, both exit 0"
    artifact = run["results"]["artifact"]["uri"]
    local = pvc_root / artifact.removeprefix("pvc://")
    manifest = json.loads((local / "manifest.json").read_text())
    assert manifest["distributed"]["worldSize"] == 4, "2 nodes x 2 processes"
    assert len(manifest["distributed"]["ranks"]) == 4


def worker_of(pods: Path, node: int) -> int | None:
    """The pid of a torch worker of node `node`'s pod (RANK set, LOCAL_RANK 0), once
    the run has written its first checkpoint."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = dict(
                kv.split(b"=", 1)
                for kv in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                if b"=" in kv
            )
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if not cwd.startswith(str(pods)):
            continue
        if env.get(b"JOB_COMPLETION_INDEX") == str(node).encode() and b"LOCAL_RANK" in env:
            return int(pid)
    return None


@pytest.mark.timeout(900)
def test_a_killed_rank_restarts_the_group_which_resumes(
    kube_api, jobset_controller, operator_with_jobsets, namespace, pvc_root, tmp_path
):
    from modelops_devcluster.pod_runner import LocalPodRunner

    pods = tmp_path / "pods"
    name = "killed"
    versions = pvc_root / "m" / name  # run 1 publishes run-0001; checkpoints beside it

    def saved_step() -> int | None:
        """The step of a complete sharded checkpoint (every rank's state file written
        after it), once it is at least 12."""
        for ckpt in versions.glob(".*.checkpoint"):
            steps = sorted(int(d.name.split("-")[1]) for d in ckpt.glob("dcp/step-*"))
            if len(list(ckpt.glob("state*.pt"))) == 4 and steps and steps[0] >= 12:
                return steps[0]
        return None

    with LocalPodRunner(kube_api, pods, namespace, parallel=3, pvc_root=pvc_root):
        create(kube_api, namespace, adaptation(name, steps=160))
        step = poll_until("a complete checkpoint at step >= 12", saved_step, timeout=600)
        pid = poll_until("a worker of node 1", lambda: worker_of(pods, 1), timeout=60)
        first_attempt = {p.name for p in (pods / namespace).iterdir()}
        os.kill(pid, signal.SIGKILL)
        run = poll_until(
            "run 1 finished", lambda: first_run(kube_api, namespace, name), timeout=800
        )
    assert run["phase"] == "Succeeded", (run, logs(pods))
    js = the_jobset(kube_api, namespace)
    assert js["status"]["restarts"] == 1, "the whole group restarted once"
    second = [p for p in (pods / namespace).iterdir() if p.name not in first_attempt]
    assert len(second) == 2, "both nodes ran again"
    lines = [
        json.loads(line)
        for p in second
        for line in (p / "log.txt").read_text().splitlines()
        if line.startswith('{"') and '"step"' in line
    ]
    reported = [d["step"] for d in lines if d.get("phase") == "train"]
    assert reported and min(reported) > step, (
        f"the restarted group resumed after step {step}, reported {sorted(reported)[:5]}"
    )


@pytest.mark.timeout(600)
def test_exit_code_3_on_one_node_fails_the_jobset_at_once(
    kube_api, jobset_controller, operator_with_jobsets, namespace, pvc_root, tmp_path
):
    """Node 1's pod exits 3 (what launch.py makes of any rank exiting 3, see
    tests/jobs/test_distributed_launch.py); the JobSet fails without a restart
    although 3 retries are allowed."""
    from modelops_devcluster.pod_runner import LocalPodRunner

    class Node1ExitsPermanently(LocalPodRunner):
        def run_pod(self, pod: Any) -> int:
            index = (pod.metadata.annotations or {}).get("batch.kubernetes.io/job-completion-index")
            if index == "1":
                from modelops_devcluster.pod_runner import finish_pod

                finish_pod(
                    self.core,
                    pod,
                    3,
                    json.dumps({"ok": False, "reason": "Injected", "message": "rank exits 3"}),
                )
                return 3
            return super().run_pod(pod)

    pods = tmp_path / "pods"
    with Node1ExitsPermanently(kube_api, pods, namespace, parallel=2, pvc_root=pvc_root):
        create(kube_api, namespace, adaptation("permanent", steps=400))
        run = poll_until(
            "run 1 finished", lambda: first_run(kube_api, namespace, "permanent"), timeout=400
        )
    assert run["phase"] == "Failed", run
    assert "rank exits 3" in (run.get("message") or ""), "the failing pod's message first"
    js = the_jobset(kube_api, namespace)
    assert js["status"].get("restarts", 0) == 0, "exit code 3 is not retried"
    failed = [c for c in js["status"]["conditions"] if c["type"] == "Failed"]
    assert failed and failed[0]["status"] == "True"
