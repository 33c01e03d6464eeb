"""LoRATransfer: this adapter, on a new base model (Trans-LoRA, arXiv:2405.17258).

Synthetic prompts from a generator prompted with a few seed examples, filtered by the
discriminator stored with the source adapter, labelled by the source base with its
adapter, and distilled into a fresh adapter on the target base.
"""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from modelops_api.base import ApiModel, cel, with_cel
from modelops_api.common import (
    AdapterRef,
    DatasetRef,
    JobTemplate,
    LoRAConfig,
    ModelRef,
    Optimization,
    OutputRef,
)
from modelops_api.kind import Resource
from modelops_api.status import BaseStatus


class SeedExample(ApiModel):
    """A seed example: a prompt and its completion, scrubbed of private detail."""

    prompt: Annotated[str, Field(min_length=1, max_length=8192)] = Field(description="Task prompt.")
    completion: Annotated[str, Field(max_length=8192)] = Field("", description="Its completion.")


class SynthesisSpec(ApiModel):
    """How many synthetic prompts to make and keep."""

    model_config = with_cel(
        cel("self.samples <= self.maxAttempts", "samples must not exceed maxAttempts", ".samples"),
    )

    samples: int = Field(250, ge=1, le=1_000_000, description="Synthetic prompts to keep.")
    max_attempts: int = Field(5000, ge=1, le=10_000_000, description="Candidates to try at most.")
    seeds_per_prompt: int = Field(
        3, ge=1, le=32, description="Seeds shown to the generator each time."
    )
    max_new_tokens: int = Field(64, ge=1, le=8192, description="Tokens generated per candidate.")
    temperature: float = Field(1.0, gt=0, le=5, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling.")
    generator: ModelRef | None = Field(
        None, description="Generator model; the target base by default."
    )
    filter: Literal["discriminator", "none"] = Field(
        "discriminator", description="Keep candidates the discriminator accepts, or keep all."
    )
    min_acceptance_rate: float = Field(
        0.01, ge=0, le=1, description="Fail early when acceptance falls below this after 200 tries."
    )

    @model_validator(mode="after")
    def _budget(self) -> "SynthesisSpec":
        if self.samples > self.max_attempts:
            raise ValueError("samples must not exceed maxAttempts")
        return self


class DistillationSpec(ApiModel):
    """How the target adapter learns the teacher's completions."""

    mode: Literal["sequence", "token"] = Field(
        "sequence",
        description="sequence: cross-entropy on the teacher's text; token: KL on logits (same tokenizer only).",
    )
    teacher_max_new_tokens: int = Field(64, ge=1, le=8192, description="Teacher completion length.")
    teacher_batch_size: int = Field(16, ge=1, le=1024, description="Prompts labelled per batch.")


class LoRATransferSpec(JobTemplate):
    """Move a LoRA adapter from its base model to a new one without the task data."""

    source_model: ModelRef = Field(description="The adapter's base model.")
    source_adapter: AdapterRef = Field(
        description="The adapter; a transfer-ready one holds discriminator/ and seeds.jsonl."
    )
    target_model: ModelRef = Field(description="The new base model.")
    seeds: list[SeedExample] = Field(
        default_factory=list,
        max_length=64,
        description="Extra seed examples (added to stored ones).",
    )
    synthesis: SynthesisSpec = Field(default_factory=SynthesisSpec, description="Synthetic data.")
    distillation: DistillationSpec = Field(
        default_factory=DistillationSpec, description="Distillation."
    )
    target_adapter: LoRAConfig = Field(
        default_factory=lambda: LoRAConfig(rank=8, alpha=16.0),
        description="Shape of the new adapter (LoRA or DoRA).",
    )
    optimization: Optimization = Field(
        default_factory=lambda: Optimization(learning_rate=2e-4, warmup_ratio=0.0),
        description="Training loop of the new adapter.",
    )
    evaluation_data: DatasetRef | None = Field(
        None, description="Held-out task data (prompt, completion) to score all three models on."
    )
    output: OutputRef = Field(description="Where the transferred adapter is written.")


class LoRATransferResults(ApiModel):
    """Numbers a LoRATransfer reports."""

    kept_samples: int | None = Field(None, description="Synthetic prompts kept.")
    attempts: int | None = Field(None, description="Candidates generated.")
    acceptance_rate: float | None = Field(None, description="Kept / attempts.")
    filtered: bool | None = Field(None, description="Whether the discriminator filtered.")
    source_score: float | None = Field(None, description="Source base + source adapter.")
    target_base_score: float | None = Field(None, description="Target base alone.")
    transferred_score: float | None = Field(None, description="Target base + transferred adapter.")
    metric: Annotated[str, Field(max_length=32)] | None = Field(None, description="Score metric.")


class LoRATransferStatus(BaseStatus):
    """Status of a LoRATransfer."""

    results: LoRATransferResults | None = Field(None, description="Measured results.")


class LoRATransfer(Resource[LoRATransferSpec, LoRATransferStatus]):
    """A whole LoRATransfer resource (apiVersion, kind, metadata, spec, status)."""
