"""Parts shared by the four kinds: model, adapter and data references, compute
resources, scheduling, run policy, output location and Secret references.

Every string and list is bounded: the bounds keep the API server's CEL cost
estimates finite and reject oversize input with a message naming the field.
"""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from modelops_api.base import ApiModel, cel, with_cel
from modelops_api.storage import StorageURI

QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"

Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=32)]
DNSName = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=63)]
ShortText = Annotated[str, Field(max_length=256)]
ModuleName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.*]+$", min_length=1, max_length=128)]


class SecretKeyRef(ApiModel):
    """A key of a Secret in the resource's own namespace. The value is never copied."""

    name: DNSName = Field(description="Name of the Secret, in the resource's namespace.")
    key: Annotated[str, Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)] = Field(
        description="Key inside the Secret."
    )


SecretKeyName = Annotated[str, Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)]


class StorageCredentials(ApiModel):
    """Credentials for s3:// and gs:// URIs: keys of one Secret, passed to the pod by reference.

    Each field names a key inside the Secret; the Job gets its value through
    `valueFrom.secretKeyRef`, never through the ConfigMap. Leave the whole block out to
    use workload identity (IRSA, GKE Workload Identity) or the node's credentials.
    """

    model_config = with_cel(
        cel(
            "has(self.accessKeyId) == has(self.secretAccessKey)",
            "set both accessKeyId and secretAccessKey, or neither",
            ".accessKeyId",
        ),
        cel(
            "has(self.accessKeyId) || has(self.serviceAccountKey)",
            "name at least the S3 key pair (accessKeyId, secretAccessKey) or serviceAccountKey",
        ),
    )

    secret_name: DNSName = Field(description="The Secret, in the resource's namespace.")
    access_key_id: SecretKeyName | None = Field(
        None, description="Key holding the S3 access key ID (env AWS_ACCESS_KEY_ID)."
    )
    secret_access_key: SecretKeyName | None = Field(
        None, description="Key holding the S3 secret access key (env AWS_SECRET_ACCESS_KEY)."
    )
    session_token: SecretKeyName | None = Field(
        None, description="Key holding an S3 session token, for temporary credentials."
    )
    endpoint_url: SecretKeyName | None = Field(
        None, description="Key holding the endpoint URL of an S3-compatible store."
    )
    region: SecretKeyName | None = Field(None, description="Key holding the S3 region.")
    service_account_key: SecretKeyName | None = Field(
        None, description="Key holding a GCS service-account key (JSON), for gs:// URIs."
    )

    @model_validator(mode="after")
    def _pairs(self) -> "StorageCredentials":
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set both accessKeyId and secretAccessKey, or neither")
        if self.access_key_id is None and self.service_account_key is None:
            raise ValueError(
                "name at least the S3 key pair (accessKeyId, secretAccessKey) or serviceAccountKey"
            )
        return self


class ModelRef(ApiModel):
    """A base model: a Hugging Face `save_pretrained` directory or repository."""

    uri: StorageURI = Field(description="Where the model lives (a save_pretrained directory).")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Precision the weights are loaded in."
    )
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none",
        description="Load the frozen base quantized with bitsandbytes (QLoRA-style); needs a GPU.",
    )
    revision: Annotated[str, Field(max_length=128)] | None = Field(
        None, description="Revision for hf:// models (branch, tag or commit)."
    )
    token_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret with a Hugging Face token, for gated models."
    )


class AdapterRef(ApiModel):
    """A PEFT adapter directory (adapter_config.json + weights)."""

    uri: StorageURI = Field(description="Where the adapter lives (PEFT save_pretrained directory).")


class DatasetRef(ApiModel):
    """A dataset in JSON Lines: one object per line."""

    uri: StorageURI = Field(description="A .jsonl file, or a directory of them.")
    text_field: Annotated[str, Field(max_length=64)] = Field(
        "text", description="Field holding the text (language-model data)."
    )
    prompt_field: Annotated[str, Field(max_length=64)] = Field(
        "prompt", description="Field holding the prompt (task data)."
    )
    completion_field: Annotated[str, Field(max_length=64)] = Field(
        "completion", description="Field holding the completion (task data)."
    )
    id_field: Annotated[str, Field(max_length=64)] = Field(
        "id", description="Field holding each sample's stable ID (needed for unlearning)."
    )
    max_samples: int | None = Field(
        None, ge=1, le=100_000_000, description="Use at most this many samples."
    )


class OutputRef(ApiModel):
    """Where the Job writes its result: a model directory plus manifest.json."""

    uri: StorageURI = Field(
        description="Output location; must not already hold a completed result."
    )


class GPUResources(ApiModel):
    """GPUs for the Job pod."""

    count: int = Field(
        1, ge=0, le=16, description="Number of GPUs (nvidia.com/gpu); 0 runs on CPU."
    )
    product: Annotated[str, Field(pattern=LABEL_VALUE_PATTERN, max_length=63)] | None = Field(
        None,
        description="GPU product (e.g. NVIDIA-A100-SXM4-80GB); selects nodes by nvidia.com/gpu.product.",
    )


class Resources(ApiModel):
    """Compute for the Job pod."""

    gpu: GPUResources = Field(default_factory=GPUResources, description="GPU request (per node).")
    nodes: int = Field(
        1,
        ge=1,
        le=64,
        description="Pods (one per node) that run together; 1 is a plain Job, more a JobSet.",
    )
    cpu: Quantity = Field("4", description="CPU request and limit.")
    memory: Quantity = Field("32Gi", description="Memory request and limit.")
    ephemeral_storage: Quantity | None = Field(None, description="Ephemeral storage request.")


class Toleration(ApiModel):
    """A pod toleration (a subset of core/v1 Toleration)."""

    key: Annotated[str, Field(max_length=253)] | None = Field(None, description="Taint key.")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Exists or Equal.")
    value: Annotated[str, Field(max_length=63)] | None = Field(None, description="Taint value.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate; all effects when unset."
    )
    toleration_seconds: int | None = Field(
        None, ge=0, description="For NoExecute: how long the pod stays bound."
    )


class Scheduling(ApiModel):
    """Where and how the Job pod is scheduled."""

    node_selector: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict,
        max_length=32,
        description="Node labels the pod requires.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Taints the pod tolerates."
    )
    priority_class_name: DNSName | None = Field(None, description="PriorityClass of the pod.")
    queue_name: DNSName | None = Field(
        None,
        description="Kueue LocalQueue: the Job is created suspended with the queue label.",
    )


class RunPolicy(ApiModel):
    """Limits for the Job that carries out the request."""

    active_deadline_seconds: int = Field(
        86_400, ge=60, le=30 * 86_400, description="Kill the run after this long."
    )
    backoff_limit: int = Field(
        3, ge=0, le=20, description="Retries for retryable failures (preemption, node loss)."
    )
    ttl_seconds_after_finished: int = Field(
        86_400, ge=0, le=30 * 86_400, description="Delete the finished Job after this long."
    )


class Distribution(ApiModel):
    """How each pod spreads the run over its processes and devices (torchrun, DDP or FSDP2)."""

    processes_per_node: int | None = Field(
        None,
        ge=1,
        le=16,
        description="torchrun processes per pod; unset: one per requested GPU "
        "(1 on CPU). With GPUs it must equal resources.gpu.count.",
    )
    strategy: Literal["auto", "ddp", "fsdp"] = Field(
        "auto",
        description="ddp replicates the model on every process; fsdp shards parameters, "
        "gradients and optimizer state (FSDP2); auto shards when parameters plus "
        "optimizer state would not fit one device.",
    )


class JobTemplate(ApiModel):
    """Settings of the Job pod common to every kind."""

    resources: Resources = Field(default_factory=Resources, description="Compute for the pod.")
    scheduling: Scheduling = Field(default_factory=Scheduling, description="Placement.")
    run_policy: RunPolicy = Field(default_factory=RunPolicy, description="Deadlines and retries.")
    image: Annotated[str, Field(max_length=512)] | None = Field(
        None, description="Override the operator's default jobs image."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed for every random choice.")
    distribution: Distribution = Field(
        default_factory=Distribution,
        description="Processes, GPUs and nodes the run is spread over.",
    )
    storage: StorageCredentials | None = Field(
        None,
        description="Credentials for s3:// and gs:// URIs (a Secret, by reference); "
        "unset: workload identity.",
    )

    @model_validator(mode="after")
    def _processes_match_gpus(self) -> "JobTemplate":
        """The pydantic twin of `PROCESSES_MATCH_GPUS` (the CRD's CEL rule)."""
        gpus, per_node = self.resources.gpu.count, self.distribution.processes_per_node
        if gpus > 0 and per_node is not None and per_node != gpus:
            raise ValueError(
                f"distribution.processesPerNode ({per_node}) must be unset or equal "
                f"resources.gpu.count ({gpus}): one process per GPU"
            )
        return self


# One process per GPU: a pod with GPUs runs exactly gpu.count processes, so no GPU sits
# idle and none is shared. Checked by the API server on every kind (kinds.py) and by
# JobTemplate's validator; a missing gpu.count means the default, 1.
PROCESSES_MATCH_GPUS = cel(
    "!has(self.spec.distribution) || !has(self.spec.distribution.processesPerNode) || "
    "(has(self.spec.resources) && has(self.spec.resources.gpu) && "
    "has(self.spec.resources.gpu.count) ? self.spec.resources.gpu.count : 1) "
    "in [0, self.spec.distribution.processesPerNode]",
    "spec.distribution.processesPerNode must be unset or equal spec.resources.gpu.count "
    "when GPUs are requested (one process per GPU)",
    ".spec.distribution.processesPerNode",
    "FieldValueInvalid",
)


class LoRAConfig(ApiModel):
    """A LoRA adapter's shape."""

    rank: int = Field(16, ge=1, le=1024, description="LoRA rank r.")
    alpha: float = Field(32.0, gt=0, le=4096, description="LoRA alpha; the scale is alpha/r.")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[ModuleName] = Field(
        default_factory=list,
        max_length=64,
        description="Module names to adapt; empty means every linear layer inside the blocks.",
    )
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha/sqrt(r).")


class Optimization(ApiModel):
    """Training loop settings shared by the algorithms."""

    steps: int = Field(200, ge=1, le=10_000_000, description="Optimizer steps.")
    learning_rate: float = Field(5e-4, gt=0, le=1.0, description="Peak learning rate.")
    warmup_ratio: float = Field(0.1, ge=0, le=0.5, description="Share of steps in linear warmup.")
    batch_size: int = Field(8, ge=1, le=4096, description="Sequences per micro-batch.")
    gradient_accumulation: int = Field(1, ge=1, le=1024, description="Micro-batches per step.")
    sequence_length: int = Field(512, ge=8, le=131_072, description="Tokens per sequence.")
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, le=1000, description="Gradient clipping norm.")
    checkpoint_every: int = Field(
        100, ge=1, le=1_000_000, description="Steps between resumable checkpoints."
    )
