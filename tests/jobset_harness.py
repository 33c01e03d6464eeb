"""The real JobSet controller for a test session (modelops_devcluster/jobset.py). A
missing binary (`make jobset`) fails the test that asks for it, never skips it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


@contextmanager
def running_jobset_controller(control_plane: Any, workdir: Path) -> Iterator[Any]:
    from modelops_devcluster import ControlPlane
    from modelops_devcluster.jobset import JobSetController, JobSetError

    if not isinstance(control_plane, ControlPlane):
        pytest.fail("the JobSet harness needs the local control plane (its CA serves the webhooks)")
    try:
        controller = JobSetController(control_plane.kubeconfig, control_plane.pki_dir, workdir)
    except JobSetError as exc:
        pytest.fail(str(exc))
    with controller:
        yield controller
