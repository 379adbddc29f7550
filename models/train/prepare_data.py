"""Training data for the bundled tiny Orthrus model: the source code of the
Python standard library of the interpreter running this script (offline, on
every machine), and a byte-level BPE tokenizer trained on it.

    prepare_data.py OUT_DIR [--vocab 4096]

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
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    files = sources()
    train = [t for r, t in files if not heldout(r)]
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
