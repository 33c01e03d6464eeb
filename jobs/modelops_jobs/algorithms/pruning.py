"""One-shot pruning of a causal LM's block linears: magnitude, Wanda and SparseGPT.

PERP (arXiv:2312.15230) prunes only the `nn.Linear` layers inside the transformer
blocks (q/k/v/o or out, fc1/fc2 or gate/up/down); embeddings and the LM head stay
dense unless asked. This module finds those layers for OPT/GPT-2-style and
Llama/Qwen/Mistral-style models, scores them, and zeroes the lowest-saliency weights:

- magnitude: |W|;
- Wanda: |W| times the L2 norm of each input feature over the calibration tokens;
- SparseGPT: the layer-wise OBS solver (Frantar & Alistarh, arXiv:2301.00774), which
  picks the mask column block by column block and updates the surviving weights.

Patterns: unstructured, thresholded **per weight matrix** for every criterion (what the
PERP code does; original Wanda ranks per output row), with exactly round(s·numel)
weights removed per matrix; or N:M, keeping N of every M consecutive input weights of
each row. Wanda and SparseGPT calibrate block by block: each block's inputs are the
outputs of the already-pruned blocks before it.

The keep masks are returned explicitly (True = kept): the merge check compares against
them, never against `W == 0`, because fp16 underflow or pre-existing zeros would change
an inferred mask. Simplifications: SparseGPT keeps the weights of dead input columns
(never active in calibration) instead of zeroing them, so the zeros stay exactly the
mask; embeddings and the head, when pruned, use magnitude whatever the criterion.
Quantized (bitsandbytes 4/8-bit) layers are dequantized to score them, or, when the
checkpoint's full-precision weights are supplied, pruned in full precision; either way
the pruned matrix is re-quantized into the layer.

This module holds what is pruned and how one matrix is scored, masked and measured; the
driver that walks the model block by block (calibration, offloading, ranks) is
pruning_driver.py.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import torch
from torch import nn

from modelops_jobs import distributed, offload
from modelops_jobs.errors import PermanentError

ROUTER_NAMES = ("gate", "router")
"""Last name parts of MoE routers: linears inside a block that are not pruned."""


@dataclass
class PrunableLayer:
    """One weight matrix to prune: its qualified name, module, and block index (-1: outside)."""

    name: str
    module: nn.Module
    block_index: int


@dataclass
class PruneConfig:
    """How to prune (the job fills this from `PruningSpec`)."""

    criterion: str = "magnitude"
    sparsity: float = 0.5
    nm: tuple[int, int] | None = None
    sparsegpt_block_size: int = 128
    sparsegpt_damping: float = 0.01
    batch_size: int = 8
    should_stop: Callable[[], bool] = field(default=lambda: False)
    full_precision: dict[str, torch.Tensor] | None = None
    """For a quantized base: the checkpoint's weights by layer name. Pruning reads these
    instead of the dequantized ones and replaces them with the pruned values (the merge
    target), then re-quantizes the layer for retraining."""
    placement: offload.Placement | None = None
    """Set for a model larger than the device: blocks offloaded, one at a time on the
    execution device (None: the model is where it is, all in memory)."""
    world: distributed.World | None = None
    """Set on several processes: every rank calibrates each block, the block's layers are
    pruned round-robin by rank (the solver is the costly part) and each layer's result is
    broadcast from the rank that pruned it (not for a 4/8-bit base: every rank prunes)."""


# -- finding the layers -------------------------------------------------------------


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of transformer blocks (first one as long as config.num_hidden_layers)."""
    n_layers = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and len(module) == n_layers:
            return module
    raise PermanentError(
        f"cannot find the transformer blocks of {type(model).__name__}", "UnsupportedArchitecture"
    )


def is_linear(module: nn.Module) -> bool:
    """nn.Linear (incl. bitsandbytes subclasses) or the transposed GPT-2 Conv1D."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def prunable_layers(model: nn.Module, embeddings_and_head: bool = False) -> list[PrunableLayer]:
    """Every linear inside the blocks (MoE routers excluded), plus embeddings/head if asked."""
    blocks = find_blocks(model)
    layers: list[PrunableLayer] = []
    prefix = next(name for name, mod in model.named_modules() if mod is blocks)
    for index, block in enumerate(blocks):
        for name, module in block.named_modules():
            if is_linear(module) and name.rsplit(".", 1)[-1] not in ROUTER_NAMES:
                layers.append(PrunableLayer(f"{prefix}.{index}.{name}", module, index))
    if embeddings_and_head:
        seen = {id(layer.module.weight) for layer in layers}
        extras = [model.get_input_embeddings(), model.get_output_embeddings()]
        names = {id(mod): name for name, mod in model.named_modules()}
        for module in extras:
            if module is not None and id(module.weight) not in seen:
                seen.add(id(module.weight))
                layers.append(PrunableLayer(names[id(module)], module, -1))
    return layers


def matches_targets(name: str, targets: list[str]) -> bool:
    """Whether a layer name matches LoRA target_modules (last name part or a glob)."""
    last = name.rsplit(".", 1)[-1]
    return any(t == last or fnmatch(name, t) or name.endswith("." + t) for t in targets)


# -- reading and writing weight matrices (out, in) ----------------------------------


def read_matrix(module: nn.Module) -> torch.Tensor:
    """The weight as an (out, in) tensor; dequantized for bitsandbytes 4/8-bit layers."""
    weight = module.weight
    kind = type(weight).__name__
    if kind == "Params4bit":
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(weight.data, weight.quant_state)
    if kind == "Int8Params":
        scale = getattr(weight, "SCB", None)
        if scale is None:
            scale = module.state.SCB
        return weight.data.float() * scale.float().unsqueeze(1) / 127.0
    if type(module).__name__ == "Conv1D":
        return weight.data.t()
    return weight.data


def write_matrix(module: nn.Module, matrix: torch.Tensor) -> None:
    """Store an (out, in) matrix into the layer (re-quantized for bitsandbytes layers)."""
    weight = module.weight
    kind = type(weight).__name__
    if kind in ("Params4bit", "Int8Params"):
        import bitsandbytes as bnb

        device = weight.device
        data = matrix.to(torch.float16).cpu()
        if kind == "Params4bit":
            module.weight = bnb.nn.Params4bit(
                data,
                requires_grad=False,
                quant_type=weight.quant_type,
                blocksize=weight.blocksize,
                compress_statistics=weight.compress_statistics,
            ).to(device)
        else:
            module.weight = bnb.nn.Int8Params(data, requires_grad=False, has_fp16_weights=False).to(
                device
            )
            module.state.SCB = None
        return
    target = weight.data.t() if type(module).__name__ == "Conv1D" else weight.data
    target.copy_(matrix.to(target.dtype))


def param_mask(module: nn.Module, keep: torch.Tensor) -> torch.Tensor:
    """The (out, in) keep mask in the orientation of the module's weight parameter."""
    return keep.t() if type(module).__name__ == "Conv1D" else keep


def checkpoint_weights(model_dir: Path, layers: list[PrunableLayer]) -> dict[str, torch.Tensor]:
    """The checkpoint's full-precision (out, in) weights of the layers to prune (CPU).

    A quantized base is pruned and merged in full precision; layers not found here fall
    back to their dequantized weights.
    """
    from safetensors import safe_open

    wanted = {f"{lay.name}.weight": lay for lay in layers}
    out: dict[str, torch.Tensor] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), "pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                for full, layer in wanted.items():
                    if full == key or full.endswith("." + key) or key.endswith("." + full):
                        tensor = handle.get_tensor(key)
                        module = layer.module
                        shape = (
                            (module.out_features, module.in_features)
                            if hasattr(module, "out_features")
                            else tuple(module.weight.shape)
                        )
                        out[layer.name] = tensor if tuple(tensor.shape) == shape else tensor.t()
    return out


# -- scores and masks ---------------------------------------------------------------


def check_pattern(layers: list[PrunableLayer], nm: tuple[int, int] | None) -> None:
    """PermanentError(PatternMismatch) naming every layer whose input width M does not divide."""
    if nm is None:
        return
    m = nm[1]
    bad = [
        f"{layer.name} (input width {read_matrix(layer.module).shape[1]})"
        for layer in layers
        if read_matrix(layer.module).shape[1] % m != 0
    ]
    if bad:
        raise PermanentError(
            f"pattern {nm[0]}:{m} needs every pruned matrix's input width divisible by {m}; "
            f"not so for {', '.join(bad)}",
            "PatternMismatch",
        )


def select_keep_mask(
    scores: torch.Tensor, sparsity: float, nm: tuple[int, int] | None
) -> torch.Tensor:
    """Keep mask (True = kept) removing exactly round(s·numel) lowest scores, or M−N per group."""
    if nm is None:
        remove = round(sparsity * scores.numel())
        order = torch.argsort(scores.flatten().float(), stable=True)
        keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
        keep[order[:remove]] = False
        return keep.view_as(scores)
    n, m = nm
    rows, cols = scores.shape
    groups = scores.float().reshape(rows, cols // m, m)
    order = torch.argsort(groups, dim=-1, stable=True)
    keep = torch.ones_like(groups, dtype=torch.bool)
    keep.scatter_(-1, order[..., : m - n], False)
    return keep.reshape(rows, cols)


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    return weight.abs().float()


def wanda_scores(weight: torch.Tensor, input_sq_mean: torch.Tensor) -> torch.Tensor:
    """|W_ij| · ‖X_j‖ with ‖X_j‖² the mean of x_j² over calibration tokens."""
    return weight.abs().float() * input_sq_mean.float().sqrt().unsqueeze(0)


# -- measuring ----------------------------------------------------------------------


@dataclass
class MaskReport:
    """Sparsity measured from the weights, and whether the zeros are exactly the masks."""

    sparsity: float
    per_matrix: dict[str, float]
    mask_preserved: bool
    pattern_holds: bool
    mismatched: list[str]


def verify_masks(
    layers: list[PrunableLayer], masks: dict[str, torch.Tensor], nm: tuple[int, int] | None
) -> MaskReport:
    """Measure zeros over the pruned matrices only and compare them with the stored masks."""
    zeros = total = 0
    per_matrix: dict[str, float] = {}
    mismatched: list[str] = []
    pattern_holds = True
    for layer in layers:
        weight = read_matrix(layer.module)
        is_zero = weight == 0
        keep = masks[layer.name].to(is_zero.device)
        zeros += int(is_zero.sum())
        total += is_zero.numel()
        per_matrix[layer.name] = float(is_zero.float().mean())
        if not torch.equal(is_zero, ~keep):
            mismatched.append(layer.name)
        if nm is not None:
            rows, cols = is_zero.shape
            nonzero_per_group = (~is_zero).reshape(rows, cols // nm[1], nm[1]).sum(-1)
            pattern_holds = pattern_holds and bool((nonzero_per_group <= nm[0]).all())
    return MaskReport(
        sparsity=zeros / max(total, 1),
        per_matrix=per_matrix,
        mask_preserved=not mismatched,
        pattern_holds=pattern_holds,
        mismatched=mismatched,
    )
