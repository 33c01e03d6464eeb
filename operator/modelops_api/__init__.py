"""The modelops API: one pydantic definition of every kind's spec and status.

Everything else — the CRDs, the Helm chart's copy of them, the Job's spec parsing,
the status written back, the API reference — is generated from or parsed with these
models. This package imports no kopf, kubernetes or torch.
"""

from modelops_api.kinds import (
    CRD_KINDS,
    KINDS,
    RELEASE_KINDS,
    CrdKind,
    KindInfo,
    crd_kind,
    kind_info,
)
from modelops_api.lora_transfer import LoRATransfer, LoRATransferSpec
from modelops_api.meta import API_VERSION, GROUP, VERSION
from modelops_api.model_adaptation import ModelAdaptation, ModelAdaptationSpec
from modelops_api.model_rollout import ModelRolloutSpec
from modelops_api.model_version import ModelVersionSpec, ModelVersionStatus
from modelops_api.prune_retrain import PruneRetrain, PruneRetrainSpec
from modelops_api.rollout_status import ModelRolloutStatus
from modelops_api.unlearn_request import UnlearnRequest, UnlearnRequestSpec

__all__ = [
    "API_VERSION",
    "CRD_KINDS",
    "GROUP",
    "KINDS",
    "RELEASE_KINDS",
    "VERSION",
    "CrdKind",
    "KindInfo",
    "LoRATransfer",
    "LoRATransferSpec",
    "ModelAdaptation",
    "ModelAdaptationSpec",
    "ModelRolloutSpec",
    "ModelRolloutStatus",
    "ModelVersionSpec",
    "ModelVersionStatus",
    "PruneRetrain",
    "PruneRetrainSpec",
    "UnlearnRequest",
    "UnlearnRequestSpec",
    "crd_kind",
    "kind_info",
]
