"""PruneRetrain: a sparser model that keeps its quality (PERP, arXiv:2312.15230).

Prune the linear layers inside the transformer blocks, then retrain a tiny subset of
parameters (biases, norms, the head through LoRA, LoRA / MaskLoRA / ScaleLoRA) and
merge the adapters back with a rule that keeps the pruning mask exactly.
"""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from modelops_api.base import ApiModel, cel, with_cel
from modelops_api.common import (
    DatasetRef,
    JobTemplate,
    LoRAConfig,
    ModelRef,
    Optimization,
    OutputRef,
)
from modelops_api.kind import Resource
from modelops_api.status import BaseStatus

PATTERN_REGEX = r"^(unstructured|[1-9][0-9]?:[1-9][0-9]?)$"


def pattern_nm(pattern: str) -> tuple[int, int] | None:
    """(N, M) for an N:M pattern (N kept of every M), None for unstructured."""
    if pattern == "unstructured":
        return None
    n, m = (int(x) for x in pattern.split(":"))
    return n, m


class PruningSpec(ApiModel):
    """How to prune."""

    model_config = with_cel(
        cel(
            "self.pattern == 'unstructured' || "
            "int(self.pattern.split(':')[0]) < int(self.pattern.split(':')[1])",
            "pattern N:M needs N < M",
            ".pattern",
        ),
        cel(
            "self.pattern == 'unstructured' || ("
            "self.sparsity - (1.0 - double(int(self.pattern.split(':')[0])) / "
            "double(int(self.pattern.split(':')[1]))) < 0.000001 && "
            "(1.0 - double(int(self.pattern.split(':')[0])) / "
            "double(int(self.pattern.split(':')[1]))) - self.sparsity < 0.000001)",
            "sparsity must equal 1 - N/M for an N:M pattern (0.5 for 2:4 and 4:8)",
            ".sparsity",
        ),
    )

    criterion: Literal["magnitude", "wanda", "sparsegpt"] = Field(
        "magnitude", description="Saliency: |W|, |W|·‖x‖ (Wanda), or the OBS solver (SparseGPT)."
    )
    sparsity: float = Field(
        0.5, gt=0, lt=1, description="Share of weights removed from each pruned matrix."
    )
    pattern: Annotated[str, Field(pattern=PATTERN_REGEX, max_length=16)] = Field(
        "unstructured",
        description="'unstructured' (per matrix) or N:M (keep N of every M input weights per row).",
    )
    calibration_samples: int = Field(
        128, ge=1, le=4096, description="Calibration windows for Wanda and SparseGPT."
    )
    calibration_data: DatasetRef | None = Field(
        None, description="Calibration text; defaults to the retraining data."
    )
    sparsegpt_damping: float = Field(0.01, gt=0, le=1, description="SparseGPT percdamp.")
    sparsegpt_block_size: int = Field(128, ge=1, le=4096, description="SparseGPT block size.")
    prune_embeddings_and_head: bool = Field(
        False, description="Also prune embeddings and the LM head (off in PERP)."
    )

    @model_validator(mode="after")
    def _nm_matches_sparsity(self) -> "PruningSpec":
        nm = pattern_nm(self.pattern)
        if nm is not None:
            n, m = nm
            if n >= m:
                raise ValueError(f"pattern {self.pattern!r}: N must be smaller than M")
            if abs(self.sparsity - (1 - n / m)) > 1e-6:
                raise ValueError(
                    f"sparsity must equal 1 - N/M = {1 - n / m:g} for pattern {self.pattern!r}"
                )
        return self


RetrainSubset = Literal["biases", "norms", "head", "lora", "masklora", "scalelora", "lora_prune"]


DEFAULT_SUBSET: tuple[RetrainSubset, ...] = ("biases", "norms", "head", "masklora")


class RetrainSpec(ApiModel):
    """What to retrain after pruning, and how."""

    model_config = with_cel(
        cel(
            "self.subset.filter(s, s in ['lora', 'masklora', 'scalelora', 'lora_prune']).size() <= 1",
            "subset: choose at most one of lora, lora_prune, masklora, scalelora",
            ".subset",
        ),
    )

    subset: list[RetrainSubset] = Field(
        default_factory=lambda: list(DEFAULT_SUBSET),
        max_length=7,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description=(
            "Parameters to retrain, combinable: biases, norms, head (LoRA on the LM head), and at "
            "most one of lora (dense after merge), lora_prune, masklora, scalelora."
        ),
    )
    full_finetune: bool = Field(
        False, description="Baseline: retrain every weight with the mask kept (ignores subset)."
    )
    lora: LoRAConfig = Field(default_factory=LoRAConfig, description="Adapter shape.")
    data: DatasetRef | None = Field(None, description="Retraining text (JSON Lines).")
    optimization: Optimization = Field(default_factory=Optimization, description="Training loop.")
    mode: Literal["causal_lm", "reconstruction"] = Field(
        "causal_lm",
        description="causal_lm: next-token loss on data; reconstruction: per-block MSE to the dense block.",
    )

    @model_validator(mode="after")
    def _one_lora_variant(self) -> "RetrainSpec":
        variants = [s for s in self.subset if s in ("lora", "masklora", "scalelora", "lora_prune")]
        if len(variants) > 1:
            raise ValueError(f"subset: choose at most one LoRA variant, got {variants}")
        if len(set(self.subset)) != len(self.subset):
            raise ValueError("subset: entries must be unique")
        return self


class EvaluationSpec(ApiModel):
    """Held-out data to measure perplexity on."""

    data: DatasetRef | None = Field(None, description="Held-out text; skipped when unset.")
    max_windows: int = Field(64, ge=1, le=100_000, description="Non-overlapping windows scored.")


class PruneRetrainSpec(JobTemplate):
    """Prune a model and retrain a small parameter subset, keeping the sparsity."""

    model: ModelRef = Field(description="The dense causal LM to prune.")
    pruning: PruningSpec = Field(default_factory=PruningSpec, description="How to prune.")
    retrain: RetrainSpec = Field(default_factory=RetrainSpec, description="How to retrain.")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, description="Evaluation.")
    output: OutputRef = Field(description="Where the pruned, retrained model is written.")


class PruneRetrainResults(ApiModel):
    """Numbers a PruneRetrain run reports."""

    sparsity: float | None = Field(None, description="Measured sparsity over pruned matrices.")
    mask_preserved: bool | None = Field(None, description="Zeros after merge equal the mask.")
    dense_after_merge: bool | None = Field(None, description="Plain LoRA made the model dense.")
    dense_perplexity: float | None = Field(None, description="Perplexity before pruning.")
    pruned_perplexity: float | None = Field(None, description="Perplexity after pruning.")
    retrained_perplexity: float | None = Field(None, description="Perplexity after retraining.")
    gap_recovered: float | None = Field(
        None,
        le=1.0,
        description=(
            "(pruned - retrained)/(pruned - dense), at most 1 (see betterThanDense); absent"
            " when pruning did not raise perplexity."
        ),
    )
    better_than_dense: bool | None = Field(
        None,
        description=(
            "The retrained model has a lower perplexity than the dense one: the dense model"
            " was undertrained for this data, so gapRecovered (1.0) understates it."
        ),
    )
    trainable_share: float | None = Field(None, description="Trainable share of parameters.")
    retrain_seconds: float | None = Field(None, description="Wall time of retraining.")
    peak_memory_bytes: int | None = Field(None, description="Peak memory (GPU, else RSS).")


class PruneRetrainStatus(BaseStatus):
    """Status of a PruneRetrain."""

    results: PruneRetrainResults | None = Field(None, description="Measured results.")


class PruneRetrain(Resource[PruneRetrainSpec, PruneRetrainStatus]):
    """A whole PruneRetrain resource (apiVersion, kind, metadata, spec, status)."""
