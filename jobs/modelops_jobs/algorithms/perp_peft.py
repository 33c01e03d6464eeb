"""PERP's retraining subsets and the merge rules that keep the pruning mask.

After pruning, everything is frozen and only a small subset is retrained
(arXiv:2312.15230): biases, normalisation weights, the LM head through LoRA, and one
low-rank adapter variant on every pruned linear. The variants differ in how the
adapter meets the mask M (True = kept weight), with s = alpha/r:

| variant      | forward                | merge                 | zeros after merge |
|--------------|------------------------|-----------------------|-------------------|
| `lora`       | W x + s·B A x          | W + s·BA              | lost (dense)      |
| `lora_prune` | W x + s·B A x          | W + M⊙(s·BA)          | kept; train ≠ merge |
| `masklora`   | (W + s·M⊙BA) x         | W + s·M⊙BA            | kept              |
| `scalelora`  | (W⊙BA) x, A=B=1/√r     | W⊙BA                  | kept              |

The adapters are this module's own small `nn.Module` (PEFT has no masked variant);
A and B are always fp32, and so is every other trainable parameter (the paper: fp16
trainables lose their updates), with the frozen base left in its dtype. Full masked
fine-tuning, the baseline, trains every weight with the pruned entries' gradients
masked and the mask re-applied after each step. LoRA dropout applies to `lora` and
`lora_prune` only (forced to 0 for the custom variants, as in the PERP code); DoRA is
not supported. The LM head is trained through plain LoRA and merged classically; a
head tied to the input embeddings is untied first, so the merge does not change them.
With a 4/8-bit base (QLoRA style) the adapters train on the quantized weights and merge
into the full-precision pruned weights, written as plain linears: kept weights that the
quantizer rounds to zero would otherwise break the mask check.
"""

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modelops_jobs.algorithms.pruning import PrunableLayer, param_mask, read_matrix

LORA_VARIANTS = ("lora", "lora_prune", "masklora", "scalelora")
MASK_KEEPING_VARIANTS = ("lora_prune", "masklora", "scalelora")


class AdaptedLinear(nn.Module):
    """A frozen (possibly pruned or quantized) linear layer plus one PERP adapter variant."""

    def __init__(
        self,
        base: nn.Module,
        variant: str,
        rank: int,
        alpha: float,
        keep: torch.Tensor | None = None,
        dropout: float = 0.0,
        rslora: bool = False,
    ) -> None:
        super().__init__()
        if variant not in LORA_VARIANTS:
            raise ValueError(f"unknown adapter variant {variant!r}")
        if variant in ("lora_prune", "masklora") and keep is None:
            raise ValueError(f"{variant} needs the pruning mask")
        weight = read_matrix(base)
        out_features, in_features = weight.shape
        self.base = base
        self.variant = variant
        self.scale = (
            1.0 if variant == "scalelora" else alpha / (math.sqrt(rank) if rslora else rank)
        )
        device = weight.device
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=device))
        self.lora_B = nn.Parameter(torch.empty(out_features, rank, device=device))
        if variant == "scalelora":
            nn.init.constant_(self.lora_A, 1 / math.sqrt(rank))
            nn.init.constant_(self.lora_B, 1 / math.sqrt(rank))
        else:
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)
        use_dropout = dropout > 0 and variant in ("lora", "lora_prune")
        self.dropout: nn.Module = nn.Dropout(dropout) if use_dropout else nn.Identity()
        self.register_buffer("keep", None if keep is None else keep.to(device), persistent=False)

    def low_rank(self) -> torch.Tensor:
        """B·A as an (out, in) fp32 matrix."""
        return self.lora_B @ self.lora_A

    def effective_weight(self) -> torch.Tensor:
        """The (out, in) weight this layer computes with (for masklora and scalelora)."""
        weight = read_matrix(self.base)
        if self.variant == "scalelora":
            return weight * self.low_rank()
        return weight + self.scale * self.low_rank() * self.keep

    def merged_weight(self, base_weight: torch.Tensor | None = None) -> torch.Tensor:
        """The variant's merge rule, as an (out, in) fp32 matrix, applied to the base weight
        (or to `base_weight`: the full-precision pruned weight of a quantized base)."""
        weight = (read_matrix(self.base) if base_weight is None else base_weight).float()
        weight = weight.to(self.lora_A.device)
        if self.variant == "lora":
            return weight + self.scale * self.low_rank()
        if self.variant == "scalelora":
            return weight * self.low_rank()
        return weight + (self.scale * self.low_rank()) * self.keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.variant in ("lora", "lora_prune"):
            out = self.base(x)
            low = self.dropout(x).to(self.lora_A.dtype) @ self.lora_A.t() @ self.lora_B.t()
            return out + (self.scale * low).to(out.dtype)
        bias = getattr(self.base, "bias", None)
        weight = self.effective_weight()
        return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))


@dataclass
class RetrainPlan:
    """What was made trainable: adapters by layer name, the head adapter, masks for full FT."""

    adapters: dict[str, AdaptedLinear] = field(default_factory=dict)
    head: AdaptedLinear | None = None
    full_finetune: bool = False
    upcast: dict[str, torch.dtype] = field(default_factory=dict)
    hooks: list[Any] = field(default_factory=list)


def is_norm(module: nn.Module) -> bool:
    """LayerNorm, RMSNorm and friends (matched by class name across architectures)."""
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("Norm")


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def module_name(model: nn.Module, target: nn.Module) -> str:
    return next(name for name, mod in model.named_modules() if mod is target)


def select_subset(
    model: nn.Module,
    subset: list[str],
    layers: list[PrunableLayer],
    masks: dict[str, torch.Tensor],
    lora: Any,
    targets: list[str] | None = None,
    train_head: bool = True,
) -> RetrainPlan:
    """Freeze the model, then enable the subset: biases, norms, head LoRA, one adapter variant.

    `lora` is a LoRAConfig (rank, alpha, dropout, use_rslora); `targets` the layer names
    that get the adapter (default: every pruned linear inside the blocks).
    """
    for param in model.parameters():
        param.requires_grad_(False)
    plan = RetrainPlan()
    norm_params = {id(p) for m in model.modules() if is_norm(m) for p in m.parameters()}
    for name, param in model.named_parameters():
        if "norms" in subset and id(param) in norm_params:
            param.requires_grad_(True)
        if "biases" in subset and name.endswith("bias") and id(param) not in norm_params:
            param.requires_grad_(True)
    variant = next((s for s in subset if s in LORA_VARIANTS), None)
    if variant is not None:
        chosen = set(targets) if targets is not None else None
        for layer in layers:
            if layer.block_index < 0 or (chosen is not None and layer.name not in chosen):
                continue
            adapter = AdaptedLinear(
                layer.module,
                variant,
                lora.rank,
                lora.alpha,
                keep=masks.get(layer.name),
                dropout=lora.dropout,
                rslora=lora.use_rslora,
            )
            set_submodule(model, layer.name, adapter)
            plan.adapters[layer.name] = adapter
    if "head" in subset and train_head:
        head = model.get_output_embeddings()
        name = module_name(model, head)
        head_variant = "masklora" if name in masks else "lora"
        plan.head = AdaptedLinear(
            head, head_variant, lora.rank, lora.alpha, keep=masks.get(name), rslora=lora.use_rslora
        )
        set_submodule(model, name, plan.head)
    plan.upcast = upcast_trainable(model)
    return plan


def enable_full_finetune(
    model: nn.Module, layers: list[PrunableLayer], masks: dict[str, torch.Tensor]
) -> RetrainPlan:
    """Every parameter trainable; pruned entries get zero gradients (the FullFT baseline)."""
    plan = RetrainPlan(full_finetune=True)
    for param in model.parameters():
        param.requires_grad_(True)
    for layer in (lay for lay in layers if lay.name in masks):
        weight = layer.module.weight
        keep = param_mask(layer.module, masks[layer.name]).to(weight.device, weight.dtype)
        plan.hooks.append(layer.module.weight.register_hook(lambda g, k=keep: g * k))
    plan.upcast = upcast_trainable(model)
    return plan


def apply_masks(layers: list[PrunableLayer], masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned entries again (after a full fine-tuning optimizer step)."""
    with torch.no_grad():
        for layer in (lay for lay in layers if lay.name in masks):
            weight = layer.module.weight
            weight.mul_(param_mask(layer.module, masks[layer.name]).to(weight.device, weight.dtype))


def upcast_trainable(model: nn.Module) -> dict[str, torch.dtype]:
    """Trainable half-precision parameters to fp32; returns their original dtypes."""
    original: dict[str, torch.dtype] = {}
    for name, param in model.named_parameters():
        if param.requires_grad and param.dtype in (torch.float16, torch.bfloat16):
            original[name] = param.dtype
            param.data = param.data.float()
    return original


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every trainable parameter, in a stable order."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def merge(
    model: nn.Module,
    plan: RetrainPlan,
    full_precision: dict[str, torch.Tensor] | None = None,
) -> list[str]:
    """Fold every adapter into its base with the variant's rule; restore original dtypes.

    Returns the names of the matrices the merge made dense (plain `lora`). Quantized
    bases are replaced by full-precision linears holding the merged weight, computed from
    `full_precision[name]` (the pruned checkpoint weight) when given, else dequantized.
    """
    for hook in plan.hooks:
        hook.remove()
    densified: list[str] = []
    named = dict(plan.adapters)
    if plan.head is not None:
        named[module_name(model, plan.head)] = plan.head
    for name, adapter in named.items():
        with torch.no_grad():
            weight = adapter.merged_weight((full_precision or {}).get(name))
        base = _untied(model, adapter.base)
        if type(base.weight).__name__ in ("Params4bit", "Int8Params"):
            base = _dense_linear(base, weight)
        else:
            target = base.weight.data.t() if type(base).__name__ == "Conv1D" else base.weight.data
            target.copy_(weight.to(target.dtype))
        set_submodule(model, name, base)
        if adapter.variant == "lora" and adapter is not plan.head:
            densified.append(name)
    for name, param in model.named_parameters():
        if name in plan.upcast:
            param.data = param.data.to(plan.upcast[name])
        param.requires_grad_(False)
    return densified


def _untied(model: nn.Module, base: nn.Module) -> nn.Module:
    """Give an output head that shares the input embedding's weight its own copy."""
    embeddings = model.get_input_embeddings()
    if embeddings is not None and base.weight is embeddings.weight:
        base.weight = nn.Parameter(base.weight.detach().clone(), requires_grad=False)
        model.config.tie_word_embeddings = False
        text_config = model.config.get_text_config()
        if text_config is not model.config:
            text_config.tie_word_embeddings = False
    return base


def _dense_linear(quantized: nn.Module, weight: torch.Tensor) -> nn.Linear:
    """A plain nn.Linear with the merged weight, replacing a bitsandbytes layer."""
    dtype = getattr(quantized, "compute_dtype", None) or torch.bfloat16
    bias = getattr(quantized, "bias", None)
    layer = nn.Linear(
        weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=dtype
    )
    with torch.no_grad():
        layer.weight.copy_(weight.to(dtype))
        if bias is not None:
            layer.bias.copy_(bias.to(dtype))
    return layer


def dequantize_remaining(
    model: nn.Module,
    layers: list[PrunableLayer],
    full_precision: dict[str, torch.Tensor] | None = None,
) -> None:
    """Replace the bitsandbytes layers left after the merge by full-precision linears (from
    `full_precision` when given), and drop the model's quantization config, so that the
    saved output is a plain sparse model."""
    quantized = False
    for layer in layers:
        if type(layer.module.weight).__name__ in ("Params4bit", "Int8Params"):
            source = (full_precision or {}).get(layer.name)
            device = layer.module.weight.device
            weight = read_matrix(layer.module) if source is None else source.to(device)
            set_submodule(model, layer.name, _dense_linear(layer.module, weight))
            quantized = True
    if quantized or getattr(model.config, "quantization_config", None) is not None:
        with contextlib.suppress(AttributeError):
            del model.config.quantization_config
        for attr in ("hf_quantizer", "is_loaded_in_4bit", "is_loaded_in_8bit"):
            with contextlib.suppress(AttributeError):
                setattr(model, attr, None if attr == "hf_quantizer" else False)
