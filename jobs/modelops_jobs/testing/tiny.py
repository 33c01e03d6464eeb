"""Tiny models, tokenizers and corpora made in code: no download, no weights in git.

The tests, the benchmarks and `make demo` all build their fixtures here: a byte-level
BPE tokenizer trained on text that ships with Python, tiny OPT- and Llama-style causal
LMs built from a config, and corpora with controlled shifts (the standard library's
docstrings, a seeded probabilistic grammar, a character-substitution "language").
"""

import importlib
import inspect
import random
from pathlib import Path
from typing import Any

STDLIB_MODULES = (
    "collections",
    "itertools",
    "functools",
    "os",
    "os.path",
    "pathlib",
    "json",
    "re",
    "string",
    "textwrap",
    "datetime",
    "calendar",
    "random",
    "statistics",
    "math",
    "decimal",
    "fractions",
    "heapq",
    "bisect",
    "array",
    "copy",
    "enum",
    "typing",
    "argparse",
    "logging",
    "csv",
    "shutil",
    "glob",
    "fnmatch",
    "tempfile",
    "io",
    "zipfile",
    "tarfile",
    "gzip",
    "hashlib",
    "hmac",
    "secrets",
    "base64",
    "binascii",
    "struct",
    "codecs",
    "unicodedata",
    "difflib",
    "pprint",
    "reprlib",
    "contextlib",
    "abc",
    "dataclasses",
    "threading",
    "queue",
    "sched",
    "subprocess",
    "socket",
    "selectors",
    "signal",
    "email",
    "html",
    "xml.etree.ElementTree",
    "urllib.parse",
    "http.client",
    "uuid",
    "ipaddress",
    "sqlite3",
    "pickle",
    "shelve",
    "operator",
    "inspect",
    "ast",
    "dis",
    "tokenize",
    "traceback",
    "warnings",
    "weakref",
    "gc",
    "timeit",
    "unittest",
    "doctest",
    "zlib",
    "locale",
    "gettext",
    "platform",
)

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]


def stdlib_docstrings(min_chars: int = 40) -> list[str]:
    """Docstrings of the standard library, in a fixed order (several MB of English)."""
    out: list[str] = []
    seen: set[str] = set()
    for name in STDLIB_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # pragma: no cover - all listed modules ship with CPython
            continue
        for _, obj in sorted(vars(module).items(), key=lambda kv: kv[0]):
            if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj)):
                continue
            doc = inspect.getdoc(obj)
            if doc and len(doc) >= min_chars and doc not in seen:
                seen.add(doc)
                out.append(doc)
            if inspect.isclass(obj):
                for _, member in sorted(vars(obj).items(), key=lambda kv: kv[0]):
                    mdoc = inspect.getdoc(member) if callable(member) else None
                    if mdoc and len(mdoc) >= min_chars and mdoc not in seen:
                        seen.add(mdoc)
                        out.append(mdoc)
    return out


_GRAMMAR: dict[str, list[list[str]]] = {
    "S": [["NP", "VP", "."], ["NP", "VP", "PP", "."], ["ADV", ",", "NP", "VP", "."]],
    "NP": [["DET", "N"], ["DET", "ADJ", "N"], ["DET", "N", "PP"]],
    "VP": [["V", "NP"], ["V"], ["V", "ADV"]],
    "PP": [["P", "NP"]],
    "DET": [["the"], ["a"], ["every"], ["some"]],
    "N": [["cat"], ["dog"], ["river"], ["city"], ["model"], ["garden"], ["teacher"], ["song"]],
    "ADJ": [["small"], ["green"], ["quiet"], ["old"], ["bright"]],
    "V": [["sees"], ["likes"], ["follows"], ["builds"], ["sings"], ["finds"]],
    "P": [["near"], ["under"], ["with"], ["behind"]],
    "ADV": [["slowly"], ["often"], ["today"], ["again"]],
}


def grammar_corpus(n: int, seed: int = 0, variant: int = 0) -> list[str]:
    """n sentences from a seeded probabilistic grammar; `variant` shifts its word
    probabilities and adds its own words (a weak distribution shift)."""
    rng = random.Random(seed * 1000 + variant)
    grammar = {k: [list(r) for r in v] for k, v in _GRAMMAR.items()}
    if variant:
        grammar["N"] += [["robot"], ["planet"], ["engine"]]
        grammar["V"] += [["computes"], ["orbits"]]
        grammar["ADJ"] += [["fast"], ["metal"]]

    def expand(symbol: str) -> list[str]:
        if symbol not in grammar:
            return [symbol]
        rules = grammar[symbol]
        weights = [1.0 + (variant * i if variant else 0.0) for i in range(len(rules))]
        rule = rng.choices(rules, weights=weights)[0]
        return [w for s in rule for w in expand(s)]

    out = []
    for _ in range(n):
        words = expand("S")
        text = " ".join(words).replace(" .", ".").replace(" ,", ",")
        out.append(text[0].upper() + text[1:])
    return out


def substitute(texts: list[str], seed: int = 0) -> list[str]:
    """A fixed letter-substitution cipher of the texts: a strong distribution shift."""
    rng = random.Random(seed)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    shuffled = letters[:]
    rng.shuffle(shuffled)
    table = str.maketrans("".join(letters), "".join(shuffled))
    return [t.lower().translate(table) for t in texts]


def train_tokenizer(texts: list[str], vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer trained on the texts, as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )


def tiny_causal_lm(
    vocab_size: int,
    arch: str = "opt",
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    ffn: int = 256,
    max_positions: int = 128,
    seed: int = 0,
) -> Any:
    """A randomly initialised tiny causal LM (OPT-style: biases + LayerNorm; or Llama-style)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    if arch == "opt":
        config = OPTConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            ffn_dim=ffn,
            max_position_embeddings=max_positions,
            word_embed_proj_dim=hidden,
            dropout=0.0,
            attention_dropout=0.0,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
        return OPTForCausalLM(config)
    if arch == "llama":
        llama = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            intermediate_size=ffn,
            max_position_embeddings=max_positions,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=False,
        )
        return LlamaForCausalLM(llama)
    raise ValueError(f"unknown tiny arch {arch!r}")


def save_model_dir(model: Any, tokenizer: Any, directory: Path) -> Path:
    """save_pretrained of model and tokenizer into one directory."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
