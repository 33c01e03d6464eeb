"""The modelops API: one pydantic definition of every kind's spec and status.

Everything else — the CRDs, the Helm chart's copy of them, the Job's spec parsing,
the status written back, the API reference — is generated from or parsed with these
models. This package imports no kopf, kubernetes or torch.
"""

from modelops_api.kinds import KINDS, KindInfo, kind_info
from modelops_api.lora_transfer import LoRATransfer, LoRATransferSpec
from modelops_api.meta import API_VERSION, GROUP, VERSION
from modelops_api.model_adaptation import ModelAdaptation, ModelAdaptationSpec
from modelops_api.prune_retrain import PruneRetrain, PruneRetrainSpec
from modelops_api.unlearn_request import UnlearnRequest, UnlearnRequestSpec

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "KindInfo",
    "LoRATransfer",
    "LoRATransferSpec",
    "ModelAdaptation",
    "ModelAdaptationSpec",
    "PruneRetrain",
    "PruneRetrainSpec",
    "UnlearnRequest",
    "UnlearnRequestSpec",
    "kind_info",
]
