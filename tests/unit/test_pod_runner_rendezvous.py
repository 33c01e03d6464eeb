"""The stand-in kubelet resolves a JobSet pod's rendezvous host to 127.0.0.1 (no cluster
DNS here: every pod is a local process), one free port per JobSet attempt, and gives
each pod its node rank through JOB_COMPLETION_INDEX from the completion-index
annotation; a plain Job's pod keeps its env."""

from pathlib import Path

from kubernetes import client

from modelops_devcluster.pod_runner import LocalPodRunner

ENDPOINT = "big-adapt-1-node-0-0.big-adapt-1:29500"


def pod(index: str, attempt: str = "0", uid: str = "js-1", jobset: bool = True) -> client.V1Pod:
    labels = {"app.kubernetes.io/managed-by": "modelops"}
    env = [client.V1EnvVar(name="MODELOPS_NNODES", value="2")]
    if jobset:
        labels |= {
            "jobset.sigs.k8s.io/jobset-name": "big-adapt-1",
            "jobset.sigs.k8s.io/jobset-uid": uid,
            "jobset.sigs.k8s.io/restart-attempt": attempt,
        }
        env.append(client.V1EnvVar(name="MODELOPS_RDZV_ENDPOINT", value=ENDPOINT))
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=f"p-{index}-{attempt}",
            namespace="ns",
            labels=labels,
            annotations={"batch.kubernetes.io/job-completion-index": index},
        ),
        spec=client.V1PodSpec(containers=[client.V1Container(name="job", env=env)]),
    )


def env_of(runner: LocalPodRunner, p: client.V1Pod) -> dict[str, str]:
    return runner._env(p, p.spec.containers[0], Path("/tmp/termination-log"))


def test_rendezvous_is_local_and_shared_by_the_pods_of_one_attempt(tmp_path):
    runner = LocalPodRunner(client.ApiClient(), tmp_path)
    node0, node1 = env_of(runner, pod("0")), env_of(runner, pod("1"))
    host, port = node0["MODELOPS_RDZV_ENDPOINT"].split(":")
    assert host == "127.0.0.1" and 1024 < int(port) < 65536
    assert node1["MODELOPS_RDZV_ENDPOINT"] == node0["MODELOPS_RDZV_ENDPOINT"]
    assert (node0["JOB_COMPLETION_INDEX"], node1["JOB_COMPLETION_INDEX"]) == ("0", "1")
    restarted = env_of(runner, pod("0", attempt="1"))
    assert restarted["MODELOPS_RDZV_ENDPOINT"] != node0["MODELOPS_RDZV_ENDPOINT"], (
        "a restarted group never joins the killed attempt's store"
    )
    other = env_of(runner, pod("0", uid="js-2"))
    assert other["MODELOPS_RDZV_ENDPOINT"] != node0["MODELOPS_RDZV_ENDPOINT"]


def test_plain_job_pod_keeps_its_env(tmp_path):
    env = env_of(LocalPodRunner(client.ApiClient(), tmp_path), pod("0", jobset=False))
    assert "MODELOPS_RDZV_ENDPOINT" not in env and env["MODELOPS_NNODES"] == "2"
