"""Datasets: JSON Lines in, token windows and prompt/completion pairs out.

Every algorithm reads data the same way, so `textField`, `idField` and friends mean
the same thing for all four kinds. Reading is strict: a missing field or an unreadable
line is a PermanentError naming the file and line.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from modelops_jobs.errors import PermanentError


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records from a .jsonl file, or from every .jsonl file in a directory (sorted)."""
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise PermanentError(f"no .jsonl files in {path}", "DataNotFound")
    for file in files:
        with open(file, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise PermanentError(
                        f"{file}:{lineno}: invalid JSON: {exc}", "InvalidData"
                    ) from exc
                if not isinstance(record, dict):
                    raise PermanentError(f"{file}:{lineno}: expected a JSON object", "InvalidData")
                yield record


def read_records(path: Path, max_samples: int | None = None) -> list[dict[str, Any]]:
    out = []
    for record in iter_jsonl(path):
        out.append(record)
        if max_samples is not None and len(out) >= max_samples:
            break
    return out


def field_values(records: list[dict[str, Any]], field: str, source: str) -> list[Any]:
    """One field of every record; PermanentError naming the first record that lacks it."""
    values = []
    for i, record in enumerate(records):
        if field not in record:
            raise PermanentError(f"{source}: record {i} has no field {field!r}", "InvalidData")
        values.append(record[field])
    return values


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")


def token_stream(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """All texts tokenized and joined with EOS into one 1-D tensor of token IDs."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def lm_windows(stream: torch.Tensor, length: int, max_windows: int | None = None) -> torch.Tensor:
    """Non-overlapping windows of `length` tokens: shape (n, length)."""
    n = stream.numel() // length
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise PermanentError(
            f"data too short: {stream.numel()} tokens, need at least one window of {length}",
            "DataTooShort",
        )
    return stream[: n * length].view(n, length)
