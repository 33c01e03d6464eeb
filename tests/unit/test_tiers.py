"""The test tiers keep apart (issue 16): the root conftest needs no cluster and imports
no kubernetes client; the cluster fixtures load only for runs that include the
integration or e2e tier."""

import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import needs_cluster

ROOT = Path(__file__).resolve().parents[2]
CASES = [
    ("no-paths-means-testpaths", [], ROOT, True),
    ("unit-tier", ["tests/unit"], ROOT, False),
    ("one-unit-file", ["tests/unit/test_plan.py::test_x", "-x"], ROOT, False),
    ("jobs-and-chart", ["tests/jobs", "tests/chart"], ROOT, False),
    ("integration-file", ["tests/integration/test_operator.py"], ROOT, True),
    ("e2e-node", ["tests/e2e/test_helm.py::test_install"], ROOT, True),
    ("all-of-tests", ["tests"], ROOT, True),
    ("from-inside-tests", ["e2e"], ROOT / "tests", True),
    ("make-test", ["tests/unit", "tests/chart", "tests/jobs", "tests/integration"], ROOT, True),
]


@pytest.mark.parametrize(
    ("args", "where", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_cluster_fixtures_load_only_for_the_cluster_tiers(args, where, expected):
    assert needs_cluster(args, where) is expected


def test_the_root_conftest_imports_no_kubernetes_client():
    code = "import sys, tests.conftest; assert 'kubernetes' not in sys.modules, 'imported'"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
