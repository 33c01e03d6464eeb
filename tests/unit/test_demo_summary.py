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
