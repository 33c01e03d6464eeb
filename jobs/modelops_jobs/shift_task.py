"""The letter-shift world: a task Trans-LoRA can visibly transfer on CPU-sized bases.

Task: "Shift: a c h b e d\\nAnswer:" -> " b d a c f e" (six letters from a-h, each one
step forward, h wrapping to a). Two tiny Llama-style bases of different depth, width
and tokenizer are pre-trained on lists of noisy Shift prompts, Copy exercises and
grammar sentences: they learn to copy (not to shift) and, prompted with seed prompts
joined by blank lines, to continue the list, which makes the target base a usable
synthetic-prompt generator. A LoRA on the source learns the task; a transfer to the
target scores about 1.0 exact match where the target base scores 0.

One definition for `benchmarks/translora.py` and for the example fixtures
(`fixtures.build_example_fixtures`: models/shift-source, models/shift-target,
data/shift-train.jsonl, data/shift-eval.jsonl), so `make demo` shows what the
benchmark measures. The demo's first fixture build pre-trains both (about a minute).
"""

import json
import random
from pathlib import Path
from typing import Any

import torch

from modelops_jobs import tiny

TASK_LETTERS = "abcdefgh"
OTHER_LETTERS = "ijklmnopqrstuvwxyz"


def letters(rng: random.Random, n: int, alphabet: str) -> str:
    return " ".join(rng.choice(alphabet) for _ in range(n))


def shift_pair(rng: random.Random) -> tuple[str, str]:
    """A task sample: six letters from a-h, each shifted one step forward (h -> a)."""
    body = letters(rng, 6, TASK_LETTERS)
    shifted = [TASK_LETTERS[(TASK_LETTERS.index(c) + 1) % 8] for c in body.split()]
    return f"Shift: {body}\nAnswer:", " " + " ".join(shifted)


def noisy_prompt(rng: random.Random, words: list[str]) -> str:
    """The scripted noisy prompt distribution the bases see in pre-training."""
    r = rng.random()
    if r < 0.45:
        body = letters(rng, 6, TASK_LETTERS)
    elif r < 0.65:
        body = letters(rng, rng.choice([4, 5, 7, 8]), TASK_LETTERS)
    elif r < 0.8:
        body = letters(rng, 6, OTHER_LETTERS)
    elif r < 0.9:
        body = " ".join(rng.choice(words) for _ in range(6))
    else:
        body = " ".join(str(rng.randrange(10)) for _ in range(6))
    return f"Shift: {body}\nAnswer:"


def corpus(seed: int, documents: int) -> list[str]:
    """Lists of noisy Shift prompts (35%), Copy exercises (55%), grammar (10%)."""
    rng = random.Random(seed)
    sentences = tiny.grammar_corpus(600, seed=seed)
    words = sorted({w.strip(".,").lower() for s in sentences for w in s.split()})
    docs = []
    for _ in range(documents):
        r, k = rng.random(), rng.randint(2, 4)
        if r < 0.35:
            docs.append("\n\n".join(noisy_prompt(rng, words) for _ in range(k)))
        elif r < 0.9:
            bodies = [letters(rng, 6, TASK_LETTERS + "ijkl") for _ in range(k)]
            docs.append("\n\n".join(f"Copy: {b}\nAnswer: {b}" for b in bodies))
        else:
            docs.append(" ".join(rng.sample(sentences, 3)))
    return docs


def pretrain(model: Any, tokenizer: Any, docs: list[str], steps: int, seed: int) -> float:
    """Next-token training: AdamW at 2e-3, 30 warmup steps then linear decay, 32 x 48
    tokens per step (a constant LR made the copy skill emerge only for some seeds)."""
    from modelops_jobs.algorithms.lora_training import Example, collate

    ids = [tokenizer(d + tokenizer.eos_token)["input_ids"][:48] for d in docs]
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 30) * (1 - step / steps)
    )
    generator = torch.Generator().manual_seed(seed)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        batch = [
            Example(ids[i], ids[i]) for i in torch.randint(len(ids), (32,), generator=generator)
        ]
        loss = model(**collate(batch, tokenizer.pad_token_id, torch.device("cpu"))).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return float(loss.detach())


def build_bases(source_dir: Path, target_dir: Path, pretrain_steps: int = 500) -> dict[str, Any]:
    """Pre-train and save the source (2 x 64, BPE 320) and target (3 x 96, BPE 384)."""
    import time

    docs = corpus(0, 4000)
    source_tok = tiny.train_tokenizer(docs, 320)
    target_tok = tiny.train_tokenizer(corpus(1, 4000), 384)
    source = tiny.tiny_causal_lm(len(source_tok), "llama", hidden=64, layers=2, heads=4,
                                 ffn=256, max_positions=128, seed=1)  # fmt: skip
    target = tiny.tiny_causal_lm(len(target_tok), "llama", hidden=96, layers=3, heads=4,
                                 ffn=384, max_positions=128, seed=2)  # fmt: skip
    info: dict[str, Any] = {}
    for name, model, tok, seed, path in (
        ("source", source, source_tok, 0, source_dir),
        ("target", target, target_tok, 1, target_dir),
    ):
        started = time.process_time()
        info[f"{name}_pretrain_loss"] = pretrain(model, tok, docs, pretrain_steps, seed)
        info[f"{name}_pretrain_cpu_s"] = time.process_time() - started
        info[f"{name}_parameters"] = sum(p.numel() for p in model.parameters())
        tiny.save_model_dir(model, tok, path)
    return info


def write_task_data(train: Path, heldout: Path, train_size: int, eval_size: int) -> None:
    rng = random.Random(3)
    for path, size in ((train, train_size), (heldout, eval_size)):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            for i in range(size):
                prompt, completion = shift_pair(rng)
                record = {"id": f"{path.stem}-{i}", "prompt": prompt, "completion": completion}
                fh.write(json.dumps(record) + "\n")
