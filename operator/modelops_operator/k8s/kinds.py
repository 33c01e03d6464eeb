"""Plural and models of every kind the operator writes: the four job kinds and the
release kinds, ModelRollout and ModelVersion (`modelops_api.kinds.crd_kind` finds
both; `kind_info`, which the planners use, finds the job kinds only)."""

from pydantic import BaseModel

from modelops_api.kinds import crd_kind

ROLLOUT_KIND = "ModelRollout"
VERSION_KIND = "ModelVersion"
ROLLOUT_PLURAL = crd_kind(ROLLOUT_KIND).plural
VERSION_PLURAL = crd_kind(VERSION_KIND).plural


def plural(kind: str) -> str:
    """The resource name in API paths (`modelrollouts`, `pruneretrains`, ...)."""
    return crd_kind(kind).plural


def status_model(kind: str) -> type[BaseModel]:
    """The pydantic model of the kind's status: every status write goes through it."""
    return crd_kind(kind).status


def spec_model(kind: str) -> type[BaseModel]:
    """The pydantic model of the kind's spec."""
    return crd_kind(kind).spec
