"""The pod-template steps of build/pod.py and the JobSet of build/jobsets.py, field by
field: the launch command and its process layout (one process per GPU), and for
resources.nodes > 1 a JobSet whose replicated Job is the plain Job's template."""

import pytest

from modelops_api.model_adaptation import ModelAdaptationSpec
from modelops_operator.build.jobs import ResourceIdentity, build_job, spec_document
from modelops_operator.build.jobsets import (
    build_jobset,
    build_workload,
    group_failure_policy,
    node_job,
    rendezvous_endpoint,
)
from modelops_operator.build.names import MAX_JOBSET_NAME, job_name, jobset_name
from modelops_operator.build.pod import (
    LAUNCH_COMMAND,
    Layout,
    base_volumes,
    cache_volumes,
    claim_volumes,
    launch_env,
    processes_per_node,
    scheduling,
)
from modelops_operator.config import OperatorConfig

RES = ResourceIdentity("ModelAdaptation", "cpt", "team-a", "uid-7", 4)
CONFIG = OperatorConfig(jobs_image="registry/jobs:1")


def adaptation(**extra):
    body = {
        "strategy": "cpt",
        "model": {"uri": "pvc://m/base"},
        "data": {"uri": "pvc://d/new"},
        "output": {"uri": "pvc://o/out"},
        **extra,
    }
    return ModelAdaptationSpec.model_validate(body)


def env_of(manifest):
    if manifest["kind"] == "JobSet":
        manifest = manifest["spec"]["replicatedJobs"][0]["template"]
    return {
        e["name"]: e.get("value")
        for e in manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    }


@pytest.mark.parametrize(
    ("resources", "distribution", "expected"),
    [
        ({"gpu": {"count": 0}}, {}, 1),
        ({"gpu": {"count": 0}}, {"processesPerNode": 2}, 2),
        ({"gpu": {"count": 4}}, {}, 4),
        ({"gpu": {"count": 8}}, {"processesPerNode": 8}, 8),
        ({}, {}, 1),
    ],
    ids=["cpu", "cpu-two", "four-gpus", "eight-equal", "default-one-gpu"],
)
def test_one_process_per_gpu(resources, distribution, expected):
    spec = adaptation(resources=resources, distribution=distribution)
    assert processes_per_node(spec) == expected
    job = build_job(RES, spec, CONFIG, spec_document(RES, spec), run=1)
    env = env_of(job)
    assert env["MODELOPS_NPROC_PER_NODE"] == str(expected)
    assert env["MODELOPS_NNODES"] == "1"
    assert env["MODELOPS_NODE_RANK"] == "0", "a plain Job pins node rank 0"
    assert "MODELOPS_RDZV_ENDPOINT" not in env


def test_launch_env_of_a_jobset_pod_takes_node_rank_from_the_completion_index():
    env = {e["name"]: e["value"] for e in launch_env(Layout(3, 2, "x-node-0-0.x:29500"))}
    assert env == {
        "MODELOPS_NNODES": "3",
        "MODELOPS_NPROC_PER_NODE": "2",
        "MODELOPS_RDZV_ENDPOINT": "x-node-0-0.x:29500",
    }


def test_container_runs_the_launcher_with_todays_args():
    spec = adaptation()
    job = build_job(RES, spec, CONFIG, spec_document(RES, spec), run=1)
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == LAUNCH_COMMAND == ["python", "-m", "modelops_jobs.launch"]
    assert c["args"] == ["--spec", "/etc/modelops/spec.json", "--metrics-port", "9400"]


def test_s3t_shard_job_keeps_node_rank_zero():
    """JOB_COMPLETION_INDEX of an S3T Indexed Job is a shard, not a node."""
    spec = ModelAdaptationSpec.model_validate(
        {
            "strategy": "s3t",
            "model": {"uri": "pvc://m/b"},
            "data": {"uri": "pvc://d/x"},
            "output": {"uri": "pvc://o/s"},
            "s3t": {"shards": 4},
        }
    )
    job = build_workload(RES, spec, CONFIG, spec_document(RES, spec), 2, 4, None)
    assert job["kind"] == "Job" and job["spec"]["completions"] == 4
    assert env_of(job)["MODELOPS_NODE_RANK"] == "0"


def test_s3t_refuses_several_nodes():
    with pytest.raises(ValueError, match=r"resources\.nodes"):
        ModelAdaptationSpec.model_validate(
            {
                "strategy": "s3t",
                "model": {"uri": "pvc://m/b"},
                "output": {"uri": "pvc://o/s"},
                "resources": {"nodes": 2},
            }
        )


# -- the pod steps on their own ------------------------------------------------------


def test_base_volumes():
    volumes, mounts = base_volumes("cm", "5Gi")
    assert volumes == [
        {"name": "spec", "configMap": {"name": "cm"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "5Gi"}},
    ]
    assert [m["mountPath"] for m in mounts] == ["/etc/modelops", "/tmp"]


def test_claim_volumes_read_only_unless_written():
    doc = {"model": {"uri": "pvc://models/a"}, "output": {"uri": "pvc://out/b"}}
    volumes, mounts = claim_volumes("PruneRetrain", doc, "/mnt/pvc")
    by_claim = {v["persistentVolumeClaim"]["claimName"]: v for v in volumes}
    assert by_claim["models"]["persistentVolumeClaim"]["readOnly"] is True
    assert "readOnly" not in by_claim["out"]["persistentVolumeClaim"]
    assert {m["mountPath"] for m in mounts} == {"/mnt/pvc/models", "/mnt/pvc/out"}


@pytest.mark.parametrize(
    ("hf", "download", "home", "names"),
    [
        (None, None, "/tmp/hf", []),
        ("hf", None, "/cache/hf", ["hf-cache"]),
        ("hf", "dl", "/cache/hf", ["hf-cache", "download-cache"]),
    ],
    ids=["none", "hf", "both"],
)
def test_cache_volumes(hf, download, home, names):
    config = OperatorConfig(hf_cache_claim=hf, download_cache_claim=download)
    (volumes, _), env = cache_volumes(config)
    assert [v["name"] for v in volumes] == names
    assert env[0] == {"name": "HF_HOME", "value": home}


def test_scheduling_sets_only_what_is_set():
    assert scheduling(adaptation(resources={"gpu": {"count": 0}}), CONFIG) == {}
    spec = adaptation(
        resources={"gpu": {"count": 1, "product": "A100"}},
        scheduling={"priorityClassName": "high"},
    )
    assert scheduling(spec, CONFIG) == {
        "nodeSelector": {"nvidia.com/gpu.product": "A100"},
        "priorityClassName": "high",
    }


# -- JobSet ------------------------------------------------------------------------


def jobset(**extra):
    spec = adaptation(
        resources={"nodes": 2, "gpu": {"count": 0}}, distribution={"processesPerNode": 2}, **extra
    )
    return spec, build_workload(RES, spec, CONFIG, spec_document(RES, spec, {"number": 1}), 1)


def test_one_node_is_a_plain_job_exactly_as_before():
    spec = adaptation()
    doc = spec_document(RES, spec)
    assert build_workload(RES, spec, CONFIG, doc, 1) == build_job(RES, spec, CONFIG, doc, 1)


def test_jobset_identity_owner_and_labels():
    _, js = jobset()
    assert js["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and js["kind"] == "JobSet"
    meta = js["metadata"]
    assert meta["name"] == "cpt-adapt-1" == job_name("ModelAdaptation", "cpt", 1)
    assert meta["namespace"] == "team-a"
    assert meta["ownerReferences"][0]["uid"] == "uid-7"
    assert meta["ownerReferences"][0]["controller"] is True
    assert meta["labels"]["modelops.dev/run"] == "1"
    assert meta["annotations"]["modelops.dev/generation"] == "4"


def test_jobset_replicated_job_is_the_plain_job_indexed_over_nodes():
    spec, js = jobset()
    rjobs = js["spec"]["replicatedJobs"]
    assert [(r["name"], r["replicas"]) for r in rjobs] == [("node", 1)]
    job = rjobs[0]["template"]["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == 2
    assert job["backoffLimit"] == 0, "the JobSet restarts the group, not the Job"
    assert "backoffLimitPerIndex" not in job and "ttlSecondsAfterFinished" not in job
    assert job["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [3]
    assert job["podFailurePolicy"]["rules"][0]["action"] == "FailJob"
    env = env_of(js)
    assert env["MODELOPS_NNODES"] == "2" and env["MODELOPS_NPROC_PER_NODE"] == "2"
    assert env["MODELOPS_RDZV_ENDPOINT"] == "cpt-adapt-1-node-0-0.cpt-adapt-1:29500"
    assert "MODELOPS_NODE_RANK" not in env, "launch reads JOB_COMPLETION_INDEX"
    plain = build_job(RES, spec, CONFIG, spec_document(RES, spec, {"number": 1}), 1)
    assert job["template"]["spec"]["volumes"] == plain["spec"]["template"]["spec"]["volumes"]
    assert job["template"]["metadata"]["labels"] == plain["spec"]["template"]["metadata"]["labels"]


def test_jobset_network_coordinator_success_failure_ttl():
    _, js = jobset(runPolicy={"backoffLimit": 5, "ttlSecondsAfterFinished": 120})
    spec = js["spec"]
    assert spec["network"] == {"enableDNSHostnames": True, "publishNotReadyAddresses": True}
    assert spec["coordinator"] == {"replicatedJob": "node", "jobIndex": 0, "podIndex": 0}
    assert spec["successPolicy"] == {"operator": "All"}
    assert spec["ttlSecondsAfterFinished"] == 120
    assert spec["failurePolicy"] == {
        "maxRestarts": 5,
        "restartStrategy": "Recreate",
        "rules": [
            {
                "name": "PermanentFailure",
                "action": "FailJobSet",
                "onJobFailureReasons": ["PodFailurePolicy"],
            },
            {"name": "RestartGroup", "action": "RestartJobSet"},
        ],
    }
    assert "suspend" not in spec


def test_kueue_queue_suspends_the_jobset_not_its_jobs():
    _, js = jobset(scheduling={"queueName": "team-q"})
    assert js["spec"]["suspend"] is True
    assert js["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-q"
    assert "suspend" not in js["spec"]["replicatedJobs"][0]["template"]["spec"]


def test_node_job_does_not_mutate_the_plain_job():
    spec = adaptation(resources={"nodes": 2, "gpu": {"count": 0}})
    job = build_job(RES, spec, CONFIG, spec_document(RES, spec), 1, 2, 2)
    before = repr(job)
    node_job(job)
    assert repr(job) == before
    assert group_failure_policy(spec)["maxRestarts"] == 3


@pytest.mark.parametrize("length", [1, 30, 47, 63, 253])
def test_jobset_and_pod_names_fit_for_long_resource_names(length):
    name = "a" * length
    res = ResourceIdentity("ModelAdaptation", name, "ns", "u", 1)
    spec = adaptation(resources={"nodes": 64, "gpu": {"count": 0}})
    js = build_jobset(res, spec, CONFIG, spec_document(res, spec), run=100)
    js_name = js["metadata"]["name"]
    assert js_name == jobset_name("ModelAdaptation", name, 100)
    assert len(js_name) <= MAX_JOBSET_NAME
    longest_pod = f"{js_name}-node-0-63-abcde"
    assert len(longest_pod) <= 63
    host = rendezvous_endpoint(js_name).split(":")[0]
    assert all(len(label) <= 63 for label in host.split("."))
