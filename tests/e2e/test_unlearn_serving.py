"""Unlearning made effective in serving (issue 15): an UnlearnRequest on the served
model ends with the InferenceService on the unlearned version, and the request's
status says when the deletion became effective.

Real parts: the local control plane, the operator in-process, the stand-in kubelet
running the Jobs' own commands (CPT, then SSD on its output), KServe's own
InferenceService CRD. No KServe controller runs here: `operator/modelops_devcluster/kserve_standin.py` writes
the status KServe would write.

The rollout requires approval, and its deletion deadline (`unlearning.maxDelay`) is
1s: the unlearned version waits for approval past it, so the request first shows the
deletion overdue (condition reason DeletionOverdue, a Warning Event), and then, once
approved and promoted, effective. The UnlearnRequest is not among the rollout's
candidates: a version unlearned from the serving one is taken regardless.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from tests.e2e import release as rel
from tests.integration.kube_helpers import condition, create, get

from modelops_api.model_rollout import ANNOTATION_APPROVE

ISVC = "forgetful-bot"
ADAPT = "forgetful-cpt"
FORGET = ["g3", "g17"]


@pytest.fixture(scope="module")
def fixtures_root() -> Path:
    from modelops_jobs.testing.fixtures import build_example_fixtures

    build_example_fixtures(Path(rel.FIXTURES))
    return Path(rel.FIXTURES)


def store_importance(model_uri: str, path: Path) -> None:
    """SSD's full-data importance of the served model, as its training would store it
    (the CPT run does not): over the training texts, naming the data the IDs are in."""
    from modelops_jobs.algorithms import ssd
    from modelops_jobs.modelio import load_causal_lm, load_tokenizer

    local = Path(model_uri.removeprefix("file://"))
    model, tok = load_causal_lm(local), load_tokenizer(local)
    texts = _texts(Path(rel.TRAIN.removeprefix("file://")))[:200]
    meta = {"data_uri": rel.TRAIN, "id_field": "id", "text_field": "text"}
    ssd.store_lm_importance(model, tok, texts, path, 8, 64, meta)


def _texts(path: Path) -> list[str]:
    import json

    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def unlearn(model_uri: str, importance: Path, out: Path) -> dict:
    return {
        "kind": "UnlearnRequest",
        "metadata": {"name": "forget-two"},
        "spec": {
            "method": "ssd",
            "model": {"uri": model_uri},
            "sampleIds": FORGET,
            "ssd": {
                "alpha": 5.0,
                "importanceUri": f"file://{importance}",
                "forgetData": {"uri": rel.TRAIN},
            },
            "output": {"uri": f"file://{out}"},
            "resources": {"gpu": {"count": 0}, "cpu": "1", "memory": "2Gi"},
        },
    }


def approve(api, ns, version):
    rel.patch_release(
        api, ns, "ModelRollout", ISVC, {"metadata": {"annotations": {ANNOTATION_APPROVE: version}}}
    )


def unlearn_status(api, ns):
    return get(api, ns, "UnlearnRequest", "forget-two").get("status", {})


def deletion_condition(api, ns, **expect):
    status = unlearn_status(api, ns)
    cond = condition({"status": status}, "DeletionEffective") or {}
    return status if cond and all(cond.get(k) == v for k, v in expect.items()) else None


@pytest.mark.timeout(600)
def test_an_unlearned_version_replaces_the_served_one_and_the_deletion_is_effective(
    control_plane,
    kube_api,
    crds_installed,
    kserve_crd,
    namespace,
    fixtures_root,
    wait_for,
    tmp_path,
):
    from modelops_devcluster.kserve_standin import KServeStandIn
    from modelops_devcluster.pod_runner import LocalPodRunner
    from modelops_operator.config import OperatorConfig
    from modelops_operator.main import run_in_thread

    api, ns = kube_api, namespace
    config = OperatorConfig(namespaces=(ns,), resync_seconds=2.0, jobs_image="modelops-jobs:test")
    with (
        KServeStandIn(api, ns),
        run_in_thread(config, str(control_plane.kubeconfig), tick=0.2),
        LocalPodRunner(api, tmp_path / "pods", ns, parallel=2),
    ):
        rel.create_isvc(api, ns, ISVC, rel.BASE_URI)
        wait_for("KServe ready", lambda: rel.isvc_reported(api, ns, ISVC))
        rel.create_release(
            api,
            ns,
            "ModelRollout",
            ISVC,
            rel.rollout(
                ISVC,
                [{"kind": "ModelAdaptation", "name": ADAPT}],
                None,
                requireApproval=True,
                unlearning={"maxDelay": "1s"},
            ),
        )
        manual = {"type": "manual"}
        spec = rel.cpt_spec(f"file://{tmp_path / 'adapted'}", manual)
        create(api, ns, {"kind": "ModelAdaptation", "metadata": {"name": ADAPT}, "spec": spec})

        # The served version: run 1, approved, promoted.
        v1 = wait_for("run 1's version", lambda: rel.run_version(api, ns, ADAPT, 1), timeout=240)
        awaiting = wait_for(
            "v1 awaiting approval",
            lambda: (
                s
                if (s := rel.rollout_status(api, ns, ISVC)).get("phase") == "AwaitingApproval"
                else None
            ),
            timeout=120,
        )
        assert awaiting["current"]["version"] == v1
        message = condition({"status": awaiting}, "AwaitingApproval")["message"]
        assert f"modelops.dev/approve={v1}" in message, message
        approve(api, ns, v1)
        wait_for("v1 promoted", lambda: rel.history_has(api, ns, ISVC, v1, "Promoted"), timeout=60)
        uri1 = rel.get_release(api, ns, "ModelVersion", v1)["spec"]["uri"]
        wait_for("v1 the default", lambda: rel.isvc_at(api, ns, ISVC, (uri1, None)))

        # Forget two training samples of the served model.
        importance = tmp_path / "importance.safetensors"
        store_importance(uri1, importance)
        create(api, ns, unlearn(uri1, importance, tmp_path / "forgotten"))
        done = wait_for(
            "unlearned",
            lambda: s if (s := unlearn_status(api, ns)).get("phase") == "Succeeded" else None,
            timeout=240,
        )
        v2 = wait_for("its version", lambda: unlearn_status(api, ns).get("modelVersion"))
        version2 = rel.get_release(api, ns, "ModelVersion", v2)
        assert version2["spec"]["deletion"]["deletedSamples"] == len(FORGET)
        assert {"role": "base", "uri": uri1, "version": v1}.items() <= next(
            p for p in version2["spec"]["parents"] if p["role"] == "base"
        ).items(), "its parent is the served version"
        assert done["results"]["deletedSamples"] == len(FORGET)

        # Taken although not a candidate; held for approval past maxDelay: overdue.
        current = wait_for(
            "the unlearned version taken",
            lambda: (
                c
                if (c := rel.rollout_status(api, ns, ISVC).get("current") or {}).get("version")
                == v2
                else None
            ),
        )
        assert current["unlearning"] is True
        overdue = wait_for(
            "deletion overdue",
            lambda: deletion_condition(api, ns, status="False", reason="DeletionOverdue"),
        )
        assert ISVC in condition({"status": overdue}, "DeletionEffective")["message"]
        assert overdue.get("deletionPendingSince")
        warnings = [
            e
            for e in rel.events_of(api, ns, "forget-two", "UnlearnRequest")
            if e.reason == "DeletionOverdue"
        ]
        assert len(warnings) == 1 and warnings[0].type == "Warning"
        assert rel.predictor(rel.get_isvc(api, ns, ISVC)) == (uri1, None), "not yet"

        # Approved: canaried, promoted, effective.
        approve(api, ns, v2)
        wait_for("v2 promoted", lambda: rel.history_has(api, ns, ISVC, v2, "Promoted"), timeout=60)
        uri2 = f"file://{tmp_path / 'forgotten'}"
        wait_for("v2 the default", lambda: rel.isvc_at(api, ns, ISVC, (uri2, None)))
        effective = wait_for(
            "deletion effective", lambda: deletion_condition(api, ns, status="True")
        )
        record = effective["deletionEffective"]
        assert record["inferenceService"] == ISVC and record["version"] == v2
        serving_since = rel.rollout_status(api, ns, ISVC)["servingSince"]
        when = datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
        assert when == datetime.fromisoformat(serving_since.replace("Z", "+00:00"))
        assert when >= datetime.fromisoformat(done["completionTime"].replace("Z", "+00:00"))
