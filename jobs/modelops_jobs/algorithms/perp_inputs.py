"""PERP's inputs: the spec checks, and the token windows for retraining, calibration and eval.

Why a module of its own: what data a PERP run reads (and what it refuses before loading
a model) depends only on the spec, not on how the model is pruned or trained.
"""

from typing import Any

import torch

from modelops_api.prune_retrain import PruneRetrainSpec
from modelops_jobs import data
from modelops_jobs.algorithms import pruning
from modelops_jobs.context import RunContext
from modelops_jobs.errors import PermanentError


def validate(spec: PruneRetrainSpec) -> None:
    retrain = spec.retrain
    if retrain.lora.use_dora:
        raise PermanentError(
            "retrain.lora.useDora is not supported by the PERP adapter variants", "Unsupported"
        )
    if retrain.full_finetune and spec.model.quantization != "none":
        raise PermanentError(
            "retrain.fullFinetune needs an unquantized base (model.quantization: none)",
            "InvalidSpec",
        )
    if retrain.data is None and (retrain.mode == "causal_lm" or retrain.full_finetune):
        raise PermanentError("retrain.data is required for causal_lm retraining", "DataMissing")
    if retrain.data is None and spec.pruning.calibration_data is None:
        raise PermanentError("reconstruction needs retrain.data or calibrationData", "DataMissing")


def reconstructs(spec: PruneRetrainSpec) -> bool:
    """Block-wise reconstruction retraining (full fine-tuning always uses the causal-LM loss)."""
    return spec.retrain.mode == "reconstruction" and not spec.retrain.full_finetune


def _texts(ref: Any, ctx: RunContext) -> list[str]:
    path = ctx.resolve(ref.uri)
    records = data.read_records(path, ref.max_samples)
    return [str(t) for t in data.field_values(records, ref.text_field, ref.uri)]


def load_windows(
    spec: PruneRetrainSpec, ctx: RunContext, tokenizer: Any, seq_len: int
) -> dict[str, torch.Tensor]:
    """Token windows: retrain (causal_lm), calibration (Wanda/SparseGPT/reconstruction), eval."""
    out: dict[str, torch.Tensor] = {}
    retrain = spec.retrain
    if retrain.data is not None and not reconstructs(spec):
        out["retrain"] = data.lm_windows(
            data.token_stream(tokenizer, _texts(retrain.data, ctx)), seq_len
        )
    if spec.pruning.criterion != "magnitude" or reconstructs(spec):
        ref = spec.pruning.calibration_data or retrain.data
        if ref is None:
            raise PermanentError(
                "pruning.calibrationData (or retrain.data) is required by this criterion",
                "InvalidSpec",
            )
        stream = data.token_stream(tokenizer, _texts(ref, ctx))
        if stream.numel() < seq_len:
            raise PermanentError(
                f"calibration data too short: {stream.numel()} tokens at {ref.uri}, "
                f"need at least one window of {seq_len}",
                "DataTooShort",
            )
        generator = torch.Generator().manual_seed(spec.seed)
        starts = torch.randint(
            0,
            stream.numel() - seq_len + 1,
            (spec.pruning.calibration_samples,),
            generator=generator,
        )
        out["calibration"] = torch.stack([stream[s : s + seq_len] for s in starts.tolist()])
    if spec.evaluation.data is not None:
        stream = data.token_stream(tokenizer, _texts(spec.evaluation.data, ctx))
        out["eval"] = data.lm_windows(stream, seq_len, spec.evaluation.max_windows)
    return out


def lora_targets(spec: PruneRetrainSpec, layers: list[pruning.PrunableLayer]) -> list[str] | None:
    wanted = list(spec.retrain.lora.target_modules)
    if not wanted:
        return None
    names = [lay.name for lay in layers if pruning.matches_targets(lay.name, wanted)]
    if not names:
        raise PermanentError(
            f"retrain.lora.targetModules {wanted} match no pruned linear", "InvalidSpec"
        )
    return names
