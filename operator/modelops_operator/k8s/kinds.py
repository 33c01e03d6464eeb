"""Plural and status model of every kind the operator writes: the four job kinds
(`modelops_api.kinds`) and the release kinds, ModelRollout and ModelVersion, which run
no Job and so are not in `KINDS` (the handler registration and the planners iterate
over that list)."""

from pydantic import BaseModel

from modelops_api.kinds import kind_info
from modelops_api.model_rollout import ModelRolloutSpec
from modelops_api.model_version import ModelVersionSpec, ModelVersionStatus
from modelops_api.rollout_status import ModelRolloutStatus

ROLLOUT_KIND = "ModelRollout"
VERSION_KIND = "ModelVersion"
ROLLOUT_PLURAL = "modelrollouts"
VERSION_PLURAL = "modelversions"
RELEASE_KINDS = (ROLLOUT_KIND, VERSION_KIND)

_RELEASE: dict[str, tuple[str, type[BaseModel], type[BaseModel]]] = {
    ROLLOUT_KIND: (ROLLOUT_PLURAL, ModelRolloutSpec, ModelRolloutStatus),
    VERSION_KIND: (VERSION_PLURAL, ModelVersionSpec, ModelVersionStatus),
}


def plural(kind: str) -> str:
    """The resource name in API paths (`modelrollouts`, `pruneretrains`, ...)."""
    return _RELEASE[kind][0] if kind in _RELEASE else kind_info(kind).plural


def status_model(kind: str) -> type[BaseModel]:
    """The pydantic model of the kind's status: every status write goes through it."""
    return _RELEASE[kind][2] if kind in _RELEASE else kind_info(kind).status


def spec_model(kind: str) -> type[BaseModel]:
    """The pydantic model of the kind's spec."""
    return _RELEASE[kind][1] if kind in _RELEASE else kind_info(kind).spec
