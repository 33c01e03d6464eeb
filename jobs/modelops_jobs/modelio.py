"""Loading and saving Hugging Face causal LMs and tokenizers from storage URIs.

Every algorithm loads models here, so dtype, 4/8-bit quantization, the "is this a
causal LM" check and the error reasons are the same everywhere.
"""

from pathlib import Path
from typing import Any

import torch

from modelops_jobs.errors import PermanentError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_causal_lm(
    path: Path,
    dtype: str = "auto",
    quantization: str = "none",
    device: torch.device | None = None,
) -> Any:
    """A transformers causal LM from a save_pretrained directory.

    PermanentError(NotACausalLM) when the directory holds another kind of model,
    PermanentError(ModelNotFound) when it holds no model at all.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if not (path / "config.json").exists():
        raise PermanentError(f"no model at {path} (config.json missing)", "ModelNotFound")
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise PermanentError(f"cannot read model config at {path}: {exc}", "ModelNotFound") from exc
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise PermanentError(
            f"model at {path} is a {config.model_type!r}, not a causal language model",
            "NotACausalLM",
        )
    kwargs: dict[str, Any] = {}
    if dtype != "auto":
        kwargs["dtype"] = DTYPES[dtype]
    if quantization != "none":
        if not torch.cuda.is_available():
            raise PermanentError(f"quantization {quantization} needs a CUDA GPU", "NeedsGPU")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=quantization == "4bit",
            load_in_8bit=quantization == "8bit",
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        # the local rank's GPU (cuda:LOCAL_RANK under torchrun), GPU 0 on one process
        index = device.index if device is not None and device.type == "cuda" else None
        kwargs["device_map"] = {"": index if index is not None else 0}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as exc:
        raise PermanentError(f"cannot load model at {path}: {exc}", "ModelLoadFailed") from exc
    if device is not None and quantization == "none":
        model = model.to(device)
    return model


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise PermanentError(
            f"cannot load tokenizer at {path}: {exc}", "TokenizerNotFound"
        ) from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def peak_memory_bytes(device: torch.device) -> int:
    """Peak GPU memory on CUDA, else the process's peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
