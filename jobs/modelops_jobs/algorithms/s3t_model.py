"""The S3T model: a frozen base, LoRA on every block handled as L layer groups, a task head.

Why a module of its own: it is the one place that knows the shape of an S3T model —
which blocks form which group (group 0 = the top blocks), which LoRA tensors a step
checkpoint holds, and how a prefix of step states is loaded for serving or for the next
step. Training (s3t_train.py) and serving (s3t.py) both build on it.

Simplification: DoRA is not supported (its magnitude vector is not a B = 0 identity).
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

StepState = dict[str, torch.Tensor]


def find_blocks(lm: nn.Module) -> tuple[str, int]:
    """(qualified name, length) of the transformer's list of blocks."""
    layers = int(lm.config.num_hidden_layers)
    for name, module in lm.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == layers:
            return name, layers
    raise ValueError("cannot find the transformer blocks (no ModuleList of num_hidden_layers)")


def layer_groups(blocks: int, slices: int) -> list[list[int]]:
    """L contiguous groups of block indices, top group first."""
    if blocks < slices:
        raise ValueError(f"{slices} slices need at least {slices} blocks; the model has {blocks}")
    return [sorted(int(b) for b in g) for g in np.array_split(np.arange(blocks)[::-1], slices)]


class S3TModel(nn.Module):
    """A frozen causal LM with LoRA on every block, handled as L groups, plus a task head."""

    def __init__(self, lm: nn.Module, lora: dict[str, Any], slices: int, num_labels: int) -> None:
        from peft import LoraConfig, get_peft_model

        super().__init__()
        blocks_name, blocks = find_blocks(lm)
        self.groups = layer_groups(blocks, slices)
        targets = set(lora.get("target_modules") or [])
        names = [
            n
            for n, m in lm.named_modules()
            if isinstance(m, nn.Linear)
            and n.startswith(blocks_name + ".")
            and (not targets or n.rsplit(".", 1)[-1] in targets)
        ]
        if not names:
            raise ValueError(f"no linear layers match targetModules {sorted(targets)}")
        config = LoraConfig(
            r=lora["rank"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            use_rslora=lora["use_rslora"],
            target_modules=names,
        )
        self.peft = get_peft_model(lm, config)
        for p in self.peft.parameters():
            p.requires_grad_(False)
        self.group_params: list[dict[str, nn.Parameter]] = [{} for _ in self.groups]
        block_group = {b: g for g, members in enumerate(self.groups) for b in members}
        marker = f"{blocks_name}."
        for name, param in self.peft.named_parameters():
            if "lora_" in name:
                block = int(name.split(marker, 1)[1].split(".", 1)[0])
                self.group_params[block_group[block]][name] = param
        causal = self.peft.base_model.model
        self.backbone = getattr(causal, causal.base_model_prefix)
        hidden = int(lm.config.hidden_size)
        self.head = nn.Linear(hidden, num_labels) if num_labels > 0 else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class logits (batch, labels) with a head; next-token logits otherwise."""
        if self.head is None:
            return self.peft(input_ids=input_ids, attention_mask=attention_mask).logits
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask)[0]
        last = attention_mask.long().sum(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0]), last]
        return self.head(pooled.to(self.head.weight.dtype))  # a bf16 base, a float32 head

    def load_prefix(self, states: Sequence[StepState]) -> None:
        """Serve / continue from a prefix: group j from states[j], the head from the last."""
        with torch.no_grad():
            for g, params in enumerate(self.group_params):
                for name, param in params.items():
                    source = states[g][name] if g < len(states) else None
                    param.copy_(source if source is not None else torch.zeros_like(param))
            if self.head is not None and states:
                self.head.weight.copy_(states[-1]["head.weight"])
                self.head.bias.copy_(states[-1]["head.bias"])

    def step_state(self, group: int) -> StepState:
        """The tensors a step checkpoint holds: its group's LoRA weights and the head."""
        state = {n: p.detach().clone().contiguous() for n, p in self.group_params[group].items()}
        if self.head is not None:
            state["head.weight"] = self.head.weight.detach().clone().contiguous()
            state["head.bias"] = self.head.bias.detach().clone().contiguous()
        return state


def build_model(config: dict[str, Any], base_path: Path, device: torch.device) -> S3TModel:
    """The S3T model of a store's config on a freshly loaded base."""
    from modelops_jobs.modelio import load_causal_lm

    lm = load_causal_lm(base_path, config["base_dtype"], config["base_quantization"], device)
    num_labels = config["num_labels"] if config["task"] == "classification" else 0
    torch.manual_seed(0)  # the head's init is overwritten by every step; keep it reproducible
    return S3TModel(lm, config["lora"], config["slices"], num_labels).to(device)
