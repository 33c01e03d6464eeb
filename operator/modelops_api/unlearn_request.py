"""UnlearnRequest: forget these training samples.

`s3t` is exact: the adapter slices that ever saw a sample are deactivated in a new
model version (S3T, arXiv:2406.16257), and a deletion receipt records it. `ssd` is
approximate: Selective Synaptic Dampening (arXiv:2308.07707) of the parameters most
important to the forget set.
"""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, model_validator

from modelops_api.base import ApiModel, cel, with_cel
from modelops_api.common import DatasetRef, JobTemplate, ModelRef, ModuleName, OutputRef
from modelops_api.kind import Resource
from modelops_api.status import BaseStatus
from modelops_api.storage import S3T_NEEDS_FILESYSTEM, StorageURI

SampleID = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$", min_length=1, max_length=128)
]
MAX_INLINE_IDS = 1000
SCHEMA_MAX_IDS = 100 * MAX_INLINE_IDS


class SSDSpec(ApiModel):
    """Selective Synaptic Dampening settings."""

    alpha: float = Field(
        10.0, gt=0, le=1e6, description="Select parameters with I_forget > alpha·I_full."
    )
    lambda_: float = Field(
        1.0, gt=0, le=1e6, alias="lambda", description="Dampen by min(lambda·I_full/I_forget, 1)."
    )
    layers: list[ModuleName] = Field(
        default_factory=list,
        max_length=256,
        description="Parameter name patterns to restrict SSD to (large models); empty means all.",
    )
    importance_uri: StorageURI | None = Field(
        None,
        description="Stored full-data importance; defaults to <model>/ssd_importance.safetensors.",
    )
    forget_data: DatasetRef | None = Field(
        None, description="The training data holding the samples to forget (matched by ID)."
    )


class UnlearnEvaluation(ApiModel):
    """Data to measure forgetting against."""

    retain_data: DatasetRef | None = Field(None, description="Retained training data sample.")
    test_data: DatasetRef | None = Field(None, description="Held-out test data.")


class UnlearnRequestSpec(JobTemplate):
    """Forget training samples, exactly (S3T) or approximately (SSD)."""

    model_config = with_cel(
        cel(
            "has(self.sampleIds) != has(self.samplesUri)",
            "set exactly one of sampleIds and samplesUri",
            ".sampleIds",
        ),
        cel(
            f"!has(self.sampleIds) || size(self.sampleIds) <= {MAX_INLINE_IDS}",
            f"sampleIds holds at most {MAX_INLINE_IDS} IDs inline; for a larger forget set"
            " put one ID per line in a file and set samplesUri (e.g. pvc://claim/ids.txt)",
            ".sampleIds",
        ),
        cel(
            "self.method != 'ssd' || !self.retrainAffected",
            "retrainAffected applies to method s3t only",
            ".retrainAffected",
        ),
        cel(
            "self.method != 's3t' || self.model.uri.startsWith('pvc://')"
            " || self.model.uri.startsWith('file://')",
            S3T_NEEDS_FILESYSTEM,
            ".model.uri",
        ),
    )

    method: Literal["s3t", "ssd"] = Field("s3t", description="s3t (exact) or ssd (approximate).")
    model: ModelRef = Field(
        description="s3t: the S3T model store; ssd: the model (with its stored importance)."
    )
    sample_ids: list[SampleID] | None = Field(
        None,
        max_length=MAX_INLINE_IDS,
        # The API server checks maxItems before CEL rules and then skips them: a schema
        # bound far above the inline limit lets the rule above answer, naming samplesUri
        # (a longer list hits the API server's request size limit first).
        json_schema_extra={"maxItems": SCHEMA_MAX_IDS},
        description=(
            f"IDs of the samples to forget (the dataset's idField), at most {MAX_INLINE_IDS};"
            " use samplesUri for more."
        ),
    )
    samples_uri: StorageURI | None = Field(
        None, description="A file with one sample ID per line (or JSON Lines with 'id')."
    )
    max_samples: int = Field(
        10_000, ge=1, le=1_000_000, description="Refuse forget sets larger than this."
    )
    retrain_affected: bool = Field(
        False, description="s3t: retrain the deactivated orders afterwards to restore capacity."
    )
    ssd: SSDSpec = Field(default_factory=SSDSpec, description="SSD settings (method ssd).")
    evaluation: UnlearnEvaluation = Field(
        default_factory=UnlearnEvaluation, description="Data to measure forgetting on."
    )
    output: OutputRef | None = Field(
        None, description="ssd: where the dampened model goes (s3t writes a new store version)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> "UnlearnRequestSpec":
        if (self.sample_ids is None) == (self.samples_uri is None):
            raise ValueError("set exactly one of sampleIds and samplesUri")
        if self.sample_ids is not None and len(self.sample_ids) > self.max_samples:
            raise ValueError(
                f"sampleIds: {len(self.sample_ids)} IDs exceed maxSamples={self.max_samples}"
            )
        if self.method == "ssd" and self.retrain_affected:
            raise ValueError("retrainAffected applies to method s3t only")
        if self.method == "s3t" and not self.model.uri.startswith(("pvc://", "file://")):
            raise ValueError(f"model.uri: {S3T_NEEDS_FILESYSTEM}")
        return self


class Deactivation(ApiModel):
    """One slice deactivated in one shard."""

    shard: int = Field(ge=0, description="Shard index.")
    slice: int = Field(ge=0, description="Slice index.")
    orders_truncated: int = Field(0, ge=0, description="Slice orders cut back in this shard.")


class DeletionReceipt(ApiModel):
    """Proof of what a deletion did (the full list of hashed IDs is stored with the model)."""

    method: Literal["s3t", "ssd"] = Field(description="Method used.")
    exact: bool = Field(description="True for exact unlearning (s3t).")
    samples: int = Field(ge=0, description="Samples forgotten.")
    hashed_ids_digest: Annotated[str, Field(max_length=80)] = Field(
        description="sha256 over the sorted hashed IDs."
    )
    deactivated: list[Deactivation] = Field(
        default_factory=list, max_length=256, description="Slices deactivated."
    )
    digest_before: Annotated[str, Field(max_length=80)] | None = Field(
        None, description="Model digest before."
    )
    digest_after: Annotated[str, Field(max_length=80)] | None = Field(
        None, description="Model digest after."
    )
    version_before: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="Version before."
    )
    version_after: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="Version after."
    )
    time: datetime | None = Field(None, description="When the deletion took effect.")
    receipt_uri: Annotated[str, Field(max_length=1024)] | None = Field(
        None, description="Full receipt."
    )
    serving: bool | None = Field(
        None,
        description=(
            "s3t: whether the model still serves after this deletion. False when every"
            " shard is out of service: no request can be answered until the store is"
            " retrained (retrainAffected, or a new ModelAdaptation run)."
        ),
    )


class UnlearnResults(ApiModel):
    """Numbers an UnlearnRequest reports."""

    deleted_samples: int | None = Field(None, description="Samples forgotten.")
    unknown_ids: int | None = Field(None, description="Requested IDs not in the training index.")
    shards_out_of_service: list[int] | None = Field(None, description="Shards with no live order.")
    shards: int | None = Field(None, ge=0, description="s3t: shards in the store.")
    shards_in_service: int | None = Field(
        None, ge=0, description="s3t: shards with a live order; 0 means the model serves nothing."
    )
    forget_accuracy: float | None = Field(None, description="Accuracy on the forget set.")
    forget_loss: float | None = Field(None, description="Loss on the forget set.")
    retain_accuracy: float | None = Field(None, description="Accuracy on retained data.")
    test_accuracy: float | None = Field(None, description="Accuracy on test data.")
    membership_inference: float | None = Field(
        None, description="Loss-threshold membership score on the forget set (0.5 = chance)."
    )
    dampened_parameters: int | None = Field(None, description="SSD: parameters dampened.")
    seconds: float | None = Field(None, description="Wall time of the deletion.")


class DeletionEffective(ApiModel):
    """When the deletion reached serving: the unlearned version (or a later version made
    from it) became the InferenceService's default."""

    time: datetime = Field(description="When that version became the default.")
    inference_service: Annotated[str, Field(max_length=253)] = Field(
        description="The InferenceService that served the model the samples were deleted from."
    )
    version: Annotated[str, Field(max_length=253)] = Field(
        description="The ModelVersion it serves now (this request's, or one made from it)."
    )


class UnlearnRequestStatus(BaseStatus):
    """Status of an UnlearnRequest."""

    results: UnlearnResults | None = Field(None, description="Measured results.")
    receipt: DeletionReceipt | None = Field(None, description="The deletion receipt.")
    deletion_pending_since: datetime | None = Field(
        None,
        description="Set while an InferenceService still serves the model the samples were"
        " deleted from: since when (the request's success).",
    )
    deletion_effective: DeletionEffective | None = Field(
        None, description="When and where the deletion became effective in serving."
    )


class UnlearnRequest(Resource[UnlearnRequestSpec, UnlearnRequestStatus]):
    """A whole UnlearnRequest resource (apiVersion, kind, metadata, spec, status)."""
