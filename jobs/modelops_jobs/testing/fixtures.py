"""The tiny models and data that the examples, `modelops run` and `make demo` use.

`build_example_fixtures(root)` creates, once, under `root` (default /tmp/modelops):
models/tiny-opt (an OPT-style LM trained on the standard library's docstrings until
pruning it visibly hurts), models/tiny-llama (a Llama-style LM of another depth and
width), models/shift-source and models/shift-target (the letter-shift world of
`shift_task`, on which a Trans-LoRA transfer visibly works), and JSON Lines data:
docstring text, a shifted text domain, a string-reversal task, the letter-shift task,
and a labelled classification set with sample IDs for S3T. Nothing is downloaded.
"""

import json
import random
import shutil
from pathlib import Path

import torch

from modelops_jobs.data import token_stream, write_jsonl
from modelops_jobs.testing import tiny

LETTERS = "abcdefgh"
SHIFT_PRETRAIN_STEPS = 400
TINY_OPT_STEPS = 1000
"""Trained until pruning visibly hurts: at 150 steps the dense model was so undertrained
that retraining the pruned one beat it (gapRecovered 8.375); at 1000, Wanda 50% raises
perplexity 20.1 -> 22.8 and PERP retraining recovers about 84% of the gap (20.6)."""
FIXTURE_MARKER = "modelops-fixture.json"
"""Records how a model fixture was trained, so a fixture cached by older code is rebuilt."""


def reversal_task(n: int, seed: int) -> list[dict[str, str]]:
    """prompt 'reverse: abcd =' -> completion ' dcba' (a checkable task)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        word = "".join(rng.choice(LETTERS) for _ in range(4))
        out.append(
            {
                "id": f"rev-{seed}-{i}",
                "prompt": f"reverse: {word} =",
                "completion": f" {word[::-1]}",
            }
        )
    return out


def labelled_sequences(n: int, seed: int) -> list[dict[str, object]]:
    """text of random letters; label = which of two letters is the majority."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.randint(5, 11)
        label = rng.randint(0, 1)
        major, minor = ("a", "b") if label == 0 else ("b", "a")
        letters = (
            [major] * k
            + [minor] * (16 - k if k < 8 else 0)
            + [rng.choice("cdefg") for _ in range(16 - k)]
        )
        rng.shuffle(letters)
        text = " ".join(letters[:16])
        label = 0 if text.count("a") > text.count("b") else 1
        out.append({"id": f"s{seed}-{i:05d}", "text": text, "label": label})
    return out


def pretrain(
    model: torch.nn.Module,
    stream: torch.Tensor,
    steps: int,
    seq: int = 64,
    batch: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
) -> float:
    """A short, seeded next-token pre-training; returns the last loss."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    loss_value = float("nan")
    for _ in range(steps):
        starts = torch.randint(0, stream.numel() - seq - 1, (batch,), generator=gen)
        x = torch.stack([stream[s : s + seq] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_value = float(loss.detach())
    model.eval()
    return loss_value


def build_example_fixtures(root: Path, force: bool = False, steps: int = 150) -> list[Path]:
    """Create every fixture the examples refer to; returns the paths made or found."""
    root = Path(root)
    made: list[Path] = []
    data = root / "data"
    docs = tiny.stdlib_docstrings()
    split = int(len(docs) * 0.9)
    text_files = {
        "docstrings-train.jsonl": [{"id": f"d{i}", "text": t} for i, t in enumerate(docs[:split])],
        "docstrings-eval.jsonl": [{"id": f"e{i}", "text": t} for i, t in enumerate(docs[split:])],
        "grammar-new.jsonl": [
            {"id": f"g{i}", "text": t}
            for i, t in enumerate(tiny.grammar_corpus(3000, seed=1, variant=1))
        ],
        "grammar-new-eval.jsonl": [
            {"id": f"h{i}", "text": t}
            for i, t in enumerate(tiny.grammar_corpus(300, seed=2, variant=1))
        ],
        "task-train.jsonl": reversal_task(250, seed=0),
        "task-eval.jsonl": reversal_task(100, seed=1),
        "labelled-train.jsonl": labelled_sequences(240, seed=0),
        "labelled-eval.jsonl": labelled_sequences(120, seed=1),
    }
    for name, records in text_files.items():
        path = data / name
        if force or not path.exists():
            write_jsonl(path, records)  # type: ignore[arg-type]
        made.append(path)
    (data / "forget-ids.txt").write_text("s0-00003\ns0-00017\n")
    made.append(data / "forget-ids.txt")

    corpus = (
        docs
        + [r["prompt"] + r["completion"] for r in reversal_task(2000, seed=3)]
        + tiny.grammar_corpus(2000, seed=0)
    )
    for name, arch, hidden, layers, ffn, seed, model_steps in (
        ("tiny-opt", "opt", 64, 2, 256, 0, TINY_OPT_STEPS),
        ("tiny-llama", "llama", 96, 3, 256, 1, steps),
    ):
        target = root / "models" / name
        made.append(target)
        marker = target / FIXTURE_MARKER
        wanted = json.dumps({"pretrainSteps": model_steps})
        current = name != "tiny-opt" or (marker.exists() and marker.read_text() == wanted)
        if (target / "config.json").exists() and not force and current:
            continue
        torch.manual_seed(seed)
        tok = tiny.train_tokenizer(corpus, vocab_size=512)
        model = tiny.tiny_causal_lm(
            len(tok),
            arch=arch,
            hidden=hidden,
            layers=layers,
            heads=4,
            ffn=ffn,
            max_positions=128,
            seed=seed,
        )
        stream = token_stream(tok, corpus)
        pretrain(model, stream, steps=model_steps, seed=seed)
        staged = target.with_name(f".{name}.partial")
        shutil.rmtree(staged, ignore_errors=True)
        tiny.save_model_dir(model, tok, staged)
        (staged / FIXTURE_MARKER).write_text(wanted)
        shutil.rmtree(target, ignore_errors=True)  # an older fixture, replaced at once
        staged.rename(target)
    made += _shift_fixtures(root, force)
    return made


def _shift_fixtures(root: Path, force: bool) -> list[Path]:
    from modelops_jobs.testing import shift_task

    source, target = root / "models" / "shift-source", root / "models" / "shift-target"
    train, heldout = root / "data" / "shift-train.jsonl", root / "data" / "shift-eval.jsonl"
    if force or not (train.exists() and heldout.exists()):
        shift_task.write_task_data(train, heldout, train_size=250, eval_size=100)
    if force or not ((source / "config.json").exists() and (target / "config.json").exists()):
        shift_task.build_bases(source, target, pretrain_steps=SHIFT_PRETRAIN_STEPS)
    return [source, target, train, heldout]
