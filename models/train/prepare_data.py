"""Training data for the bundled tiny Orthrus model: the source code of the
Python standard library of the interpreter running this script (offline, on
every machine), optionally the Python source of the packages installed beside
it (`--extra-mb`), and a byte-level BPE tokenizer trained on it.

    prepare_data.py OUT_DIR [--vocab 4096] [--extra-mb 0]

The standard library alone is 2.6 M tokens: a base trained for minutes on it
memorises it, and then its greedy text from a training prompt is a recitation,
unlike its text from a held-out one. `--extra-mb N` adds up to N MB of
installed packages' source (files picked in crc32 order of their paths, so the
pick spreads over all packages and is the same on every run), all of it for
training; the held-out files stay the standard library's.

Writes to OUT_DIR:
  tokenizer.json, tokenizer_config.json   a Qwen2-style tokenizer: the same NFC
      normalizer, pre-tokenizer regex and byte-level decoder as Qwen3's (so
      llama.cpp's `qwen2` pre-tokenizer matches it), BPE merges trained here, and
      Qwen3's special tokens and chat template appended after the merges;
  train.bin, heldout.bin    uint16 token ids, files joined by <|endoftext|>;
      a file goes to heldout when crc32(its path) % 20 == 0 (5%);
  prompts.json    held-out prompts: 10 lines of code from a third of the way
      into each held-out file (code, as the model is trained on).

Deterministic for one Python installation: files are read in sorted order.
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
import zlib
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

QWEN_TOKENIZER = Path(__file__).resolve().parents[1] / "qwen3-tokenizer"
# Qwen2/Qwen3's pre-tokenizer split.
PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PLAIN_ADDED = ["<think>", "</think>"]
MAX_FILE_BYTES = 200_000  # a few generated tables are huge and teach nothing


def sources() -> list[tuple[str, str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(("site-packages/", "test/", "idlelib/idle_test/")) or "/tests/" in rel:
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if 0 < len(text) <= MAX_FILE_BYTES:
            out.append((rel, text))
    return out


def package_sources(budget_mb: float) -> list[tuple[str, str]]:
    """Python files of the installed packages (site-packages), in crc32 order
    of their relative paths, up to `budget_mb` MB; tests left out."""
    if budget_mb <= 0:
        return []
    root = Path(sysconfig.get_paths()["purelib"])
    files = []
    for p in root.rglob("*.py"):
        rel = p.relative_to(root).as_posix()
        parts = set(rel.split("/")[:-1])
        if parts & {"test", "tests", "testing", "_vendor", "vendored"} or rel.split("/")[-1].startswith("test_"):
            continue
        files.append((zlib.crc32(rel.encode()), rel, p))
    out, total = [], 0
    for _, rel, p in sorted(files):
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if not 0 < len(text) <= MAX_FILE_BYTES:
            continue
        if total + len(text) > budget_mb * 1e6:
            break
        out.append(("site-packages/" + rel, text))
        total += len(text)
    return out


def heldout(rel: str) -> bool:
    return zlib.crc32(rel.encode()) % 20 == 0


def train_tokenizer(texts: list[str], vocab: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = None
    n_added = len(SPECIAL) + len(PLAIN_ADDED)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab - n_added,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in PLAIN_ADDED])
    return tok


def tokenizer_config(tok: Tokenizer) -> dict:
    qwen = json.loads((QWEN_TOKENIZER / "tokenizer_config.json").read_text())
    decoder = {}
    for t in SPECIAL + PLAIN_ADDED:
        decoder[str(tok.token_to_id(t))] = {
            "content": t, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": t in SPECIAL,
        }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": qwen["chat_template"],
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 4096,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--extra-mb", type=float, default=0.0, help="MB of installed packages' Python source to add")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    files = sources()
    extra = package_sources(a.extra_mb)
    train = [t for r, t in files if not heldout(r)] + [t for _, t in extra]
    print(f"standard library: {len(files)} files; installed packages: {len(extra)} files, "
          f"{sum(len(t) for _, t in extra) / 1e6:.1f} MB", file=sys.stderr)
    tok = train_tokenizer(train, a.vocab)
    tok.save(str(a.out / "tokenizer.json"))
    (a.out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(tok), indent=2, ensure_ascii=False) + "\n")
    eot = tok.token_to_id("<|endoftext|>")
    for name, part in (("train", train), ("heldout", [t for r, t in files if heldout(r)])):
        ids = []
        for enc in tok.encode_batch(part, add_special_tokens=False):
            ids.extend(enc.ids)
            ids.append(eot)
        np.asarray(ids, dtype=np.uint16).tofile(a.out / f"{name}.bin")
        print(f"{name}: {len(part)} files, {len(ids)} tokens", file=sys.stderr)
    prompts = []
    for r, t in files:
        if heldout(r):
            lines = t.splitlines()
            k = len(lines) // 3
            piece = "\n".join(lines[k:k + 10])
            if len(piece.strip()) > 40:
                prompts.append(piece + "\n")
    (a.out / "prompts.json").write_text(json.dumps(prompts[:64], indent=1) + "\n")
    print(f"vocab {tok.get_vocab_size()}, {len(prompts[:64])} held-out prompts", file=sys.stderr)


if __name__ == "__main__":
    main()
