"""The demo's summary: each resource's TOOK is its own time (creation to the Succeeded
or Failed condition), not the time the demo waited for the whole batch."""

import pytest

from modelops_devcluster.demo import took


def resource(conditions: list[dict[str, str]]) -> dict:
    return {
        "metadata": {"creationTimestamp": "2026-12-02T02:50:40Z"},
        "status": {"conditions": conditions},
    }


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        (
            [{"type": "Succeeded", "status": "True", "lastTransitionTime": "2026-12-02T02:50:54Z"}],
            "14s",
        ),
        (
            [{"type": "Failed", "status": "True", "lastTransitionTime": "2026-12-02T02:51:20Z"}],
            "40s",
        ),
        (
            [
                {
                    "type": "Succeeded",
                    "status": "False",
                    "lastTransitionTime": "2026-12-02T02:51:20Z",
                }
            ],
            "41s",
        ),
        ([], "41s"),
    ],
    ids=["succeeded", "failed", "not-finished-falls-back", "no-conditions-falls-back"],
)
def test_took_is_the_resources_own_time(conditions, expected):
    assert took(resource(conditions), waited=41.2) == expected


# -- the release loop's summary (issue 15) ------------------------------------------------

SERVING = "file:///tmp/modelops/out/tiny-opt-wanda-50"
CANDIDATE = "file:///tmp/modelops/out/tiny-opt-cpt/run-0001"


def release(outcome="Promoted", passed=True, states=None, message="", candidate=8.123456):
    from modelops_devcluster.demo_release import ReleaseRun

    check = {
        "metric": "perplexity",
        "comparison": "LessOrEqual",
        "candidate": candidate,
        "baseline": 38.3,
        "limit": 40.215,
        "passed": passed,
    }
    return ReleaseRun(
        rollout={
            "metadata": {"creationTimestamp": "2026-12-02T04:10:00Z"},
            "status": {
                "previousVersion": "tiny-opt-wanda-50-0123456789",
                "history": [
                    {
                        "version": "tiny-opt-cpt-3f9c2a71d0",
                        "outcome": outcome,
                        "time": "2026-12-02T04:10:21Z",
                        "message": message,
                    }
                ],
            },
        },
        version={
            "metadata": {
                "name": "tiny-opt-cpt-3f9c2a71d0",
                "creationTimestamp": "2026-12-02T04:10:00Z",
            },
            "spec": {
                "uri": CANDIDATE,
                "source": {"kind": "ModelAdaptation", "name": "tiny-opt-cpt", "run": 1},
            },
            "status": {
                "evaluation": {
                    "passed": passed,
                    "baselineVersion": "tiny-opt-wanda-50-0123456789",
                    "checks": [check],
                }
            },
        },
        states=states
        if states is not None
        else [
            (SERVING, None),
            (CANDIDATE, 10),
            (CANDIDATE, 50),
            (CANDIDATE, None),
        ],
    )


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (
            release(),
            [
                "  version  tiny-opt-cpt-3f9c2a71d0, made by ModelAdaptation tiny-opt-cpt run 1,"
                f" at {CANDIDATE}",
                "  gate     passed against tiny-opt-wanda-50-0123456789: perplexity 8.123 <="
                " limit 40.22 (serving version: 38.3)",
                "  canary   10% -> 50% -> 100% (the default)",
                "  result   Promoted: tiny-opt now serves tiny-opt-cpt-3f9c2a71d0 (before:"
                " tiny-opt-wanda-50-0123456789), 21s after the ModelRollout was created",
            ],
        ),
        (
            release(
                "GateFailed",
                passed=False,
                states=[(SERVING, None)],
                message="worse",
                candidate=41.5,
            ),
            [
                "  version  tiny-opt-cpt-3f9c2a71d0, made by ModelAdaptation tiny-opt-cpt run 1,"
                f" at {CANDIDATE}",
                "  gate     FAILED against tiny-opt-wanda-50-0123456789: perplexity 41.5 <="
                " limit 40.22 (serving version: 38.3) FAILED",
                "  canary   no traffic",
                "  result   GateFailed: worse, 21s after the ModelRollout was created",
            ],
        ),
        (
            release(
                "RolledBack",
                states=[(SERVING, None), (CANDIDATE, 10), (SERVING, None)],
                message="0.5 > max 0.05",
            ),
            [
                "  version  tiny-opt-cpt-3f9c2a71d0, made by ModelAdaptation tiny-opt-cpt run 1,"
                f" at {CANDIDATE}",
                "  gate     passed against tiny-opt-wanda-50-0123456789: perplexity 8.123 <="
                " limit 40.22 (serving version: 38.3)",
                "  canary   10%",
                "  result   RolledBack: 0.5 > max 0.05, 21s after the ModelRollout was created",
            ],
        ),
    ],
    ids=["promoted", "gate-failed", "rolled-back"],
)
def test_the_release_summary_says_what_happened_with_numbers(run, expected):
    from modelops_devcluster.demo_release import release_summary

    lines = release_summary(run)
    assert lines[0].startswith("Release loop: ModelRollout tiny-opt -> InferenceService tiny-opt")
    assert "stand-in" in lines[0]
    assert lines[1:] == expected


def test_a_release_that_did_not_run_says_why():
    from modelops_devcluster.demo_release import ReleaseRun, release_summary

    assert release_summary(ReleaseRun(error="no ModelVersion recorded")) == [
        "Release loop FAILED: no ModelVersion recorded"
    ]


def test_the_demo_rollout_is_a_valid_model_rollout():
    from modelops_api.model_rollout import ModelRolloutSpec
    from modelops_devcluster.demo_release import model_rollout

    spec = ModelRolloutSpec.model_validate(model_rollout()["spec"])
    assert spec.canary.steps == [10, 50, 100] and spec.gate.evaluation is not None


def test_the_demo_candidate_is_a_new_valid_adaptation_with_its_own_output():
    from modelops_api.model_adaptation import ModelAdaptationSpec
    from modelops_devcluster.demo_release import CANDIDATE_SOURCE, model_rollout, next_adaptation

    doc = next_adaptation()
    spec = ModelAdaptationSpec.model_validate(doc["spec"])
    assert doc["metadata"]["name"] == CANDIDATE_SOURCE
    assert str(spec.output.uri).endswith(CANDIDATE_SOURCE) and spec.trigger.type == "manual"
    sources = [c["name"] for c in model_rollout()["spec"]["candidates"]]
    assert sources == ["tiny-opt-wanda-50", CANDIDATE_SOURCE]
